"""Pose from the two branches: unwarp the landmarks, weighted differentiable PnP, camera mesh."""

from __future__ import annotations

from typing import NamedTuple

import torch

import pyfacepnp
from pyfacepnp.geometry.transforms import transform_points


class PoseOutput(NamedTuple):
    """Result of :func:`solve_pose`.

    Attributes:
        R: ``(B, 3, 3)``; t: ``(B, 3)`` (OpenCV convention, x_cam = R X + t).
        status: ``(B,)`` int :class:`pyfacepnp.PnPStatus` values.
        landmarks_image: ``(B, N, 2)`` the landmarks unwarped to frame pixels.
        weights: ``(B, N, 2)`` or ``(B, N)`` the PnP weights used (1/sigma^2 in frame px).
        camera_vertices: ``(B, N, 3)`` predicted vertices under the solved pose.
    """

    R: torch.Tensor
    t: torch.Tensor
    status: torch.Tensor
    landmarks_image: torch.Tensor
    weights: torch.Tensor
    camera_vertices: torch.Tensor


def pnp_weights(log_var: torch.Tensor, crop_affine: torch.Tensor) -> torch.Tensor:
    """1/sigma^2 weights in frame pixels from crop-pixel log-variances.

    The crop is a similarity of the frame with scale ``s`` (crop px per frame px), so a
    crop-space sigma is ``sigma / s`` in the frame and the weight scales by ``s^2``.
    """
    lin = crop_affine[..., :, :2]
    scale2 = (lin[..., 0, 0] * lin[..., 1, 1] - lin[..., 0, 1] * lin[..., 1, 0]).abs()
    w = torch.exp(-log_var)
    return w * scale2.reshape(scale2.shape + (1,) * (w.dim() - scale2.dim()))


def solve_pose(vertices: torch.Tensor, landmarks_crop: torch.Tensor, log_var: torch.Tensor | None,
               crop_affine: torch.Tensor, K: torch.Tensor, *, max_iterations: int = 50,
               double: bool = True) -> PoseOutput:
    """Pose of predicted canonical vertices from their predicted crop landmarks.

    Landmarks are mapped back to frame pixels with ``warp_points(lm, invert_affine(A))``
    and ``pyfacepnp.solve_pnp`` runs with the frame intrinsics ``K`` and weights 1/sigma^2
    (uniform when ``log_var`` is None). Gradients reach vertices, landmarks, log-variances
    (and the affine) through the op's implicit backward. Problems that did not converge
    come back with their status set; their gradients are zero by the op's contract.

    Args:
        vertices: ``(B, N, 3)`` canonical vertices (metres).
        landmarks_crop: ``(B, N, 2)`` crop pixels.
        log_var: ``(B, N, 2)``, ``(B, N)`` crop px^2, or None.
        crop_affine: ``(B, 2, 3)`` frame -> crop affine.
        K: ``(B, 3, 3)`` frame intrinsics.
        max_iterations: LM iterations cap.
        double: solve in float64 (outputs are cast back to the input dtype).

    Returns:
        :class:`PoseOutput`.

    Example:
        >>> # out = solve_pose(pred["vertices"], pred["landmarks"], pred["log_var"], A, K)
        >>> # out.R, out.t, out.camera_vertices
    """
    dtype = vertices.dtype
    work = torch.float64 if double else dtype
    lm_img = pyfacepnp.warp_points(landmarks_crop.to(work), pyfacepnp.invert_affine(crop_affine.to(work)))
    weights = None
    if log_var is not None:
        weights = pnp_weights(log_var.to(work), crop_affine.to(work))
    res = pyfacepnp.solve_pnp(vertices.to(work), lm_img, K.to(work), weights,
                              max_iterations=max_iterations)
    R, t = res.R.to(dtype), res.t.to(dtype)
    w_out = weights.to(dtype) if weights is not None else torch.ones_like(lm_img[..., 0]).to(dtype)
    return PoseOutput(R, t, res.status, lm_img.to(dtype), w_out, transform_points(vertices, R, t))
