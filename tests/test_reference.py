"""The pure-PyTorch reference PnP solver: pose recovery, optimality against OpenCV,
gradients, per-problem statuses, and the reference objective and warp."""

import math

import numpy as np
import pytest
import torch

import pyfacepnp
from pnp_problems import batch, make_problem, opencv_best
from pyfacepnp.reference import (
    omega_initialisation,
    reprojection_cost,
    rotation_angle,
    so3_exp,
    solve_pnp_reference,
    warp_points_reference,
)

Status = pyfacepnp.PnPStatus
SIZES = {"random": 20, "planar": 5, "minimal": 4, "wide": 30, "face": 68}


def stack_gt(probs, dtype=torch.float64):
    R = torch.tensor(np.stack([p.R for p in probs]), dtype=dtype)
    t = torch.tensor(np.stack([p.t for p in probs]), dtype=dtype)
    return R, t


@pytest.mark.parametrize("family", list(SIZES))
def test_recovers_pose_without_noise(family):
    rng = np.random.default_rng(11)
    probs = [make_problem(family, rng, n=SIZES[family], noise=0.0) for _ in range(16)]
    X, x, K = batch(probs)
    res = solve_pnp_reference(X, x, K)
    R, t = stack_gt(probs)
    assert (res.status == Status.CONVERGED).all(), res.status
    assert rotation_angle(res.R, R).max() < 1e-8
    assert ((res.t - t).norm(dim=-1) / t.norm(dim=-1)).max() < 1e-8
    assert res.cost.max() < 1e-12


def test_recovers_pose_float32():
    rng = np.random.default_rng(12)
    probs = [make_problem("random", rng, n=20, noise=0.0) for _ in range(16)]
    X, x, K = batch(probs, torch.float32)
    res = solve_pnp_reference(X, x, K)
    R, t = stack_gt(probs, torch.float32)
    assert res.R.dtype == torch.float32 and (res.status == Status.CONVERGED).all()
    assert rotation_angle(res.R, R).max() < 1e-4
    assert ((res.t - t).norm(dim=-1) / t.norm(dim=-1)).max() < 1e-4


@pytest.mark.parametrize("family", ["random", "planar", "minimal", "wide"])
def test_cost_matches_opencv_optimum(family):
    """On noisy problems the reference reaches OpenCV's best optimum (SQPnP or ITERATIVE,
    refined by solvePnPRefineLM) and is never worse."""
    rng = np.random.default_rng(21)
    n = {"minimal": 6}.get(family, 12)
    probs = [make_problem(family, rng, n=n, noise=1.0) for _ in range(12)]
    for p in probs:  # OpenCV's camera model has no skew term
        p.K[0, 1] = 0.0
    X, x, K = batch(probs)
    res = solve_pnp_reference(X, x, K)
    assert (res.status == Status.CONVERGED).all(), res.status
    best = torch.tensor([opencv_best(p) for p in probs], dtype=torch.float64)
    assert torch.isfinite(best).all()
    rel = (res.cost - best) / best
    assert rel.max() < 1e-9, rel
    assert rel.min() > -1e-4, rel  # the same minimum, not a different one


def test_cost_output_is_the_objective_at_the_pose():
    rng = np.random.default_rng(3)
    probs = [make_problem("random", rng, n=15) for _ in range(4)]
    X, x, K = batch(probs)
    w = torch.rand(4, 15, 2, dtype=torch.float64) + 0.5
    res = solve_pnp_reference(X, x, K, w, loss="huber", huber_delta=1.5)
    expect = reprojection_cost(res.R, res.t, X, x, K, w, "huber", 1.5)
    torch.testing.assert_close(res.cost, expect)


def test_solution_is_stationary_for_huber_and_weights():
    """The gradient of the objective in local pose coordinates vanishes at the solution."""
    rng = np.random.default_rng(4)
    probs = [make_problem("random", rng, n=25, noise=2.0) for _ in range(6)]
    X, x, K = batch(probs)
    x[:, :5] += 40.0  # outliers: the Huber branch is active for them
    w = torch.rand(6, 25, 2, dtype=torch.float64) + 0.2
    res = solve_pnp_reference(X, x, K, w, loss="huber", huber_delta=2.0)
    assert (res.status == Status.CONVERGED).all()
    for b in range(6):
        def E(theta):
            return reprojection_cost(so3_exp(theta[:3]) @ res.R[b], res.t[b] + theta[3:], X[b], x[b], K[b], w[b],
                                     "huber", 2.0)

        theta = torch.zeros(6, dtype=torch.float64)
        g = torch.autograd.functional.jacobian(E, theta)
        H = torch.autograd.functional.hessian(E, theta)
        step = torch.linalg.solve(H, g)  # the Newton step left to take: ~0 at a minimum
        assert step[:3].abs().max() < 1e-9 and step[3:].abs().max() < 1e-9 * res.t[b].norm(), step
        assert torch.linalg.eigvalsh(H).min() > 0


def test_huber_resists_outliers_better_than_l2():
    rng = np.random.default_rng(5)
    probs = [make_problem("random", rng, n=40, noise=0.5) for _ in range(8)]
    X, x, K = batch(probs)
    x[:, :8] += torch.from_numpy(rng.uniform(30, 80, size=(8, 8, 2)))
    R, _ = stack_gt(probs)
    err_l2 = rotation_angle(solve_pnp_reference(X, x, K).R, R)
    err_hu = rotation_angle(solve_pnp_reference(X, x, K, loss="huber", huber_delta=1.0).R, R)
    assert err_hu.mean() < 0.5 * err_l2.mean()


def test_zero_weight_removes_a_point():
    rng = np.random.default_rng(6)
    probs = [make_problem("random", rng, n=12) for _ in range(4)]
    X, x, K = batch(probs)
    Xg = torch.cat([X, torch.full((4, 3, 3), 1e3, dtype=torch.float64)], 1)  # garbage points
    xg = torch.cat([x, torch.full((4, 3, 2), -7e3, dtype=torch.float64)], 1)
    w = torch.cat([torch.ones(4, 12), torch.zeros(4, 3)], 1).to(torch.float64)
    a, b = solve_pnp_reference(X, x, K), solve_pnp_reference(Xg, xg, K, w)
    assert (b.status == Status.CONVERGED).all()
    assert rotation_angle(a.R, b.R).max() < 1e-9
    torch.testing.assert_close(a.cost, b.cost)


def test_per_axis_weights_match_scaled_pixels():
    """Weight w on both axes equals scaling the residual by sqrt(w): same pose as the
    unweighted problem in scaled pixels (K and x scaled), cost scaled accordingly."""
    rng = np.random.default_rng(8)
    probs = [make_problem("random", rng, n=15) for _ in range(4)]
    X, x, K = batch(probs)
    a = solve_pnp_reference(X, x, K, torch.full((4, 15, 2), 4.0, dtype=torch.float64))
    S = torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64))
    b = solve_pnp_reference(X, 2 * x, S @ K)
    assert rotation_angle(a.R, b.R).max() < 1e-9
    torch.testing.assert_close(a.cost, b.cost)


def test_gradients_match_finite_differences():
    """Autograd through the unrolled iterations agrees with central differences of the
    solver's output (the sensitivity of the optimum), for every differentiable input."""
    rng = np.random.default_rng(9)
    probs = [make_problem("random", rng, n=8, noise=1.0) for _ in range(2)]
    X, x, K = batch(probs)
    w = torch.rand(2, 8, dtype=torch.float64) + 0.5
    gR = torch.randn(2, 3, 3, dtype=torch.float64)
    gt = torch.randn(2, 3, dtype=torch.float64)

    def loss_of(X_, x_, K_, w_):
        res = solve_pnp_reference(X_, x_, K_, w_, tolerance=1e-14)
        return (res.R * gR).sum() + (res.t * gt).sum() + res.cost.sum()

    inputs = [X.clone().requires_grad_(), x.clone().requires_grad_(), K.clone().requires_grad_(),
              w.clone().requires_grad_()]
    grads = torch.autograd.grad(loss_of(*inputs), inputs)
    for i, name, idx in [(0, "points3d", (1, 3, 2)), (1, "points2d", (0, 5, 0)),
                         (2, "K", (1, 0, 2)), (3, "weights", (0, 4))]:
        assert torch.isfinite(grads[i]).all(), name
        h = 1e-6 * max(1.0, abs(float(inputs[i].detach()[idx])))
        args_p = [a.detach().clone() for a in inputs]
        args_m = [a.detach().clone() for a in inputs]
        args_p[i][idx] += h
        args_m[i][idx] -= h
        fd = (loss_of(*args_p) - loss_of(*args_m)) / (2 * h)
        assert abs(float(grads[i][idx]) - float(fd)) <= 2e-6 * max(1.0, abs(float(fd))), (name, grads[i][idx], fd)


def test_covariance_is_inverse_exact_hessian():
    rng = np.random.default_rng(10)
    p = make_problem("random", rng, n=10, noise=3.0)
    X, x, K = batch([p])
    res = solve_pnp_reference(X, x, K, loss="huber", huber_delta=2.0)

    def E(theta):
        return reprojection_cost(so3_exp(theta[:3]) @ res.R[0], res.t[0] + theta[3:], X[0], x[0], K[0],
                                 None, "huber", 2.0)

    H = torch.autograd.functional.hessian(E, torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(res.covariance[0] @ H, torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0)


def test_bad_problems_get_a_status_and_leave_others_alone():
    rng = np.random.default_rng(13)
    probs = [make_problem("random", rng, n=10) for _ in range(5)]
    X, x, K = batch(probs)
    w = torch.ones(5, 10, dtype=torch.float64)
    X[1, 3, 0] = float("nan")
    w[2, 4:] = 0.0  # only four points left: still valid
    w[3, 3:] = 0.0  # three points: invalid
    K[4, 1, 1] = 0.0  # a singular K
    Xr = X.clone().requires_grad_()
    res = solve_pnp_reference(Xr, x, K, w)
    assert res.status.tolist() == [Status.CONVERGED, Status.INVALID_INPUT, Status.CONVERGED,
                                   Status.INVALID_INPUT, Status.INVALID_INPUT]
    Kr = K[:1].clone()
    Kr[0, 2] = torch.tensor([0.5, -3.0, 2.0])  # K's bottom row is ignored, as by the op
    torch.testing.assert_close(solve_pnp_reference(X[:1], x[:1], Kr).t, solve_pnp_reference(X[:1], x[:1], K[:1]).t)
    for f in (res.R, res.t, res.cost, res.covariance):
        assert torch.isfinite(f).all()
    good = solve_pnp_reference(X[:1], x[:1], K[:1])
    torch.testing.assert_close(res.R[:1], good.R)
    (res.R.sum() + res.t.sum()).backward()
    assert torch.isfinite(Xr.grad).all()
    assert (Xr.grad[1] == 0).all() and (Xr.grad[3] == 0).all() and (Xr.grad[0] != 0).any()


def test_init_is_used_unless_it_puts_points_behind_the_camera():
    rng = np.random.default_rng(14)
    probs = [make_problem("random", rng, n=10, noise=0.0) for _ in range(2)]
    X, x, K = batch(probs)
    R, t = stack_gt(probs)
    # Problem 0 starts at its solution (no step needed); problem 1 behind the camera.
    t0 = torch.stack([t[0], torch.tensor([0.0, 0.0, -20.0], dtype=torch.float64)])
    res = solve_pnp_reference(X, x, K, init=(R, t0))
    assert (res.status == Status.CONVERGED).all()
    assert res.iterations[0] == 0
    assert rotation_angle(res.R, R).max() < 1e-8


def test_argument_errors():
    X, x, K = torch.zeros(2, 5, 3), torch.zeros(2, 5, 2), torch.eye(3)
    with pytest.raises(ValueError, match=r"points3d must have shape \(\.\.\., N, 3\)"):
        solve_pnp_reference(torch.zeros(2, 5, 2), x, K)
    with pytest.raises(ValueError, match="same N"):
        solve_pnp_reference(X, torch.zeros(2, 6, 2), K)
    with pytest.raises(ValueError, match="N >= 4"):
        solve_pnp_reference(X[:, :3], x[:, :3], K)
    with pytest.raises(ValueError, match="K must have shape"):
        solve_pnp_reference(X, x, torch.eye(4))
    with pytest.raises(ValueError, match="weights must have shape"):
        solve_pnp_reference(X, x, K, torch.ones(2, 4))
    with pytest.raises(ValueError, match="loss must be one of"):
        solve_pnp_reference(X, x, K, loss="cauchy")
    with pytest.raises(TypeError, match="float32 or float64"):
        solve_pnp_reference(X.to(torch.int64), x, K)


def test_batch_dims_broadcast():
    rng = np.random.default_rng(15)
    X, x, K = batch([make_problem("random", rng, n=10, noise=0.0) for _ in range(6)])
    res = solve_pnp_reference(X.reshape(2, 3, 10, 3), x.reshape(2, 3, 10, 2), K[0])
    assert res.R.shape == (2, 3, 3, 3) and res.covariance.shape == (2, 3, 6, 6) and res.status.shape == (2, 3)
    flat = solve_pnp_reference(X, x, K[0].expand(6, 3, 3))
    torch.testing.assert_close(res.R.reshape(6, 3, 3), flat.R)


def test_initialisation_is_near_the_optimum():
    rng = np.random.default_rng(16)
    probs = [make_problem(f, rng, n=n, noise=1.0) for f, n in [("planar", 4), ("minimal", 5), ("wide", 30)] * 4]
    for group in (probs[0::3], probs[1::3], probs[2::3]):
        X, x, K = batch(group)
        R0, t0 = omega_initialisation(X, x, K, torch.ones_like(x))
        res = solve_pnp_reference(X, x, K)
        assert rotation_angle(R0, res.R).max() < math.radians(5)


def test_reprojection_cost_by_hand():
    K = torch.tensor([[100.0, 0, 50], [0, 200.0, 40], [0, 0, 1]], dtype=torch.float64)
    X = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    x = torch.tensor([[60.0 + 3.0, 40.0], [50.0, 60.0 + 1.0]], dtype=torch.float64)  # residuals 3, 1
    R = torch.eye(3, dtype=torch.float64)
    assert float(reprojection_cost(R, t, X, x, K)) == pytest.approx(0.5 * (9 + 1))
    w = torch.tensor([[2.0, 5.0], [7.0, 0.5]], dtype=torch.float64)
    assert float(reprojection_cost(R, t, X, x, K, w)) == pytest.approx(0.5 * (2 * 9 + 0.5 * 1))
    # Huber with d = 2: s = 9 > 4 -> 2*2*3 - 4 = 8; s = 1 -> 1.
    assert float(reprojection_cost(R, t, X, x, K, None, "huber", 2.0)) == pytest.approx(0.5 * (8 + 1))


def test_warp_reference_matches_op_and_inverse():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 7, 2, generator=g, dtype=torch.float64) * 100
    A = torch.randn(3, 2, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(warp_points_reference(p, A), pyfacepnp.warp_points(p, A))
    back = warp_points_reference(warp_points_reference(p, A), pyfacepnp.invert_affine(A))
    torch.testing.assert_close(back, p)


def test_scene_behind_the_camera_same_front_facing_minimum_as_the_op():
    """Pixels that fit best with the points behind the camera: the reference moves its start
    in front as the op does, and both reach the same front-facing minimum."""
    from pnp_problems import project

    for seed in range(4):
        p = make_problem("random", np.random.default_rng(seed), n=12)
        t_behind = p.t.copy(); t_behind[2] = -t_behind[2]
        X, K = torch.tensor(p.X), torch.tensor(p.K)
        x = torch.tensor(project(p.X, p.R, t_behind, p.K))
        ref, op = solve_pnp_reference(X, x, K), pyfacepnp.solve_pnp(X, x, K)
        assert int(ref.status) == int(op.status) == Status.CONVERGED
        assert float(ref.cost) == pytest.approx(float(op.cost), rel=1e-9)
        torch.testing.assert_close(ref.t, op.t, rtol=1e-7, atol=1e-9)
