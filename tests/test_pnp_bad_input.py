"""Bad input: clear errors for malformed calls, per-problem statuses for bad problems, and
no effect of a bad problem on any other problem's outputs or gradients."""

import numpy as np
import pytest
import torch

import pyfacepnp
from pyfacepnp import PnPStatus
from pnp_problems import make_problem, project

F64 = torch.float64


def good(n=10, seed=0):
    p = make_problem("random", np.random.default_rng(seed), n=n)
    return torch.tensor(p.X), torch.tensor(p.x), torch.tensor(p.K)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(points3d=torch.zeros(10, 2, dtype=F64)), ValueError, r"points3d must have shape \(\.\.\., N, 3\), got \(10, 2\)"),
        (dict(points2d=torch.zeros(10, 3, dtype=F64)), ValueError, r"points2d must have shape \(\.\.\., N, 2\), got \(10, 3\)"),
        (dict(points2d=torch.zeros(9, 2, dtype=F64)), ValueError, r"same number of points N, got \(10, 3\) and \(9, 2\)"),
        (dict(K=torch.zeros(3, 4, dtype=F64)), ValueError, r"K must have shape \(\.\.\., 3, 3\), got \(3, 4\)"),
        (dict(points3d=torch.zeros(3, 3, dtype=F64), points2d=torch.zeros(3, 2, dtype=F64)), ValueError, r"at least 4 points.*got points3d of shape \(3, 3\)"),
        (dict(points3d=torch.zeros(10, 3, dtype=torch.int64)), TypeError, r"points3d must be float32 or float64, got torch.int64"),
        (dict(points2d=torch.zeros(10, 2, dtype=torch.float32)), TypeError, r"points3d and points2d must have the same dtype"),
        (dict(K=torch.zeros(3, 3, dtype=F64, device="meta")), ValueError, r"points3d and K must be on the same device, got cpu and meta"),
        (dict(weights=torch.ones(7, dtype=F64)), ValueError, r"weights must have shape \(\.\.\., N\) or \(\.\.\., N, 2\) with N = 10, got \(7,\)"),
        (dict(weights=[1.0] * 10), TypeError, r"weights must be a torch.Tensor"),
        (dict(points3d=np.zeros((10, 3))), TypeError, r"points3d must be a torch.Tensor"),
        (dict(loss="tukey"), ValueError, r"loss must be one of \('l2', 'huber', 'cauchy', 'geman_mcclure'\), got 'tukey'"),
        (dict(loss_scale=0.0), ValueError, r"loss_scale must be positive, got 0.0"),
        (dict(huber_delta=0.0), ValueError, r"huber_delta must be positive, got 0.0"),
        (dict(max_iterations=0), ValueError, r"max_iterations must be a positive int, got 0"),
        (dict(tolerance=0.0), ValueError, r"tolerance must be in \(0, 1\), got 0.0"),
        (dict(init=torch.eye(3, dtype=F64)), TypeError, r"init must be a tuple \(R \(\.\.\., 3, 3\), t \(\.\.\., 3\)\)"),
        (dict(init=(torch.eye(3, dtype=F64), torch.zeros(2, dtype=F64))), ValueError, r"init t must have shape \(\.\.\., 3\), got \(2,\)"),
        (dict(points3d=torch.zeros(2, 10, 3, dtype=F64), points2d=torch.zeros(3, 10, 2, dtype=F64)), ValueError, r"batch dimensions do not broadcast: points3d \(2,\), points2d \(3,\)"),
    ],
)
def test_errors_name_the_argument_and_shape(kwargs, err, match):
    X, x, K = good()
    args = dict(points3d=X, points2d=x, K=K)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        pyfacepnp.solve_pnp(**args)


def test_compiled_op_checks_shapes_too():
    X, x, K = good()
    with pytest.raises(RuntimeError, match=r"points2d must have shape \(1, 10, 2\)"):
        torch.ops.pyfacepnp.solve_pnp(X[None], x[None, :, :1], K[None], torch.ones(1, 10, 2, dtype=F64),
                                      None, None, "l2", 1.0, 10, 1e-10)
    with pytest.raises(RuntimeError, match=r"needs N >= 4"):
        torch.ops.pyfacepnp.solve_pnp(X[None, :3], x[None, :3], K[None], torch.ones(1, 3, 2, dtype=F64),
                                      None, None, "l2", 1.0, 10, 1e-10)


def bad_problems():
    """(name, X, x, K, w, expected status) for one problem each, N = 10."""
    X, x, K = good(seed=1)
    p = make_problem("random", np.random.default_rng(1), n=10)
    w = torch.ones(10, dtype=F64)
    out = []
    Xn = X.clone(); Xn[3, 1] = torch.nan
    out.append(("nan point", Xn, x, K, w, PnPStatus.INVALID_INPUT))
    xi = x.clone(); xi[0, 0] = torch.inf
    out.append(("inf pixel", X, xi, K, w, PnPStatus.INVALID_INPUT))
    wn = w.clone(); wn[2] = -1.0
    out.append(("negative weight", X, x, K, wn, PnPStatus.INVALID_INPUT))
    w3 = torch.zeros(10, dtype=F64); w3[:3] = 1.0
    out.append(("3 weighted points", X, x, K, w3, PnPStatus.INVALID_INPUT))
    Ks = K.clone(); Ks[1, 1] = 0.0
    out.append(("singular K", X, x, Ks, w, PnPStatus.INVALID_INPUT))
    Kn = K.clone(); Kn[0, 2] = torch.nan
    out.append(("nan K", X, x, Kn, w, PnPStatus.INVALID_INPUT))
    Xi = X[:1].expand(10, 3).clone()
    out.append(("identical points", Xi, x, K, w, PnPStatus.DEGENERATE))
    s = torch.linspace(-1, 1, 10, dtype=F64)[:, None]
    Xc = s * torch.tensor([[1.0, 2.0, 0.5]], dtype=F64)
    xc = torch.tensor(project(Xc.numpy(), p.R, p.t, p.K))
    out.append(("collinear points", Xc, xc, K, w, PnPStatus.DEGENERATE))
    t_plane = p.t.copy(); t_plane[2] = 0.0
    xs = torch.tensor(project(p.X, p.R, t_plane, p.K))
    out.append(("points on both sides of the camera", X, xs, K, w, PnPStatus.DEGENERATE))
    return out


@pytest.mark.parametrize("case", bad_problems(), ids=lambda c: c[0])
@pytest.mark.parametrize("position", [0, 2, 4])
def test_bad_problem_gets_status_and_leaves_others_exact(case, position):
    name, Xb, xb, Kb, wb, expected = case
    goods = [good(seed=10 + i) for i in range(4)]
    Xs = [g[0] for g in goods]; xs = [g[1] for g in goods]; Ks = [g[2] for g in goods]
    ws = [torch.ones(10, dtype=F64) for _ in goods]
    Xs.insert(position, Xb); xs.insert(position, xb); Ks.insert(position, Kb); ws.insert(position, wb)
    X = torch.stack(Xs).requires_grad_()
    x = torch.stack(xs).requires_grad_()
    K = torch.stack(Ks).requires_grad_()
    w = torch.stack(ws).requires_grad_()
    res = pyfacepnp.solve_pnp(X, x, K, w)
    loss = res.R.sum() + res.t.sum() + res.cost.sum()
    loss.backward()

    assert int(res.status[position]) == expected, (name, res.status)
    for field in (res.R, res.t, res.cost, res.covariance):
        assert torch.isfinite(field).all(), name
    for g in (X.grad, x.grad, K.grad, w.grad):
        assert torch.isfinite(g).all() and (g[position] == 0).all(), name
    others = [i for i in range(5) if i != position]
    for i in others:
        j = i if i < position else i - 1
        Xi = goods[j][0].clone().requires_grad_()
        xi = goods[j][1].clone().requires_grad_()
        one = pyfacepnp.solve_pnp(Xi, xi, goods[j][2])
        (one.R.sum() + one.t.sum() + one.cost).backward()
        assert int(res.status[i]) == PnPStatus.CONVERGED
        assert torch.equal(res.R[i], one.R) and torch.equal(res.t[i], one.t)
        assert torch.equal(X.grad[i], Xi.grad) and torch.equal(x.grad[i], xi.grad)


def test_invalid_problem_outputs_are_identity_and_zero():
    name, X, x, K, w, _ = bad_problems()[0]
    res = pyfacepnp.solve_pnp(X, x, K, w)
    assert torch.equal(res.R, torch.eye(3, dtype=F64)) and (res.t == 0).all()
    assert float(res.cost) == 0 and (res.covariance == 0).all() and int(res.iterations) == 0


def test_init_behind_camera_falls_back_to_global_initialisation():
    X, x, K = good(seed=3)
    ref = pyfacepnp.solve_pnp(X, x, K)
    res = pyfacepnp.solve_pnp(X, x, K, init=(torch.eye(3, dtype=F64), torch.tensor([0, 0, -20.0], dtype=F64)))
    assert int(res.status) == 0
    assert torch.allclose(res.R, ref.R, atol=1e-10) and torch.allclose(res.t, ref.t, atol=1e-10)


def test_malformed_init_rotation_is_invalid():
    X, x, K = good(seed=3)
    R = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))  # a reflection
    res = pyfacepnp.solve_pnp(X, x, K, init=(R, torch.tensor([0, 0, 5.0], dtype=F64)))
    assert int(res.status) == PnPStatus.INVALID_INPUT
    Rn = torch.full((3, 3), torch.nan, dtype=F64)
    res = pyfacepnp.solve_pnp(X, x, K, init=(Rn, torch.tensor([0, 0, 5.0], dtype=F64)))
    assert int(res.status) == PnPStatus.INVALID_INPUT


@pytest.mark.parametrize("last_row", [[0.0, 0.0, 1.0 + 1e-7], [0.5, -3.0, 2.0], [np.nan, np.inf, 0.0]])
def test_K_bottom_row_is_ignored_with_zero_gradient(last_row):
    """Only rows 0-1 of K are read: any bottom row (rounded, scaled, even non-finite) gives
    the [0, 0, 1] answer bit for bit, and its gradient is exactly zero."""
    X, x, K = good(seed=4)
    ref = pyfacepnp.solve_pnp(X, x, K)
    Kb = K.clone()
    Kb[2] = torch.tensor(last_row, dtype=F64)
    Kb.requires_grad_()
    res = pyfacepnp.solve_pnp(X, x, Kb)
    assert torch.equal(res.R, ref.R) and torch.equal(res.t, ref.t) and int(res.status) == 0
    (res.R.sum() + res.t.sum() + res.cost).backward()
    assert (Kb.grad[2] == 0).all() and (Kb.grad[:2] != 0).any()


def test_user_gradcheck_with_K_passes_at_the_documented_tolerance():
    """A user's torch.autograd.gradcheck of solve_pnp with every input, K's bottom row
    included, requiring grad: torch's default gradcheck settings and the op's default
    tolerance (docs/api.md, "Checking gradients")."""
    for seed in range(5):
        X, x, K = good(seed=5 + seed)
        w = torch.rand(10, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) + 0.5
        fn = lambda X, x, K, w: pyfacepnp.solve_pnp(X, x, K, w)[:3]  # noqa: E731
        assert torch.autograd.gradcheck(fn, tuple(a.clone().requires_grad_() for a in (X, x, K, w)))


def test_pixels_that_fit_behind_the_camera_get_a_front_facing_minimum():
    """A scene whose pixels fit best with every point behind the camera (the object mirrored
    through it): no start puts the points in front, so the starts are moved in front and the
    answer is the best front-facing minimum: CONVERGED, every point in front, gradients exact
    (gradcheck) rather than a discarded problem."""
    p = make_problem("random", np.random.default_rng(1), n=10)
    t_behind = p.t.copy(); t_behind[2] = -t_behind[2]
    X, xb = torch.tensor(p.X), torch.tensor(project(p.X, p.R, t_behind, p.K))
    K = torch.tensor(p.K)
    res = pyfacepnp.solve_pnp(X, xb, K)
    assert int(res.status) == PnPStatus.CONVERGED
    assert ((X @ res.R.T + res.t)[:, 2] > 0).all()
    fn = lambda X, x: pyfacepnp.solve_pnp(X, x, K)[:3]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (X.clone().requires_grad_(), xb.clone().requires_grad_()))


def test_random_correspondences_are_not_discarded():
    """A network's first outputs: random 2D-3D correspondences (K = I, per-axis weights).
    Every problem gets a front-facing pose and gradients (none DEGENERATE)."""
    g = torch.Generator().manual_seed(0)
    X = 0.1 * torch.randn(256, 64, 3, generator=g, dtype=F64)
    x = 0.1 * torch.randn(256, 64, 2, generator=g, dtype=F64)
    w = torch.rand(256, 64, 2, generator=g, dtype=F64).requires_grad_()
    res = pyfacepnp.solve_pnp(X, x, torch.eye(3, dtype=F64), w, loss="huber", loss_scale=0.1)
    assert not (res.status == PnPStatus.DEGENERATE).any()
    assert (res.status == PnPStatus.CONVERGED).float().mean() > 0.8
    assert ((X @ res.R.transpose(-1, -2) + res.t[:, None])[..., 2] > 0).all()
    res.t.sum().backward()
    assert (w.grad[res.converged].abs().sum((1, 2)) > 0).all()
