"""WCPA metric and pose/shape errors against hand-computed values."""

import math

import pytest
import torch

from pyfacepnp.metrics import (
    rotation_error_deg,
    translation_error_mm,
    vertex_error_mm,
    wcpa_score,
    wcpa_terms,
)


def rot_z(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


def two_point_case():
    # Two vertices; GT pose identity + t = (0, 0, 0.5).
    gt_v = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]], dtype=torch.float64)
    gt_R, gt_t = torch.eye(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    return gt_v, gt_R, gt_t


def test_shape_error_only_weighs_eleven_times():
    gt_v, R, t = two_point_case()
    pred_v = gt_v + torch.tensor([0.0, 0.002, 0.0], dtype=torch.float64)  # 2 mm everywhere
    terms = wcpa_terms(pred_v, R, t, gt_v, R, t)
    # d12 = 2 (shape error seen under the GT pose), d13 = 0 (same pose), d14 = 2.
    assert terms.d12.item() == pytest.approx(2.0)
    assert terms.d13.item() == pytest.approx(0.0)
    assert terms.d14.item() == pytest.approx(2.0)
    assert wcpa_score(pred_v, R, t, gt_v, R, t).item() == pytest.approx(22.0)


def test_translation_error_only():
    gt_v, R, t = two_point_case()
    pred_t = t + torch.tensor([0.003, 0.0, 0.004], dtype=torch.float64)  # 5 mm
    terms = wcpa_terms(gt_v, R, pred_t, gt_v, R, t)
    assert terms.d12.item() == pytest.approx(5.0)
    assert terms.d13.item() == pytest.approx(5.0)
    assert terms.d14.item() == pytest.approx(0.0)
    assert terms.score.item() == pytest.approx(10.0)
    assert translation_error_mm(pred_t, t).item() == pytest.approx(5.0)


def test_rotation_and_shape_combined_by_hand():
    gt_v, R, t = two_point_case()
    # Predicted pose: 90 deg about z. Vertex 0 sits on the axis (does not move), vertex 1
    # (0.01, 0, 0) -> (0, 0.01, 0): moves sqrt(2) cm.
    pred_R = rot_z(90.0)
    # Predicted shape: vertex 1 moved by +1 cm in x.
    pred_v = gt_v.clone()
    pred_v[1, 0] = 0.02
    terms = wcpa_terms(pred_v, pred_R, t, gt_v, R, t)
    # X1 = {(0,0,.5), (.01,0,.5)}; X2 = {(0,0,.5), (0,.02,.5)}: d = (0 + sqrt(.01^2+.02^2))/2
    assert terms.d12.item() == pytest.approx(1000 * math.sqrt(0.0001 + 0.0004) / 2)
    assert terms.d13.item() == pytest.approx(1000 * math.sqrt(0.0002) / 2)
    assert terms.d14.item() == pytest.approx(1000 * 0.01 / 2)
    expected = terms.d12.item() + terms.d13.item() + 10 * terms.d14.item()
    assert wcpa_score(pred_v, pred_R, t, gt_v, R, t).item() == pytest.approx(expected)
    assert expected == pytest.approx(11.1803398875 + 7.0710678119 + 50.0)
    assert rotation_error_deg(pred_R, R).item() == pytest.approx(90.0)


def test_batched_mean_and_none():
    gt_v, R, t = two_point_case()
    gt_v = gt_v.expand(3, 2, 3)
    offsets = torch.tensor([0.0, 0.001, 0.003], dtype=torch.float64)
    pred_v = gt_v + offsets[:, None, None] * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    per = wcpa_score(pred_v, R, t, gt_v, R, t, reduction="none")
    assert per.shape == (3,)
    # Offsets of 0, 1 and 3 mm in z: d12 = d14 = offset, d13 = 0 -> 11 * offset.
    assert per.tolist() == pytest.approx([0.0, 11.0, 33.0])
    assert wcpa_score(pred_v, R, t, gt_v, R, t).item() == pytest.approx(44.0 / 3)
    assert vertex_error_mm(pred_v, gt_v).tolist() == pytest.approx([0.0, 1.0, 3.0])


def test_rotation_error_values_and_clamping():
    assert rotation_error_deg(rot_z(30.0), rot_z(-15.0)).item() == pytest.approx(45.0)
    assert rotation_error_deg(rot_z(180.0), torch.eye(3, dtype=torch.float64)).item() == pytest.approx(180.0)
    # Round-off pushing the trace above 3 must not give NaN.
    R = torch.eye(3, dtype=torch.float32) * (1 + 1e-6)
    err = rotation_error_deg(R, torch.eye(3))
    assert torch.isfinite(err) and err.item() < 0.2


def test_convention_invariance():
    # Flipping the camera y and z axes (OpenCV <-> OpenGL) must not change the score.
    g = torch.Generator().manual_seed(0)
    gt_v = torch.randn(5, 20, 3, generator=g, dtype=torch.float64) * 0.05
    pred_v = gt_v + 0.002 * torch.randn(5, 20, 3, generator=g, dtype=torch.float64)
    gt_R = torch.linalg.qr(torch.randn(5, 3, 3, generator=g, dtype=torch.float64))[0]
    pred_R = torch.linalg.qr(torch.randn(5, 3, 3, generator=g, dtype=torch.float64))[0]
    gt_t, pred_t = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    F = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    a = wcpa_score(pred_v, pred_R, pred_t, gt_v, gt_R, gt_t, reduction="none")
    b = wcpa_score(pred_v, F @ pred_R, pred_t @ F, gt_v, F @ gt_R, gt_t @ F, reduction="none")
    torch.testing.assert_close(a, b)


def test_bad_input_errors():
    v = torch.zeros(2, 10, 3)
    R, t = torch.eye(3).expand(2, 3, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"pred_vertices must have shape \(\.\.\., N, 3\), got \(2, 10, 2\)"):
        wcpa_score(torch.zeros(2, 10, 2), R, t, v, R, t)
    with pytest.raises(ValueError, match="same number of vertices"):
        wcpa_score(torch.zeros(2, 9, 3), R, t, v, R, t)
    with pytest.raises(ValueError, match=r"gt_t must have shape"):
        wcpa_score(v, R, t, v, R, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="pred_R must be a torch.Tensor"):
        rotation_error_deg(R.numpy(), R)
    with pytest.raises(ValueError, match="reduction"):
        wcpa_score(v, R, t, v, R, t, reduction="sum")
