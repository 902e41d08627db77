"""Training losses of the two stages. Lengths in millimetres, pixels in crop pixels.

Stage 2's camera-space terms are the WCPA distances of :func:`pyfacepnp.metrics.wcpa_terms`
(differentiable), used directly as losses.
"""

from __future__ import annotations

import numpy as np
import torch

MM = 1000.0  # metres -> millimetres


def vertex_l1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute vertex-coordinate error in mm, per sample ``(B,)``."""
    return (pred - gt).abs().mean(dim=(-1, -2)) * MM


def gaussian_nll(pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                 beta: float = 0.0) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under N(pred, exp(log_var)), per sample ``(B,)``.

    ``log_var`` is per axis ``(B, N, 2)`` or per point ``(B, N)`` (isotropic 2D Gaussian);
    constants are dropped. Per point and axis, the minimiser is ``exp(log_var) = r^2``.
    ``beta > 0`` is the beta-NLL of Seitzer et al. (ICLR 2022): each term is weighted by
    ``sigma^(2 beta)`` (not differentiated), which keeps points with a large sigma from
    learning their position ever more slowly; the minimiser is unchanged.
    """
    r2 = (pred - target) ** 2
    if log_var.dim() == pred.dim():
        nll = 0.5 * (r2 * torch.exp(-log_var) + log_var)
        if beta > 0:
            nll = nll * torch.exp(beta * log_var.detach())
        return nll.mean(dim=(-1, -2))
    nll = 0.5 * r2.sum(-1) * torch.exp(-log_var) + log_var
    if beta > 0:
        nll = nll * torch.exp(beta * log_var.detach())
    return nll.mean(dim=-1) / 2.0


def edges_from_triangles(triangles) -> torch.Tensor:
    """Unique undirected edges ``(E, 2)`` of a triangle list ``(T, 3)``."""
    tri = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], 0)
    e = np.unique(np.sort(e, axis=1), axis=0)
    return torch.from_numpy(e)


def edge_length_l1(pred: torch.Tensor, gt: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of mesh edge lengths in mm, per sample ``(B,)``."""
    def lengths(v):
        return (v[..., edges[:, 0], :] - v[..., edges[:, 1], :]).norm(dim=-1)

    return (lengths(pred) - lengths(gt)).abs().mean(dim=-1) * MM


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 with a zero gradient path when the mask is empty).

    Masked-out entries are replaced (not multiplied) so a NaN in them cannot leak.
    """
    m = mask.to(values.dtype)
    safe = torch.where(mask, values, torch.zeros_like(values))
    return safe.sum() / m.sum().clamp_min(1.0)
