"""Evaluation pieces: OpenCV post-hoc PnP, metrics of the table, mesh overlay, image framing."""

import numpy as np
import pytest
import torch

import pyfacepnp
from pyfacepnp.eval.evaluate import METHODS, EvalResult, pose_metrics
from pyfacepnp.draw import draw_mesh
from pyfacepnp.geometry.camera import project_points
from pyfacepnp.models.posthoc import cv2_solve_pnp
from tests.test_model import _face_problem


@pytest.mark.parametrize("method", ["sqpnp", "iterative"])
def test_cv2_posthoc_recovers_exact_pose_and_agrees_with_solve_pnp(method):
    X, R, t, K, A, _ = _face_problem(b=3, n=300, seed=2)
    x = project_points(X, R, t, K)
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    Rc, tc, ok = cv2_solve_pnp(X, x, K, method)
    assert ok.all()
    torch.testing.assert_close(Rc.double(), R, atol=1e-4, rtol=0)
    torch.testing.assert_close(tc.double(), t, atol=1e-5, rtol=0)
    # on noisy points both minimise the same unweighted reprojection error
    Rc, tc, ok = cv2_solve_pnp(X, noisy, K, method)
    ours = pyfacepnp.solve_pnp(X, noisy, K)
    assert ok.all() and (ours.status == 0).all()
    torch.testing.assert_close(tc.double(), ours.t, atol=1e-5, rtol=0)
    torch.testing.assert_close(Rc.double(), ours.R, atol=1e-5, rtol=0)


def test_cv2_posthoc_rejects_unknown_method():
    X, R, t, K, A, _ = _face_problem(b=1, n=10)
    with pytest.raises(ValueError, match="method must be 'sqpnp' or 'iterative'"):
        cv2_solve_pnp(X, project_points(X, R, t, K), K, "epnp")


def test_pose_metrics_zero_at_truth_and_known_offsets():
    X, R, t, K, A, _ = _face_problem(b=2, n=50)
    m = pose_metrics(X, R, t, X, R, t)
    for k in ("wcpa", "rotation_deg", "translation_mm", "vertex_mm"):
        np.testing.assert_allclose(m[k], 0.0, atol=1e-4)
    m = pose_metrics(X, R, t + torch.tensor([0.0, 0.0, 0.01], dtype=t.dtype), X, R, t)
    np.testing.assert_allclose(m["translation_mm"], 10.0, atol=1e-6)
    np.testing.assert_allclose(m["wcpa"], 20.0, atol=1e-6)  # d12 = d13 = 10 mm, d14 = 0


def test_table_lists_every_method_with_its_numbers():
    res = EvalResult(n=2)
    for i, m in enumerate(METHODS):
        res.per_sample[m] = {"wcpa": np.array([10.0 * (i + 1), 10.0 * (i + 1)]),
                             "rotation_deg": np.array([1.0, 3.0]), "translation_mm": np.array([2.0, 2.0]),
                             "vertex_mm": np.array([0.5, 1.5])}
    res.failures = {"b": 1}
    rows = res.table().splitlines()
    assert len(rows) == 2 + len(METHODS)
    assert rows[2].startswith("| trivial baseline") and "| 10.00 | 2.00 | 2.00 | 1.000 | 0/2 |" in rows[2]
    assert rows[4].startswith("| (b)") and rows[4].endswith("| 1/2 |")


def test_draw_mesh_draws_only_along_edges():
    img = np.zeros((40, 40, 3), np.uint8)
    pts = np.array([[5.0, 5.0], [30.0, 5.0], [5.0, 30.0], [np.nan, 1.0]])
    out = draw_mesh(img, pts, np.array([[0, 1, 2], [1, 2, 3]]), color=(255, 0, 0), alpha=1.0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[5, 17, 0] > 200 and out[5, 17, 1] == 0  # on the top edge, red
    assert out[25, 25].sum() == 0  # outside the triangle's edges
    assert (img == 0).all()  # input untouched


def test_frame_from_image_keeps_the_camera_consistent():
    from pyfacepnp.geometry.camera import wcpa_intrinsics
    from pyfacepnp.eval.predict import frame_from_image

    rgb = np.zeros((300, 200, 3), np.uint8)
    frame, K_frame, K_image = frame_from_image(rgb, 150)
    assert frame.shape == (150, 150, 3)
    torch.testing.assert_close(torch.from_numpy(K_frame), torch.from_numpy(wcpa_intrinsics(150)))
    # a 3D point projects to matching pixels in the original image and in the frame
    Xc = np.array([0.03, -0.02, 0.5])
    u_img = (K_image @ Xc)[:2] / Xc[2]
    u_frame = (K_frame @ Xc)[:2] / Xc[2]
    s = 150 / 300
    np.testing.assert_allclose(u_frame, s * (u_img + np.array([50.0, 0.0]) + 0.5) - 0.5, atol=1e-9)
