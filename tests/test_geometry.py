"""WCPA <-> OpenCV pose conversion, checked against the challenge's own projection pipeline."""

import numpy as np
import pytest
import torch

from pyfacepnp.geometry.camera import crop_intrinsics, project_points, resize_affine, wcpa_intrinsics
from pyfacepnp.geometry.conventions import opencv_to_wcpa, wcpa_rotation_from_euler, wcpa_to_opencv


def random_rt(rng, n):
    R_t = np.zeros((n, 4, 4))
    R_t[:, :3, :3] = wcpa_rotation_from_euler(rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.normal(0, 0.08, n))
    R_t[:, 3, :3] = np.stack([rng.normal(0, 0.02, n), rng.normal(0, 0.05, n), rng.normal(-0.53, 0.06, n)], -1)
    R_t[:, 3, 3] = 1.0
    return R_t


def wcpa_pipeline_project(verts, R_t, size=800):
    """The challenge notebook's projection: [v,1] @ R_t @ M_proj @ M1, divide by w, flip y."""
    a = 629.8 / 400.0
    near, far = 0.01, 10.0
    A, B = -(far + near) / (far - near), -2 * far * near / (far - near)
    M_proj = np.array([[a, 0, 0, 0], [0, a, 0, 0], [0, 0, A, -1], [0, 0, B, 0]])  # row-vector GL
    h = size / 2
    M1 = np.array([[h, 0, 0, 0], [0, h, 0, 0], [0, 0, 1, 0], [h, h, 0, 1]])
    homo = np.concatenate([verts, np.ones((len(verts), 1))], 1)
    out = homo @ R_t @ M_proj @ M1
    out = out / out[:, 3:4]
    pts = out[:, :2].copy()
    pts[:, 1] = size - pts[:, 1]
    return pts


def test_projection_matches_challenge_pipeline():
    rng = np.random.default_rng(0)
    verts = rng.normal(0, 0.05, (50, 3))
    for R_t in random_rt(rng, 5):
        R, t = wcpa_to_opencv(R_t)
        ours = project_points(verts, R, t, wcpa_intrinsics())
        np.testing.assert_allclose(ours, wcpa_pipeline_project(verts, R_t), atol=1e-9)


def test_matches_reference_solver_conversion():
    # The challenge's reference code turns cv2.solvePnP output into R_t with
    # R = R_cv.T; R[:, 1:3] *= -1; t[1:] *= -1.
    rng = np.random.default_rng(1)
    R_t = random_rt(rng, 1)[0]
    R, t = wcpa_to_opencv(R_t)
    R_ref = R.T.copy()
    R_ref[:, 1:3] *= -1
    t_ref = t.copy()
    t_ref[1:] *= -1
    np.testing.assert_allclose(R_t[:3, :3], R_ref, atol=1e-12)
    np.testing.assert_allclose(R_t[3, :3], t_ref, atol=1e-12)


def test_round_trip_numpy_and_torch_batched():
    rng = np.random.default_rng(2)
    R_t = random_rt(rng, 6).reshape(2, 3, 4, 4)
    R, t = wcpa_to_opencv(R_t)
    assert R.shape == (2, 3, 3, 3) and t.shape == (2, 3, 3)
    np.testing.assert_allclose(opencv_to_wcpa(R, t), R_t, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    # OpenCV camera: the face is in front (z > 0); WCPA t_z < 0.
    assert (t[..., 2] > 0).all() and (R_t[..., 3, 2] < 0).all()
    Rt_torch = torch.from_numpy(R_t).float()
    Rtc, ttc = wcpa_to_opencv(Rt_torch)
    assert isinstance(Rtc, torch.Tensor) and Rtc.dtype == torch.float32
    torch.testing.assert_close(Rtc, torch.from_numpy(R).float())
    torch.testing.assert_close(opencv_to_wcpa(Rtc, ttc), Rt_torch)


def test_euler_directions():
    # Positive yaw turns the face (+z) towards +x: the nose moves to the image's right.
    nose = np.array([[0.0, 0.0, 0.05]])
    K = wcpa_intrinsics()
    base = np.eye(4)
    base[3, :3] = [0, 0, -0.5]
    for (pitch, yaw, roll), axis, sign in [((0, 0.3, 0), 0, +1), ((0.3, 0, 0), 1, +1)]:
        R_t = base.copy()
        R_t[:3, :3] = wcpa_rotation_from_euler(pitch, yaw, roll)
        R, t = wcpa_to_opencv(R_t)
        R0, t0 = wcpa_to_opencv(base)
        d = project_points(nose, R, t, K) - project_points(nose, R0, t0, K)
        assert np.sign(d[0, axis]) == sign  # pitch > 0: the nose moves down in the image
    np.testing.assert_allclose(wcpa_rotation_from_euler(0.1, 0.2, 0.3) @ wcpa_rotation_from_euler(0.1, 0.2, 0.3).T,
                               np.eye(3), atol=1e-12)


def test_intrinsics_resize_and_crop():
    K = wcpa_intrinsics()
    assert K[0, 0] == 629.8 and K[0, 2] == 400.0
    K2 = wcpa_intrinsics(400)
    # Pixel-centre convention: 800 px -> 400 px maps x to (x + 0.5) / 2 - 0.5.
    assert K2[0, 0] == pytest.approx(314.9) and K2[0, 2] == pytest.approx(199.75)
    pts = np.array([[0.0, 0.0], [799.0, 799.0]])
    A = resize_affine(800, 400)
    np.testing.assert_allclose(pts @ A[:, :2].T + A[:, 2], [[-0.25, -0.25], [399.25, 399.25]])
    # Projecting with K_crop == warping the projection by the crop affine.
    rng = np.random.default_rng(3)
    verts = rng.normal(0, 0.05, (10, 3))
    R, t = wcpa_to_opencv(random_rt(rng, 1)[0])
    crop = np.array([[0.5, 0.1, -20.0], [-0.1, 0.5, 30.0]])
    p = project_points(verts, R, t, K)
    np.testing.assert_allclose(project_points(verts, R, t, crop_intrinsics(K, crop)), p @ crop[:, :2].T + crop[:, 2],
                               atol=1e-9)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"R_t must have shape \(\.\.\., 4, 4\), got \(3, 4\)"):
        wcpa_to_opencv(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="R and t must share a batch shape"):
        opencv_to_wcpa(np.zeros((2, 3, 3)), np.zeros((3, 3)))
    with pytest.raises(TypeError, match="R_t must be a numpy array or torch tensor"):
        wcpa_to_opencv([[1.0]])
