"""pose_hessian (the compiled pnp_hessian op): the exact Hessian of the objective at a given
pose, and its backward, the third derivatives of the objective, computed in the kernels.

Proven two ways: against automatic differentiation of the torch objective
(pyfacepnp.reference.hessian) on many random problems, values and gradients, and by float64
gradcheck against finite differences of the op itself, for every differentiable input."""

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp
from pnp_problems import make_problem
from pyfacepnp.geometry.rotation import so3_exp
from pyfacepnp.ops.hessian import pose_hessian
from pyfacepnp.reference.hessian import local_hessian_reference
from pyfacepnp.reference.objective import project

F64 = torch.float64
LAST = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
LOSSES = ["l2", "huber", "cauchy", "geman_mcclure"]
LENSES = {
    None: (None, "pinhole"),
    "radtan5": ([0.08, -0.04, 0.002, -0.001, 0.01], "pinhole"),
    "radtan12": ([0.08, -0.04, 0.002, -0.001, 0.01, 0.02, -0.01, 0.005, 1e-3, -2e-3, 5e-4, 1e-3],
                 "pinhole"),
    "fisheye": ([0.05, -0.02, 0.01, -0.003], "fisheye"),
}


def problem(seed, n=10, family="random", off_solution=True):
    """A random problem and a pose near its solution (off it by a few degrees and
    centimetres when `off_solution`, where the residuals' second-order terms are large)."""
    rng = np.random.default_rng(seed)
    p = make_problem(family, rng, n=n, noise=2.0, skew=True)
    w = rng.uniform(0.5, 1.5, size=(n, 2))
    X, x, K, w, R, t = (torch.tensor(a) for a in (p.X, p.x, p.K, w, p.R, p.t))
    if off_solution:
        R = so3_exp(torch.tensor(rng.normal(0, 0.03, 3))) @ R
        t = t + torch.tensor(rng.normal(0, 0.02, 3))
    return X, x, K, w, R, t


@pytest.mark.parametrize("lens", list(LENSES))
@pytest.mark.parametrize("loss", LOSSES)
def test_matches_autodiff_of_the_torch_objective(loss, lens):
    """Values and vector-Jacobian products of the op against torch's autograd of the
    reference objective, on 12 problems per case (three families)."""
    coeffs, model = LENSES[lens]
    for seed in range(12):
        family = ("random", "face", "planar")[seed % 3]
        X, x, K, w, R, t = problem(seed, n=12 if family != "face" else 68, family=family)
        D = None if coeffs is None else torch.tensor(coeffs, dtype=F64)
        inputs = [a.clone().requires_grad_() for a in (R, t, X, x, K, w)]
        Dg = None if D is None else D.clone().requires_grad_()
        H, valid = pose_hessian(*inputs, loss=loss, loss_scale=3.0, distortion=Dg, camera_model=model)
        H_ref = local_hessian_reference(*inputs, loss, 3.0, Dg, model)
        assert bool(valid)
        scale = float(H_ref.detach().abs().max())
        assert float((H - H_ref).abs().max()) <= 1e-12 * scale, (seed, family)
        G = torch.randn(6, 6, dtype=F64, generator=torch.Generator().manual_seed(seed))
        wrt = inputs + ([] if Dg is None else [Dg])
        got = torch.autograd.grad((H * G).sum(), wrt)
        want = torch.autograd.grad((H_ref * G).sum(), wrt)
        for name, a, b in zip(["R", "t", "X", "x", "K", "w", "D"], got, want):
            if name == "K":
                b = torch.cat([b[:2], torch.zeros_like(b[2:])])  # the bottom row is not read
            tol = 1e-11 * float(b.abs().max())
            assert float((a - b).abs().max()) <= tol, (seed, family, name)


@pytest.mark.parametrize("lens", [None, "radtan12", "fisheye"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("seed", range(3))
def test_gradcheck_every_input(seed, loss, lens):
    """float64 gradcheck of the op's backward against finite differences of the op's own
    forward, for R, t, the points, pixels, K's top rows, weights and lens coefficients."""
    coeffs, model = LENSES[lens]
    X, x, K, w, R, t = problem(100 + seed, n=7)
    inputs = [R, t, X, x, K[:2], w] + ([] if coeffs is None else [torch.tensor(coeffs, dtype=F64)])
    # Huber's second derivative jumps where a point's s crosses the scale's square: a scale
    # between two points' s (geometric mean), so that finite differences cross no kink and
    # both regimes are present.
    uv, _ = project(R, t, X, K, inputs[6] if coeffs is not None else None, model)
    s_sorted = ((uv - x) ** 2 * w).sum(-1).sort().values
    scale = float((s_sorted[3] * s_sorted[4]) ** 0.25)
    # H's entries reach ~1e7 (pixels over metres, squared): the finite differences' rounding
    # is relative to that, so H is compared in units of its largest entry at the start.
    unit = None

    def fn(R, t, X, x, Ktop, w, D=None):
        nonlocal unit
        H, valid = pose_hessian(R, t, X, x, torch.cat([Ktop, LAST]), w, loss=loss, loss_scale=scale,
                                distortion=D, camera_model=model)
        assert bool(valid)
        unit = float(H.detach().abs().max()) if unit is None else unit
        return H / unit

    assert gradcheck(fn, tuple(a.clone().requires_grad_() for a in inputs), eps=1e-6, atol=1e-7,
                     rtol=1e-5)


def test_is_the_inverse_of_the_solutions_covariance_and_batches():
    """At solve_pnp's solutions H is the inverse of the covariance; batch shapes broadcast
    (a K shared by a (2, 3) batch), and each problem's H is the one of solving it alone."""
    probs = [problem(200 + k, n=15, off_solution=False) for k in range(6)]
    X, x, _, w, _, _ = (torch.stack(a).reshape(2, 3, *a[0].shape) for a in zip(*probs))
    K = probs[0][2]
    res = pyfacepnp.solve_pnp(X, x, K, w, loss="huber", loss_scale=3.0)
    H, valid = pose_hessian(res.R, res.t, X, x, K, w, loss="huber", loss_scale=3.0)
    assert H.shape == (2, 3, 6, 6) and valid.all()
    torch.testing.assert_close(H @ res.covariance, torch.eye(6, dtype=F64).expand(2, 3, 6, 6),
                               atol=1e-8, rtol=0)
    one, _ = pose_hessian(res.R[1, 2], res.t[1, 2], X[1, 2], x[1, 2], K, w[1, 2], loss="huber",
                          loss_scale=3.0)
    assert torch.equal(one, H[1, 2])


def test_float32_inputs_give_the_float64_hessian_of_their_values():
    X, x, K, w, R, t = problem(7, n=20)
    H32, _ = pose_hessian(*(a.float() for a in (R, t, X, x, K, w)))
    H64, _ = pose_hessian(*(a.float().double() for a in (R, t, X, x, K, w)))
    assert H32.dtype == F64
    torch.testing.assert_close(H32, H64, rtol=1e-13, atol=0)
    inputs = [a.float().requires_grad_() for a in (R, t, X, x, K, w)]
    H, _ = pose_hessian(*inputs)
    grads = torch.autograd.grad(H.sum(), inputs)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_where_the_hessian_does_not_exist():
    """Invalid inputs, a point behind the camera, a bad camera or scale: valid False, H zero,
    zero gradients, never NaN; a zero-weight point with NaN coordinates is removed exactly."""
    probs = [problem(300 + k, n=10) for k in range(6)]
    X, x, K, w, R, t = (torch.stack(a).clone() for a in zip(*probs))
    X[0, 3, 1] = math.nan            # an invalid active point
    t[1, 2] = -t[1, 2]               # every point behind the camera
    K[2, 1, 1] = 0.0                 # a singular focal block
    w[3, 2] = 0.0
    X[3, 2] = math.nan               # removed: a weight of zero
    w[4, 1, 0] = -1.0                # a negative weight
    scales = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1e200], dtype=F64)  # out of range: invalid
    inputs = [a.clone().requires_grad_() for a in (R, t, X, x, K, w)]
    H, valid = pose_hessian(*inputs, loss="huber", loss_scale=scales)
    assert valid.tolist() == [False, False, False, True, False, False]
    assert (H[~valid] == 0).all()
    grads = torch.autograd.grad(H.sum(), inputs)
    for g in grads:
        assert torch.isfinite(g).all()
        assert (g[~valid] == 0).all()
    keep = torch.arange(10) != 2
    alone, _ = pose_hessian(R[3], t[3], X[3, keep], x[3, keep], K[3], w[3, keep], loss="huber")
    torch.testing.assert_close(H[3], alone, rtol=1e-14, atol=0)


def test_options_are_checked():
    X, x, K, w, R, t = problem(8)
    with pytest.raises(ValueError, match="loss"):
        pose_hessian(R, t, X, x, K, w, loss="tukey")
    with pytest.raises(ValueError, match="loss_scale"):
        pose_hessian(R, t, X, x, K, w, loss="huber", loss_scale=-1.0)
    with pytest.raises((ValueError, RuntimeError), match="R"):
        pose_hessian(R[:2], t, X, x, K, w)
