"""Lens distortion, projection with a lens, Rodrigues vectors and the OpenGL conventions of
the geometry layer, checked against OpenCV (cv2.projectPoints, cv2.fisheye, cv2.undistortPoints,
cv2.Rodrigues) and by gradcheck."""

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from pyfacepnp.geometry import (
    DISTORTION_LENGTHS, check_distortion, distort, distort_with_jacobian, matrix_to_rvec, opencv_to_wcpa,
    project_points, rvec_to_matrix, undistort, wcpa_to_opencv,
)

F64 = torch.float64
# Realistic lenses: strong barrel with small tangential, rational and thin-prism terms.
PINHOLE = np.array([-0.28, 0.07, 1e-3, -5e-4, -0.01, 0.01, 0.002, -0.001, 1e-3, -1e-3, 5e-4, 2e-4])
FISHEYE = np.array([-0.01, 0.02, -0.005, 0.001])
K_PIN = np.array([[520.0, 0.0, 318.0], [0.0, 515.0, 243.0], [0.0, 0.0, 1.0]])
K_FISH = np.array([[285.0, 0.0, 322.0], [0.0, 287.0, 238.0], [0.0, 0.0, 1.0]])  # ~ 100 degree view
CRIT = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 500, 1e-15)


def random_pose(rng):
    rvec = rng.normal(size=3)
    rvec *= rng.uniform(0.1, 3.0) / np.linalg.norm(rvec)
    return rvec, rng.normal(size=3) * [0.3, 0.3, 0.5]


def points_across_image(rng, K, n, rvec, t, model="pinhole"):
    """Object points whose undistorted rays fill a 640x480 view, 1..6 m away, plus the
    optical axis itself and a point 1e-9 off it (r = 0 and its neighbourhood)."""
    u = np.c_[rng.uniform(0, 640, n), rng.uniform(0, 480, n)]
    ray = (u - K[:2, 2]) / np.diag(K)[:2]
    if model == "fisheye":  # the fisheye's pixel radius is the angle: tan turns it into a ray
        rr = np.linalg.norm(ray, axis=1, keepdims=True)
        ray *= np.tan(np.minimum(rr, 1.2)) / rr
    ray = np.r_[ray, [[0.0, 0.0], [1e-9, -1e-9]]]
    z = rng.uniform(1.0, 6.0, (len(ray), 1))
    xc = np.c_[ray, np.ones(len(ray))] * z
    R = rvec_to_matrix(rvec)
    return (xc - t) @ R  # X = R^T (xc - t)


@pytest.mark.parametrize("length", DISTORTION_LENGTHS["pinhole"])
def test_pinhole_matches_cv2_project_points(length):
    rng = np.random.default_rng(length)
    D = PINHOLE[:length]
    worst = 0.0
    for _ in range(4):
        rvec, t = random_pose(rng)
        X = points_across_image(rng, K_PIN, 200, rvec, t)
        ref = cv2.projectPoints(X, rvec, t, K_PIN, D)[0].reshape(-1, 2)
        ours_np = project_points(X, rvec_to_matrix(rvec), t, K_PIN, D)
        ours_t = project_points(*(torch.from_numpy(a) for a in (X, rvec_to_matrix(rvec), t, K_PIN, D)))
        assert isinstance(ours_np, np.ndarray) and ours_t.dtype == F64
        worst = max(worst, np.abs(ours_np - ref).max(), np.abs(ours_t.numpy() - ref).max())
    assert worst < 1e-9, worst


def test_fisheye_matches_cv2_fisheye_project_points_with_skew():
    rng = np.random.default_rng(1)
    worst = 0.0
    for alpha in (0.0, 0.002):  # cv2.fisheye's skew: u = fx (xd + alpha yd) + cx, i.e. K[0, 1] = alpha fx
        K = K_FISH.copy()
        K[0, 1] = alpha * K[0, 0]
        for _ in range(4):
            rvec, t = random_pose(rng)
            X = points_across_image(rng, K_FISH, 200, rvec, t, "fisheye")
            ref = cv2.fisheye.projectPoints(X[:, None], rvec, t, K_FISH, FISHEYE, alpha=alpha)[0].reshape(-1, 2)
            ours = project_points(X, rvec_to_matrix(rvec), t, K, FISHEYE, "fisheye")
            worst = max(worst, np.abs(ours - ref).max())
    assert worst < 1e-9, worst


def test_bottom_row_of_K_is_not_read_with_a_lens():
    X, R, t = torch.rand(5, 3, dtype=F64), torch.eye(3, dtype=F64), torch.tensor([0.0, 0, 4], dtype=F64)
    K = torch.from_numpy(K_PIN)
    K_odd = K.clone()
    K_odd[2] = torch.tensor([0.3, -2.0, 7.0])
    D = torch.from_numpy(PINHOLE[:5])
    torch.testing.assert_close(project_points(X, R, t, K_odd, D), project_points(X, R, t, K, D), rtol=0, atol=0)
    # Zero coefficients are the plain pinhole.
    torch.testing.assert_close(project_points(X, R, t, K, torch.zeros(4, dtype=F64)), project_points(X, R, t, K))


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_undistort_inverts_distort_and_matches_opencv(model):
    rng = np.random.default_rng(2)
    K, D = (K_PIN, PINHOLE) if model == "pinhole" else (K_FISH, FISHEYE)
    rvec, t = random_pose(rng)
    X = points_across_image(rng, K, 300, rvec, t, model)
    pix = project_points(X, rvec_to_matrix(rvec), t, K, D, model)
    xc = X @ rvec_to_matrix(rvec).T + t
    n_true = xc[:, :2] / xc[:, 2:]
    nd = (pix - K[:2, 2]) / np.diag(K)[:2]
    ours = undistort(torch.from_numpy(nd), torch.from_numpy(D), model).numpy()
    assert np.abs(ours - n_true).max() < 1e-12 * (1 + np.abs(n_true).max())
    if model == "pinhole":
        ref = cv2.undistortPoints(pix[:, None], K, D, criteria=CRIT).reshape(-1, 2)
    else:
        ref = cv2.fisheye.undistortPoints(pix[:, None], K, D, criteria=CRIT).reshape(-1, 2)
    assert np.abs(ours - ref).max() < 1e-9, np.abs(ours - ref).max()
    # Batched coefficients broadcast against the points, and round trip both ways.
    Db = torch.from_numpy(np.stack([D, D * 0.5]))
    n = torch.from_numpy(n_true)
    back = undistort(distort(n, Db, model), Db, model)
    assert back.shape == (2, len(n), 2)
    torch.testing.assert_close(back, n.expand(2, -1, -1), rtol=0, atol=1e-12)


def test_undistort_flags_points_it_cannot_invert():
    # x (1 - x^2 / 2) peaks at x = sqrt(2/3), xd = 0.544: a larger distorted radius has no
    # preimage on the lens, only spurious roots (x = -2 for xd = 2: the point turned through
    # the centre).
    k = torch.tensor([-0.5, 0.0, 0.0, 0.0], dtype=F64)
    nd = torch.tensor([[0.3, 0.2], [2.0, 0.0], [0.5, 0.0], [-0.6, 0.0]], dtype=F64)
    n = undistort(nd, k)
    assert torch.isfinite(n[[0, 2]]).all() and torch.isnan(n[[1, 3]]).all()
    torch.testing.assert_close(distort(n[[0, 2]], k), nd[[0, 2]])
    assert 0.5 < n[2, 0] < math.sqrt(2 / 3)


def fisheye_points():
    """Points at r = 0, next to it, on both sides of the series threshold, and far out."""
    r = torch.tensor([0.0, 1e-9, 1e-4, 0.1, 0.316, 0.3163, 0.5, 2.0], dtype=F64)
    ang = torch.linspace(0.3, 5.0, len(r), dtype=F64)
    return torch.stack([r * ang.cos(), r * ang.sin()], -1)


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_distort_gradcheck(model):
    if model == "pinhole":
        n = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.6, 0.45], [1e-7, 2e-7]], dtype=F64)
        coeffs = [torch.from_numpy(PINHOLE[:k]) for k in DISTORTION_LENGTHS["pinhole"]]
    else:
        n, coeffs = fisheye_points(), [torch.from_numpy(FISHEYE)]
    for c in coeffs:
        args = (n.clone().requires_grad_(), c.clone().requires_grad_())
        assert gradcheck(lambda a, b: distort(a, b, model), args)
        assert gradgradcheck(lambda a, b: distort(a, b, model), args)
        nd, J = distort_with_jacobian(n, c, model)
        J_auto = torch.autograd.functional.jacobian(lambda a: distort(a, c, model).sum(0), n).permute(1, 0, 2)
        torch.testing.assert_close(J, J_auto, rtol=1e-13, atol=1e-15)
        assert gradcheck(lambda a, b: distort_with_jacobian(a, b, model)[1], args)


def test_fisheye_is_smooth_through_the_axis():
    """At r = 0 the value is n, the Jacobian the identity and the Hessian zero, and nearby
    points agree with the second-order expansion to rounding (no NaN, no cancellation)."""
    c = torch.from_numpy(FISHEYE).requires_grad_()
    n0 = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    nd, J = distort_with_jacobian(n0, c, "fisheye")
    torch.testing.assert_close(J[0], torch.eye(2, dtype=F64), rtol=0, atol=0)
    (g,) = torch.autograd.grad(nd.sum(), n0, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), n0)
    assert torch.isfinite(h).all() and h.abs().max() == 0
    n = torch.tensor([[3e-5, -4e-5]], dtype=F64)
    # atan(r)/r (1 + k1 theta^2) ~ 1 + (k1 - 1/3) r^2 to O(r^4) = 1e-18 here.
    expect = n * (1 + (FISHEYE[0] - 1 / 3) * (n * n).sum())
    torch.testing.assert_close(distort(n, c.detach(), "fisheye"), expect, rtol=1e-16, atol=0)


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_undistort_gradients_are_those_of_the_inverse(model):
    c = torch.from_numpy(PINHOLE[:8] if model == "pinhole" else FISHEYE).requires_grad_()
    nd = torch.tensor([[0.2, -0.1], [0.5, 0.35], [0.0, 0.0]], dtype=F64, requires_grad=True)
    assert gradcheck(lambda a, b: undistort(a, b, model), (nd, c), atol=1e-7)


def test_project_points_gradcheck_with_lens():
    rng = np.random.default_rng(3)
    rvec, t = random_pose(rng)
    X = torch.from_numpy(points_across_image(rng, K_PIN, 6, rvec, t)[:-2])
    R = rvec_to_matrix(torch.from_numpy(rvec))
    args = [a.clone().requires_grad_() for a in (X, R, torch.from_numpy(t), torch.from_numpy(K_PIN))]
    for model, D in (("pinhole", PINHOLE), ("fisheye", FISHEYE)):
        d = torch.from_numpy(D).requires_grad_()
        assert gradcheck(lambda *a: project_points(*a, camera_model=model), (*args, d))


ANGLES = [0.0, 1e-12, 1e-9, 1e-6, 1e-3, 0.5, 2.0, 2.1, math.pi - 1e-3, math.pi - 1e-6, math.pi - 1e-9, math.pi]


def test_rodrigues_matches_cv2():
    rng = np.random.default_rng(4)
    axes = rng.normal(size=(len(ANGLES), 3))
    rvecs = axes / np.linalg.norm(axes, axis=1, keepdims=True) * np.array(ANGLES)[:, None]
    R_cv = np.stack([cv2.Rodrigues(r)[0] for r in rvecs])
    np.testing.assert_allclose(rvec_to_matrix(rvecs), R_cv, rtol=0, atol=1e-15)
    torch.testing.assert_close(rvec_to_matrix(torch.from_numpy(rvecs)), torch.from_numpy(R_cv), rtol=0, atol=1e-15)
    # The logarithm recovers the vector at every angle (at pi exactly, up to its sign) ...
    back = matrix_to_rvec(R_cv)
    err = np.minimum(np.abs(back - rvecs).max(1), np.abs(back + rvecs).max(1))
    assert err.max() < 1e-14, err
    np.testing.assert_allclose(back[:-1], rvecs[:-1], rtol=0, atol=1e-14)
    # ... and agrees with cv2.Rodrigues where that is exact: OpenCV rounds angles < 1e-5 to 0
    # and, within 1e-5 of pi, takes the axis' sign from R's entries alone.
    r_cv = np.stack([cv2.Rodrigues(R)[0].ravel() for R in R_cv])
    mid = (np.array(ANGLES) >= 1e-3) & (np.array(ANGLES) <= math.pi - 1e-3)
    np.testing.assert_allclose(back[mid], r_cv[mid], rtol=0, atol=1e-12)
    torch.testing.assert_close(matrix_to_rvec(torch.from_numpy(R_cv)), torch.from_numpy(back), rtol=0, atol=0)


def test_rodrigues_gradcheck():
    rng = np.random.default_rng(5)
    axis = torch.from_numpy(rng.normal(size=3))
    axis = axis / axis.norm()
    for angle in (0.0, 1e-9, 0.05, 0.7, 2.0, 2.2, math.pi - 0.01):
        r = (axis * angle).requires_grad_()
        assert gradcheck(rvec_to_matrix, (r,))
        R = rvec_to_matrix(axis * angle).requires_grad_()
        assert gradcheck(matrix_to_rvec, (R,))
    # Finite gradients at pi exactly (where the log map is not differentiable).
    R = rvec_to_matrix(axis * math.pi).requires_grad_()
    matrix_to_rvec(R).sum().backward()
    assert torch.isfinite(R.grad).all()


def test_opengl_conventions_are_differentiable():
    rng = np.random.default_rng(6)
    R = rvec_to_matrix(torch.from_numpy(rng.normal(size=(2, 3)))).requires_grad_()
    t = torch.from_numpy(rng.normal(size=(2, 3))).requires_grad_()
    assert gradcheck(opencv_to_wcpa, (R, t))
    R_t = opencv_to_wcpa(R, t).detach().requires_grad_()
    assert gradcheck(wcpa_to_opencv, (R_t,))
    # A column-vector OpenGL model-view matrix M is the transpose of the row-vector R_t.
    M = R_t.detach().transpose(-1, -2)
    R2, t2 = wcpa_to_opencv(M.transpose(-1, -2))
    torch.testing.assert_close(R2, R.detach())
    torch.testing.assert_close(t2, t.detach())


def test_bad_distortion_arguments():
    n = torch.zeros(3, 2, dtype=F64)
    for D in (3, 6, 14):
        with pytest.raises(ValueError, match=r"needs D in \(4, 5, 8, 12\) coefficients \(k1 k2 p1 p2"):
            distort(n, torch.zeros(D, dtype=F64))
    with pytest.raises(ValueError, match=r"fisheye distortion needs D in \(4,\)"):
        distort(n, torch.zeros(5, dtype=F64), "fisheye")
    with pytest.raises(ValueError, match="camera_model must be one of"):
        distort(n, torch.zeros(4, dtype=F64), "kannala")
    with pytest.raises(ValueError, match="camera_model must be one of"):
        project_points(np.zeros((1, 3)), np.eye(3), np.ones(3), np.eye(3), camera_model="ortho")
    with pytest.raises(TypeError, match="float32 or float64"):
        check_distortion(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch tensor"):
        check_distortion(np.zeros(4))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        check_distortion(torch.tensor(0.1))
    with pytest.raises(ValueError, match=r"12\) coefficients"):
        undistort(n, torch.zeros(14, dtype=F64))


def test_geometry_imports_without_the_solver():
    """The ops' wrappers import geometry.distortion at load time, and the reference solver
    imports the ops: the geometry layer must not import the reference back (a cycle)."""
    code = ("import sys, pyfacepnp.geometry.distortion; "
            "assert 'pyfacepnp.reference' not in sys.modules, sorted(m for m in sys.modules if 'reference' in m)")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)
