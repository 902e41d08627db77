"""Affine warps of 2D landmarks (crop <-> image) with gradients to points and affine."""

from __future__ import annotations

import math

import torch

from pyfacepnp._ext import ops
from pyfacepnp.ops._checks import broadcast_batch, check_same, check_tensor


def warp_points(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Apply a 2x3 affine transform to 2D points: ``y = A[:, :2] @ p + A[:, 2]``.

    Used to map landmarks between the full image and a face crop: with ``A`` the
    image-to-crop affine, ``warp_points(p_image, A)`` gives crop pixels and
    ``warp_points(p_crop, invert_affine(A))`` maps them back. Differentiable with
    respect to both inputs; leading batch dimensions broadcast.

    Args:
        points: ``(..., N, 2)`` pixel coordinates.
        affine: ``(..., 2, 3)`` affine matrices.

    Returns:
        ``(..., N, 2)`` warped points, batch shape broadcast from both inputs.

    Example:
        >>> A = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]])
        >>> warp_points(torch.tensor([[1.0, 1.0]]), A)
        tensor([[3., 1.]])
    """
    check_tensor("points", points, ["N", 2])
    check_tensor("affine", affine, [2, 3])
    check_same(["points", "affine"], [points, affine])
    batch = broadcast_batch([("points", points.shape[:-2]), ("affine", affine.shape[:-2])])
    n = points.shape[-2]
    b = math.prod(batch)  # explicit: with N = 0 a -1 in reshape would be ambiguous
    p = points.expand(*batch, n, 2).reshape(b, n, 2)
    a = affine.expand(*batch, 2, 3).reshape(b, 2, 3)
    return ops.warp_points(p, a).reshape(*batch, n, 2)


def invert_affine(affine: torch.Tensor) -> torch.Tensor:
    """Inverse of 2x3 affine transforms, ``(..., 2, 3) -> (..., 2, 3)``, differentiable.

    Computed in float64 whatever the input dtype (a float32 determinant overflows for
    entries beyond ~1e19) and returned in the input dtype. Raises ``ValueError`` if an affine
    is not finite, its linear part is singular (|det| <= 1e-12 times its scale squared), or
    its inverse does not fit the dtype; the message gives the first such index. (Under
    ``torch.compile`` these data-dependent checks are skipped.)

    Example:
        >>> A = torch.tensor([[2.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
        >>> invert_affine(A)[..., 2]
        tensor([-0.5000,  0.2500])
        >>> warp_points(warp_points(torch.tensor([[3.0, 5.0]]), A), invert_affine(A))
        tensor([[3., 5.]])
    """
    check_tensor("affine", affine, [2, 3])
    A = affine.to(torch.float64)
    a, b, tx = A[..., 0, 0], A[..., 0, 1], A[..., 0, 2]
    c, d, ty = A[..., 1, 0], A[..., 1, 1], A[..., 1, 2]
    # Scaled by the largest entry first: the determinant of a 1e200-scale affine stays finite.
    scale = A[..., :, :2].abs().amax(dim=(-1, -2))
    inv_scale = 1.0 / torch.where(scale > 0, scale, torch.ones_like(scale))
    det_n = (a * inv_scale) * (d * inv_scale) - (b * inv_scale) * (c * inv_scale)
    checking = not torch.compiler.is_compiling()
    if checking:
        _raise_at("is not finite", ~torch.isfinite(A).flatten(-2).all(-1))
        _raise_at("has a singular 2x2 linear part", (scale == 0) | (det_n.abs() <= 1e-12))
    ia = (d * inv_scale) / det_n * inv_scale
    ib = -(b * inv_scale) / det_n * inv_scale
    ic = -(c * inv_scale) / det_n * inv_scale
    id_ = (a * inv_scale) / det_n * inv_scale
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    row0 = torch.stack([ia, ib, itx], dim=-1)
    row1 = torch.stack([ic, id_, ity], dim=-1)
    out = torch.stack([row0, row1], dim=-2).to(affine.dtype)
    if checking:
        _raise_at(f"has an inverse that does not fit {affine.dtype}",
                  ~torch.isfinite(out).flatten(-2).all(-1))
    return out


def _raise_at(what: str, bad: torch.Tensor) -> None:
    """ValueError naming the first batch index where ``bad`` holds."""
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0]) if bad.dim() else ()
        raise ValueError(f"invert_affine: the affine at batch index {index} {what}")
