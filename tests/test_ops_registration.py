"""Registration of the ops: opcheck, torch.compile(fullgraph=True), batch shapes, B = 0."""

import numpy as np
import pytest
import torch

import pyfacepnp
from pnp_problems import make_problem

F64 = torch.float64


def inputs(b=3, n=12, dtype=F64, seed=0):
    rng = np.random.default_rng(seed)
    probs = [make_problem("random", rng, n=n) for _ in range(b)]
    X = torch.tensor(np.stack([p.X for p in probs]), dtype=dtype)
    x = torch.tensor(np.stack([p.x for p in probs]), dtype=dtype)
    K = torch.tensor(np.stack([p.K for p in probs]), dtype=dtype)
    w = torch.rand(b, n, 2, dtype=dtype, generator=torch.Generator().manual_seed(seed)) + 0.5
    return X, x, K, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_solve_pnp(dtype):
    X, x, K, w = inputs(dtype=dtype)
    args = (X.requires_grad_(), x.requires_grad_(), K, w.requires_grad_(), None, None, "l2", 1.0, 100, 1e-10)
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp.default, args)
    R0 = torch.eye(3, dtype=dtype).expand(3, 3, 3).contiguous()
    t0 = torch.tensor([0, 0, 6.0], dtype=dtype).expand(3, 3).contiguous()
    args = (X, x, K, w, R0, t0, "huber", 2.0, 50, 1e-10)
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_distortion_and_minima(dtype):
    """The lens arguments of solve_pnp and its backward, and solve_pnp_minima (whose autograd
    is solve_pnp_backward over its solutions)."""
    X, x, K, w = inputs(dtype=dtype)
    D = torch.tensor([[-0.2, 0.05, 1e-3, -1e-3, 0.01]], dtype=dtype).expand(3, 5).contiguous()
    args = (X.requires_grad_(), x, K, w, None, None, "l2", 1.0, 100, 1e-10, None,
            D.clone().requires_grad_(), 0)
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp.default, args)
    R, t, cost, _it, status, _cov, state = torch.ops.pyfacepnp.solve_pnp(*args)
    bargs = (torch.randn_like(R), torch.randn_like(t), torch.randn_like(cost), X.detach(), x, K, w,
             state, status, "l2", 1.0, None, D, 0)
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp_backward.default, bargs)
    margs = (X, x.clone().requires_grad_(), K, w, "l2", 1.0, 3, 100, 1e-10, None,
             D.clone().requires_grad_(), 0)
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp_minima.default, margs)


def test_opcheck_backward_and_warp():
    X, x, K, w = inputs()
    R, t, cost, _it, status, _cov, state = torch.ops.pyfacepnp.solve_pnp(
        X, x, K, w, None, None, "l2", 1.0, 100, 1e-10)
    args = (torch.randn_like(R), torch.randn_like(t), torch.randn_like(cost), X, x, K, w, state,
            status, "l2", 1.0)
    torch.library.opcheck(torch.ops.pyfacepnp.solve_pnp_backward.default, args)
    pts = torch.randn(4, 7, 2, dtype=F64, requires_grad=True)
    A = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    torch.library.opcheck(torch.ops.pyfacepnp.warp_points.default, (pts, A))
    torch.library.opcheck(torch.ops.pyfacepnp.warp_points_backward.default,
                          (torch.randn(4, 7, 2, dtype=F64), pts.detach(), A.detach()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_pnp_hessian(dtype):
    """pnp_hessian (float64 H whatever the points' dtype), with and without a lens, and its
    backward."""
    X, x, K, w = inputs(dtype=dtype)
    R, t, *_ = torch.ops.pyfacepnp.solve_pnp(X, x, K, w, None, None, "l2", 1.0, 100, 1e-10)
    D = torch.tensor([[-0.2, 0.05, 1e-3, -1e-3, 0.01]], dtype=dtype).expand(3, 5).contiguous()
    for lens in (None, D):
        args = (R.clone().requires_grad_(), t.clone().requires_grad_(), X.requires_grad_(),
                x.clone().requires_grad_(), K, w.clone().requires_grad_(), "huber", 2.0, None,
                None if lens is None else lens.clone().requires_grad_(), 0)
        torch.library.opcheck(torch.ops.pyfacepnp.pnp_hessian.default, args)
        H, valid = torch.ops.pyfacepnp.pnp_hessian(*args)
        bargs = (torch.randn_like(H), R, t, X.detach(), x, K, w, valid, "huber", 2.0, None, lens, 0)
        torch.library.opcheck(torch.ops.pyfacepnp.pnp_hessian_backward.default, bargs)


def test_double_backward_is_a_clear_error():
    X, x, K, w = inputs()
    xg = x.clone().requires_grad_()
    res = pyfacepnp.solve_pnp(X, xg, K, w)
    (g,) = torch.autograd.grad(res.t.sum(), xg, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_torch_compile_fullgraph_forward_and_backward():
    X, x, K, w = inputs()
    A = torch.tensor([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]], dtype=F64)

    def f(X, x_crop, K, w, A):
        x_img = pyfacepnp.warp_points(x_crop, pyfacepnp.invert_affine(A))
        res = pyfacepnp.solve_pnp(X, x_img, K, w)
        return (res.R.sum() + res.t.square().sum() + res.cost.sum()), res.status

    x_crop = pyfacepnp.warp_points(x, A)
    eager_in = [t.clone().requires_grad_() for t in (X, x_crop, w)]
    comp_in = [t.clone().requires_grad_() for t in (X, x_crop, w)]
    le, se = f(eager_in[0], eager_in[1], K, eager_in[2], A)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    lc, sc = compiled(comp_in[0], comp_in[1], K, comp_in[2], A)
    le.backward()
    lc.backward()
    assert torch.equal(se, sc) and torch.allclose(le, lc, rtol=1e-12)
    for a, b in zip(eager_in, comp_in):
        assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_torch_compile_inductor():
    X, x, K, w = inputs(b=2)
    compiled = torch.compile(lambda X, x, K: pyfacepnp.solve_pnp(X, x, K).t * 2.0, fullgraph=True)
    assert torch.allclose(compiled(X, x, K), pyfacepnp.solve_pnp(X, x, K).t * 2.0)


def test_leading_batch_dims_broadcast():
    X, x, K, w = inputs(b=6)
    flat = pyfacepnp.solve_pnp(X, x, K, w)
    res = pyfacepnp.solve_pnp(X.reshape(2, 3, 12, 3), x.reshape(2, 3, 12, 2), K.reshape(2, 3, 3, 3), w.reshape(2, 3, 12, 2))
    assert res.R.shape == (2, 3, 3, 3) and res.t.shape == (2, 3, 3) and res.cost.shape == (2, 3)
    assert res.status.shape == (2, 3) and res.iterations.shape == (2, 3) and res.covariance.shape == (2, 3, 6, 6)
    assert torch.equal(res.R.reshape(6, 3, 3), flat.R)
    # One set of 3D points and one K shared by a batch of observations.
    shared = pyfacepnp.solve_pnp(X[0], x[0].expand(4, 12, 2), K[0])
    assert shared.R.shape == (4, 3, 3)
    assert torch.equal(shared.R[2], pyfacepnp.solve_pnp(X[0], x[0], K[0]).R)
    single = pyfacepnp.solve_pnp(X[0], x[0], K[0])
    assert single.R.shape == (3, 3) and single.status.shape == ()


def test_empty_batch_forward_and_backward():
    X = torch.zeros(0, 8, 3, dtype=F64, requires_grad=True)
    x = torch.zeros(0, 8, 2, dtype=F64, requires_grad=True)
    K = torch.eye(3, dtype=F64)
    res = pyfacepnp.solve_pnp(X, x, K)
    assert res.R.shape == (0, 3, 3) and res.covariance.shape == (0, 6, 6)
    (res.R.sum() + res.t.sum()).backward()
    assert X.grad.shape == X.shape and x.grad.shape == x.shape


def test_result_fields_and_types():
    X, x, K, w = inputs()
    res = pyfacepnp.solve_pnp(X, x, K, w)
    assert isinstance(res, pyfacepnp.PnPResult) and res._fields == ("R", "t", "cost", "iterations", "status", "covariance")
    assert res.iterations.dtype == torch.int32 and res.status.dtype == torch.int32
    assert res.converged.dtype == torch.bool and bool(res.converged.all())
    assert not res.covariance.requires_grad
    assert torch.linalg.eigvalsh(res.covariance).min() > 0
    # R is a rotation.
    eye = torch.eye(3, dtype=F64).expand(3, 3, 3)
    assert torch.allclose(res.R @ res.R.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.det(res.R), torch.ones(3, dtype=F64))


def test_only_requested_gradients_and_no_grad_mode():
    X, x, K, w = inputs()
    xg = x.clone().requires_grad_()
    res = pyfacepnp.solve_pnp(X, xg, K, w)
    res.t.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    with torch.no_grad():
        r2 = pyfacepnp.solve_pnp(X, xg, K, w)
    assert not r2.R.requires_grad


def test_build_info():
    info = pyfacepnp.build_info()
    assert set(info) >= {"with_cuda", "built_with_torch", "openmp"}
    assert info["built_with_torch"].split("+")[0] == torch.__version__.split("+")[0]
