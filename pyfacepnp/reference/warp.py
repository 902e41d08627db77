"""Affine warp of 2D points in plain torch (reference for ``pyfacepnp.warp_points``)."""

from __future__ import annotations

import torch


def warp_points_reference(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """``y = A[:, :2] @ p + A[:, 2]`` for ``points (..., N, 2)`` and ``affine (..., 2, 3)``.

    Leading dims broadcast; differentiable with respect to both inputs by autograd.

    Example:
        >>> A = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]])
        >>> warp_points_reference(torch.tensor([[1.0, 1.0]]), A)
        tensor([[3., 1.]])
    """
    return points @ affine[..., :, :2].transpose(-1, -2) + affine[..., None, :, 2]
