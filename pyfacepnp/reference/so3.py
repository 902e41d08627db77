"""Rotations in plain torch: skew matrices and the SO(3) exponential (Rodrigues)."""

from __future__ import annotations

import torch


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``[v]x`` with ``[v]x @ u = v x u``.

    Args:
        v: ``(..., 3)`` vectors.

    Returns:
        ``(..., 3, 3)`` skew-symmetric matrices.

    Example:
        >>> skew(torch.tensor([0.0, 0.0, 1.0])) @ torch.tensor([1.0, 0.0, 0.0])
        tensor([0., 1., 0.])
    """
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``exp([w]x)`` from axis-angle vectors (Rodrigues' formula).

    Small angles use Taylor series, selected with ``torch.where`` on a clamped angle so
    that both branches (and their gradients) stay finite at ``w = 0``.

    Args:
        w: ``(..., 3)`` axis-angle vectors (radians).

    Returns:
        ``(..., 3, 3)`` rotation matrices.

    Example:
        >>> R = so3_exp(torch.tensor([0.0, 0.0, torch.pi / 2]))
        >>> torch.allclose(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
        True
    """
    theta2 = (w * w).sum(-1)
    small = theta2 < (1e-6 if w.dtype == torch.float32 else 1e-12) ** 0.5
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(theta)) / safe2)
    k = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotation_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians) between rotations, ``(..., 3, 3) x2 -> (...)``.

    Uses ``atan2(|skew part|, trace part)``, accurate for small and large angles.

    Example:
        >>> R = so3_exp(torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64))
        >>> float(rotation_angle(R, torch.eye(3, dtype=torch.float64)))
        0.3
    """
    d = R1 @ R2.transpose(-1, -2)
    tr = d.diagonal(dim1=-2, dim2=-1).sum(-1)
    v = torch.stack([d[..., 2, 1] - d[..., 1, 2], d[..., 0, 2] - d[..., 2, 0], d[..., 1, 0] - d[..., 0, 1]], -1)
    return torch.atan2(v.norm(dim=-1), tr - 1)
