"""Per-problem robust-kernel scales: ``loss_scale`` as a ``(...)`` tensor (EPro-PnP's adaptive
Huber sets the scale per problem)."""

import math

import numpy as np
import pytest
import torch

import pyfacepnp
from pnp_problems import make_problem

F64 = torch.float64


def problems(B, n=20, seed=0, noise=3.0):
    rng = np.random.default_rng(seed)
    probs = [make_problem("random", rng, n=n, noise=noise) for _ in range(B)]
    X, x, K = (torch.tensor(np.stack([getattr(p, f) for p in probs])) for f in ("X", "x", "K"))
    return X, x, K


def solve_and_grads(X, x, K, **kw):
    Xg, xg = X.clone().requires_grad_(), x.clone().requires_grad_()
    r = pyfacepnp.solve_pnp(Xg, xg, K, **kw)
    (r.R.sum() + r.t.sum() + r.cost.sum()).backward()
    return r, Xg.grad, xg.grad


@pytest.mark.parametrize("loss", ["huber", "cauchy", "geman_mcclure"])
def test_per_problem_scales_equal_solving_each_with_its_scale(loss):
    X, x, K = problems(5, seed=1)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0], dtype=F64)
    r, gX, gx = solve_and_grads(X, x, K, loss=loss, loss_scale=scales)
    assert r.converged.all()
    for b in range(5):
        rb, gXb, gxb = solve_and_grads(X[b:b + 1], x[b:b + 1], K[b:b + 1], loss=loss,
                                       loss_scale=float(scales[b]))
        for f in ("R", "t", "cost", "status", "covariance"):
            assert torch.equal(getattr(r, f)[b:b + 1], getattr(rb, f)), (f, b)
        assert torch.equal(gX[b:b + 1], gXb) and torch.equal(gx[b:b + 1], gxb)
    # The scale matters: the answers differ between scales.
    assert not torch.allclose(r.cost[0], r.cost[4])


def test_scales_broadcast_over_the_batch_and_float32():
    X, x, K = problems(6, seed=2)
    X, x, K = (a.reshape(2, 3, *a.shape[1:]) for a in (X, x, K))
    per_row = torch.tensor([[1.0], [3.0]])  # float32 scales, (2, 1) against the batch (2, 3)
    r = pyfacepnp.solve_pnp(X, x, K, loss="huber", loss_scale=per_row)
    r1 = pyfacepnp.solve_pnp(X[1], x[1], K[1], loss="huber", loss_scale=3.0)
    assert torch.equal(r.t[1], r1.t)
    r32 = pyfacepnp.solve_pnp(X.float(), x.float(), K.float(), loss="huber", loss_scale=per_row)
    assert torch.allclose(r32.t.double(), r.t, atol=1e-4)


def test_a_bad_scale_makes_only_its_problem_invalid():
    X, x, K = problems(5, seed=3)
    scales = torch.tensor([1.0, 0.0, math.nan, 1e200, 2.0], dtype=F64)
    r, gX, _ = solve_and_grads(X, x, K, loss="huber", loss_scale=scales)
    assert r.status.tolist() == [0, 3, 3, 3, 0]
    assert (gX[1:4] == 0).all() and torch.isfinite(gX).all()
    alone = pyfacepnp.solve_pnp(X[4:], x[4:], K[4:], loss="huber", loss_scale=2.0)
    assert torch.equal(r.t[4:], alone.t)


def test_ransac_takes_per_problem_scales():
    X, x, K = problems(4, n=30, seed=4, noise=1.0)
    x[:, :6] = torch.rand(4, 6, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 640
    scales = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    r = pyfacepnp.solve_pnp_ransac(X, x, K, threshold=5.0, loss="cauchy", loss_scale=scales)
    assert r.converged.all()
    for b in range(4):  # the finish is solve_pnp on the inliers with the problem's scale
        ref = pyfacepnp.solve_pnp(X[b], x[b], K[b], r.inliers[b].double(), loss="cauchy",
                                  loss_scale=float(scales[b]), init=(r.R[b], r.t[b]))
        assert torch.allclose(ref.t, r.t[b], atol=1e-9)


@pytest.mark.parametrize("value, err, match", [
    (torch.ones(4), ValueError, r"loss_scale of shape \(4,\) does not broadcast to the batch shape \(3,\)"),
    (torch.ones(3, dtype=torch.complex64), TypeError, r"loss_scale must be a real tensor, got torch.complex64"),
    (torch.ones(3, dtype=torch.bool), TypeError, r"loss_scale must be a real tensor, got torch.bool"),
])
def test_scale_tensor_errors(value, err, match):
    X, x, K = problems(3, seed=5)
    with pytest.raises(err, match=match):
        pyfacepnp.solve_pnp(X, x, K, loss="huber", loss_scale=value)


def test_compiled_op_checks_the_scales():
    X, x, K = problems(2, seed=6)
    w = torch.ones(2, 20, 2, dtype=F64)
    with pytest.raises(RuntimeError, match=r"loss_scales must be a float64 tensor of shape \(2\)"):
        torch.ops.pyfacepnp.solve_pnp(X, x, K, w, None, None, "huber", 1.0, 100, 1e-10,
                                      torch.ones(3, dtype=F64))
    args = (X, x, K, w, None, None, "huber", 1.0, 100, 1e-10, torch.tensor([1.0, 2.0], dtype=F64))
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp.default, args)
