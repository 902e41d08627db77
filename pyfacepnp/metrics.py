"""Evaluation metrics of the WCPA track-2 challenge, batched in torch.

All functions take poses in the OpenCV convention (``x_cam = R @ X + t``, metres) and
canonical vertices in metres, and report millimetres or degrees. The WCPA score is
invariant to the camera-axis convention (it only measures distances in camera space), so
poses converted with :func:`pyfacepnp.geometry.conventions.wcpa_to_opencv` score exactly
as the challenge's ``R_t`` would. Transforms and the rotation error are those of
:mod:`pyfacepnp.geometry`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from pyfacepnp.geometry.rotation import rotation_error_deg as _rotation_error_deg
from pyfacepnp.geometry.transforms import transform_points

__all__ = [
    "WCPAScore",
    "wcpa_score",
    "wcpa_terms",
    "rotation_error_deg",
    "translation_error_mm",
    "vertex_error_mm",
]


def _check(name: str, x, trailing: tuple) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < len(trailing) or any(
        w is not None and s != w for s, w in zip(x.shape[-len(trailing):], trailing)
    ):
        want = "(..., " + ", ".join("N" if w is None else str(w) for w in trailing) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")


def _mean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=-1).mean(dim=-1)


class WCPAScore(NamedTuple):
    """Per-sample terms of the WCPA score, in millimetres, each of batch shape ``(...)``."""

    score: torch.Tensor  #: ``d12 + d13 + 10 * d14``
    d12: torch.Tensor  #: GT shape in GT pose vs predicted shape in predicted pose
    d13: torch.Tensor  #: GT shape in GT pose vs GT shape in predicted pose (pose error)
    d14: torch.Tensor  #: GT shape in GT pose vs predicted shape in GT pose (shape error)


def wcpa_terms(pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t) -> WCPAScore:
    """Per-sample WCPA terms without reduction (see :func:`wcpa_score`).

    Returns:
        :class:`WCPAScore` of ``(...)`` tensors in millimetres.
    """
    _check("pred_vertices", pred_vertices, (None, 3))
    _check("gt_vertices", gt_vertices, (None, 3))
    _check("pred_R", pred_R, (3, 3))
    _check("gt_R", gt_R, (3, 3))
    _check("pred_t", pred_t, (3,))
    _check("gt_t", gt_t, (3,))
    if pred_vertices.shape[-2] != gt_vertices.shape[-2]:
        raise ValueError(
            "pred_vertices and gt_vertices must have the same number of vertices, got "
            f"{tuple(pred_vertices.shape)} and {tuple(gt_vertices.shape)}"
        )
    x1 = transform_points(gt_vertices, gt_R, gt_t)
    x2 = transform_points(pred_vertices, pred_R, pred_t)
    x3 = transform_points(gt_vertices, pred_R, pred_t)
    x4 = transform_points(pred_vertices, gt_R, gt_t)
    d12 = 1000.0 * _mean_distance(x1, x2)
    d13 = 1000.0 * _mean_distance(x1, x3)
    d14 = 1000.0 * _mean_distance(x1, x4)
    return WCPAScore(d12 + d13 + 10.0 * d14, d12, d13, d14)


def wcpa_score(pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t, reduction: str = "mean"):
    """The WCPA track-2 score in millimetres (lower is better), with no alignment.

    With ``X1`` the GT shape under the GT pose, ``X2`` the predicted shape under the
    predicted pose, ``X3`` the GT shape under the predicted pose, ``X4`` the predicted
    shape under the GT pose and ``d`` the mean per-vertex Euclidean distance::

        score = 1000 * mean_over_samples( d(X1, X2) + d(X1, X3) + 10 * d(X1, X4) )

    Args:
        pred_vertices: ``(..., N, 3)`` predicted canonical vertices (metres).
        pred_R: ``(..., 3, 3)``; pred_t: ``(..., 3)`` predicted OpenCV pose.
        gt_vertices: ``(..., N, 3)``; gt_R: ``(..., 3, 3)``; gt_t: ``(..., 3)`` ground truth.
        reduction: ``"mean"`` (a scalar over all samples) or ``"none"`` (per sample).

    Returns:
        Scalar tensor (``"mean"``) or ``(...)`` tensor (``"none"``), millimetres.

    Example:
        >>> V = torch.zeros(1, 4, 3); I = torch.eye(3)[None]; t = torch.zeros(1, 3)
        >>> wcpa_score(V + torch.tensor([0.0, 0.0, 0.001]), I, t, V, I, t)  # 1 mm shape error
        tensor(11.)
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    score = wcpa_terms(pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t).score
    return score.mean() if reduction == "mean" else score


def rotation_error_deg(pred_R: torch.Tensor, gt_R: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations in degrees (the ``atan2`` formula of
    :func:`pyfacepnp.geometry.rotation.rotation_error_deg`, accurate for small angles too).

    Args:
        pred_R, gt_R: ``(..., 3, 3)`` rotation matrices (broadcast).

    Returns:
        ``(...)`` angles in ``[0, 180]``.

    Example:
        >>> Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
        >>> rotation_error_deg(Rz, torch.eye(3))
        tensor(90.)
    """
    _check("pred_R", pred_R, (3, 3))
    _check("gt_R", gt_R, (3, 3))
    return _rotation_error_deg(pred_R, gt_R)


def translation_error_mm(pred_t: torch.Tensor, gt_t: torch.Tensor) -> torch.Tensor:
    """Euclidean translation error ``1000 * |t_pred - t_gt|`` in millimetres, ``(...)``."""
    _check("pred_t", pred_t, (3,))
    _check("gt_t", gt_t, (3,))
    return 1000.0 * (pred_t - gt_t).norm(dim=-1)


def vertex_error_mm(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor) -> torch.Tensor:
    """Mean per-vertex Euclidean distance of canonical shapes (no pose, no alignment), mm.

    Args:
        pred_vertices, gt_vertices: ``(..., N, 3)`` in metres.

    Returns:
        ``(...)`` millimetres.
    """
    _check("pred_vertices", pred_vertices, (None, 3))
    _check("gt_vertices", gt_vertices, (None, 3))
    return 1000.0 * _mean_distance(pred_vertices, gt_vertices)
