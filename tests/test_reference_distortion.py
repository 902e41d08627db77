"""The pure-PyTorch reference solver with lens distortion: optimality against OpenCV's
distorted refinement, the fisheye, the undistorted initialisation, gradients to the
coefficients, statuses and argument checks."""

import math

import cv2
import numpy as np
import pytest
import torch

import pyfacepnp
from pnp_problems import make_problem
from pyfacepnp.geometry import project_points, rvec_to_matrix
from pyfacepnp.geometry.rotation import so3_exp
from pyfacepnp.reference import omega_initialisation, reprojection_cost, rotation_angle, solve_pnp_reference
from pyfacepnp.reference.objective import project, residual_jacobian

Status = pyfacepnp.PnPStatus
F64 = torch.float64
PINHOLE = np.array([-0.28, 0.07, 1e-3, -5e-4, -0.01, 0.01, 0.002, -0.001, 1e-3, -1e-3, 5e-4, 2e-4])
FISHEYE = np.array([-0.01, 0.02, -0.005, 0.001])
CRIT = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 200, 1e-15)


def distorted_batch(rng, count, n, D, model="pinhole", noise=0.5, focal=None):
    """``count`` random-box problems of ``n`` points seen through the lens ``D``."""
    probs = [make_problem("random", rng, n=n, noise=0.0) for _ in range(count)]
    if focal is not None:  # a wide (fisheye) view: shorter focal length, same image
        for p in probs:
            p.K[:2, :2] *= focal / p.K[0, 0]
    X = np.stack([p.X for p in probs])
    K = np.stack([p.K for p in probs])
    R, t = np.stack([p.R for p in probs]), np.stack([p.t for p in probs])
    x = project_points(X, R, t, K, D, model) + noise * rng.normal(size=(count, n, 2))
    return [torch.from_numpy(a) for a in (X, x, K, R, t)]


def cost(R, t, X, x, K, D, model="pinhole"):
    return reprojection_cost(R, t, X, x, K, distortion=torch.from_numpy(D), camera_model=model)


def opencv_best(X, x, K, D):
    """SQPnP on cv2.undistortPoints' rays, refined by solvePnPRefineLM with the lens."""
    X, x, K = X.numpy(), x.numpy(), K.numpy()
    und = cv2.undistortPoints(x[:, None], K, D, P=K, criteria=CRIT)
    _, rv, tv = cv2.solvePnP(X, und, K, None, flags=cv2.SOLVEPNP_SQPNP)
    rv, tv = cv2.solvePnPRefineLM(X, x, K, D, rv, tv, criteria=CRIT)
    return torch.from_numpy(rvec_to_matrix(rv.ravel())), torch.from_numpy(tv.ravel())


@pytest.mark.parametrize("length,n", [(4, 20), (5, 35), (8, 60), (12, 100)])
def test_reaches_opencv_optimum_pinhole(length, n):
    D = PINHOLE[:length]
    for seed in range(3):
        X, x, K, _, _ = distorted_batch(np.random.default_rng(100 * length + seed), 4, n, D)
        res = solve_pnp_reference(X, x, K, distortion=torch.from_numpy(D))
        assert (res.status == Status.CONVERGED).all(), res.status
        torch.testing.assert_close(res.cost, cost(res.R, res.t, X, x, K, D))
        for b in range(len(X)):
            R_cv, t_cv = opencv_best(X[b], x[b], K[b], D)
            best = cost(R_cv, t_cv, X[b], x[b], K[b], D)
            assert res.cost[b] <= best * (1 + 1e-6), (float(res.cost[b]), float(best))
            assert res.cost[b] >= best * (1 - 1e-4)  # the same minimum, not another one


def test_fisheye_beats_the_true_pose():
    D = torch.from_numpy(FISHEYE)
    for seed in range(3):
        X, x, K, R, t = distorted_batch(np.random.default_rng(seed), 6, 40, FISHEYE, "fisheye", focal=290.0)
        res = solve_pnp_reference(X, x, K, distortion=D, camera_model="fisheye")
        assert (res.status == Status.CONVERGED).all(), res.status
        assert (res.cost <= cost(R, t, X, x, K, FISHEYE, "fisheye")).all()
        assert rotation_angle(res.R, R).max() < math.radians(1.0)
        assert ((res.t - t).norm(dim=-1) / t.norm(dim=-1)).max() < 0.05
        # ... and is no worse than cv2.fisheye.solvePnP (undistortion, then the pinhole solver).
        for b in range(2):
            _, rv, tv = cv2.fisheye.solvePnP(X[b].numpy()[:, None], x[b].numpy()[:, None], K[b].numpy(), FISHEYE)
            c_cv = cost(torch.from_numpy(rvec_to_matrix(rv.ravel())), torch.from_numpy(tv.ravel()), X[b], x[b], K[b],
                        FISHEYE, "fisheye")
            assert res.cost[b] <= c_cv


@pytest.mark.parametrize("model,D", [("pinhole", PINHOLE[:8]), ("fisheye", FISHEYE)])
def test_recovers_pose_without_noise_from_its_own_start(model, D):
    X, x, K, R, t = distorted_batch(np.random.default_rng(7), 8, 12, D, model, noise=0.0,
                                    focal=290.0 if model == "fisheye" else None)
    Dt = torch.from_numpy(D)
    R0, _ = omega_initialisation(X, x, K, torch.ones_like(x), distortion=Dt.expand(8, -1), camera_model=model)
    assert rotation_angle(R0, R).max() < 1e-6  # exact rays: the initialisation is exact too
    res = solve_pnp_reference(X, x, K, distortion=Dt, camera_model=model)
    assert (res.status == Status.CONVERGED).all()
    assert rotation_angle(res.R, R).max() < 1e-9
    assert ((res.t - t).norm(dim=-1) / t.norm(dim=-1)).max() < 1e-9


def test_zero_coefficients_are_the_pinhole_and_batches_broadcast():
    X, x, K, _, _ = distorted_batch(np.random.default_rng(8), 6, 15, np.zeros(4))
    plain = solve_pnp_reference(X, x, K)
    zero = solve_pnp_reference(X, x, K, distortion=torch.zeros(5, dtype=F64))
    assert rotation_angle(plain.R, zero.R).max() < 1e-10
    torch.testing.assert_close(plain.cost, zero.cost)
    # One lens per problem, or one shared by all, with any batch shape.
    D = torch.from_numpy(PINHOLE[:5])
    x = torch.from_numpy(project_points(X.numpy(), plain.R.numpy(), plain.t.numpy(), K.numpy(), D.numpy()))
    shared = solve_pnp_reference(X.reshape(2, 3, 15, 3), x.reshape(2, 3, 15, 2), K.reshape(2, 3, 3, 3), distortion=D)
    each = solve_pnp_reference(X, x, K, distortion=D.expand(6, 5))
    assert shared.R.shape == (2, 3, 3, 3)
    torch.testing.assert_close(shared.R.reshape(6, 3, 3), each.R)


def test_residual_jacobian_with_a_lens_is_the_derivative_of_project():
    X, _, K, R, t = distorted_batch(np.random.default_rng(9), 2, 7, np.zeros(4))
    K[:, 0, 1] = 0.7  # skew multiplies yd
    for model, D in (("pinhole", PINHOLE), ("fisheye", FISHEYE)):
        D = torch.from_numpy(D)
        uv, z, J = residual_jacobian(R, t, X, K, D, model)

        def f(theta):
            return project(so3_exp(theta[:, :3]) @ R, t + theta[:, 3:], X, K, D, model)[0]

        J_auto = torch.autograd.functional.jacobian(f, torch.zeros(2, 6, dtype=F64))
        torch.testing.assert_close(J, torch.stack([J_auto[b, :, :, b] for b in range(2)]), rtol=1e-11, atol=1e-9)
        torch.testing.assert_close(uv, f(torch.zeros(2, 6, dtype=F64)), rtol=0, atol=0)


def test_solution_is_stationary_with_huber_weights_and_a_fisheye():
    X, x, K, _, _ = distorted_batch(np.random.default_rng(10), 3, 25, FISHEYE, "fisheye", noise=1.0, focal=290.0)
    x[:, :4] += 30.0  # outliers in the Huber branch
    w = torch.rand(3, 25, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.3
    D = torch.from_numpy(FISHEYE)
    res = solve_pnp_reference(X, x, K, w, loss="huber", huber_delta=2.0, distortion=D, camera_model="fisheye")
    assert (res.status == Status.CONVERGED).all()
    for b in range(3):
        def E(theta):
            return reprojection_cost(so3_exp(theta[:3]) @ res.R[b], res.t[b] + theta[3:], X[b], x[b], K[b], w[b],
                                     "huber", 2.0, D, "fisheye")

        theta = torch.zeros(6, dtype=F64)
        H = torch.autograd.functional.hessian(E, theta)
        step = torch.linalg.solve(H, torch.autograd.functional.jacobian(E, theta))
        assert step[:3].abs().max() < 1e-9 and step[3:].abs().max() < 1e-9 * res.t[b].norm(), step
        torch.testing.assert_close(res.covariance[b] @ H, torch.eye(6, dtype=F64), atol=1e-6, rtol=0)


def test_gradient_to_the_coefficients_matches_finite_differences():
    X, x, K, _, _ = distorted_batch(np.random.default_rng(11), 2, 10, PINHOLE[:5], noise=1.0)
    g = torch.Generator().manual_seed(1)
    gR, gt = torch.randn(2, 3, 3, dtype=F64, generator=g), torch.randn(2, 3, dtype=F64, generator=g)

    def loss_of(D):
        res = solve_pnp_reference(X, x, K, distortion=D, tolerance=1e-14)
        return (res.R * gR).sum() + (res.t * gt).sum() + res.cost.sum()

    D = torch.from_numpy(PINHOLE[:5]).requires_grad_()
    (grad,) = torch.autograd.grad(loss_of(D), D)
    h = 1e-6
    for k in (0, 2, 4):
        e = torch.zeros(5, dtype=F64)
        e[k] = h
        fd = (loss_of(D.detach() + e) - loss_of(D.detach() - e)) / (2 * h)
        assert abs(float(grad[k] - fd)) <= 2e-5 * max(1.0, abs(float(fd))), (k, grad[k], fd)


def test_bad_coefficients_and_arguments():
    X, x, K, _, _ = distorted_batch(np.random.default_rng(12), 3, 10, PINHOLE[:4])
    D = torch.from_numpy(np.stack([PINHOLE[:4]] * 3))
    D[1, 0] = float("nan")
    res = solve_pnp_reference(X, x, K, distortion=D)
    assert res.status.tolist() == [Status.CONVERGED, Status.INVALID_INPUT, Status.CONVERGED]
    with pytest.raises(ValueError, match=r"needs D in \(4, 5, 8, 12\)"):
        solve_pnp_reference(X, x, K, distortion=torch.zeros(14, dtype=F64))
    with pytest.raises(ValueError, match=r"fisheye distortion needs D in \(4,\)"):
        solve_pnp_reference(X, x, K, distortion=torch.zeros(5, dtype=F64), camera_model="fisheye")
    with pytest.raises(ValueError, match="fisheye' needs its coefficients"):
        solve_pnp_reference(X, x, K, camera_model="fisheye")
    with pytest.raises(ValueError, match="camera_model must be one of"):
        solve_pnp_reference(X, x, K, distortion=torch.zeros(4, dtype=F64), camera_model="omni")
