"""Affine warps of 2D landmarks (crop <-> image) with gradients to points and affine."""

from __future__ import annotations

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
    p = points.expand(*batch, n, 2).reshape(-1, n, 2)
    a = affine.expand(*batch, 2, 3).reshape(-1, 2, 3)
    return ops.warp_points(p, a).reshape(*batch, n, 2)


def invert_affine(affine: torch.Tensor) -> torch.Tensor:
    """Inverse of 2x3 affine transforms, ``(..., 2, 3) -> (..., 2, 3)``, differentiable.

    Raises ``ValueError`` if any linear part is singular (|det| <= 1e-12 times its scale).

    Example:
        >>> A = torch.tensor([[2.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
        >>> invert_affine(A)[..., 2]
        tensor([-0.5000,  0.2500])
        >>> warp_points(warp_points(torch.tensor([[3.0, 5.0]]), A), invert_affine(A))
        tensor([[3., 5.]])
    """
    check_tensor("affine", affine, [2, 3])
    a, b, tx = affine[..., 0, 0], affine[..., 0, 1], affine[..., 0, 2]
    c, d, ty = affine[..., 1, 0], affine[..., 1, 1], affine[..., 1, 2]
    det = a * d - b * c
    scale = affine[..., :, :2].abs().amax(dim=(-1, -2))
    if not torch.compiler.is_compiling() and bool((det.abs() <= 1e-12 * scale * scale).any()):
        raise ValueError("invert_affine: affine has a singular 2x2 linear part")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    row0 = torch.stack([ia, ib, itx], dim=-1)
    row1 = torch.stack([ic, id_, ity], dim=-1)
    return torch.stack([row0, row1], dim=-2)
