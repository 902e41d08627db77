"""The exact Hessian of the PnP objective in the local pose coordinates, by automatic
differentiation of the torch objective: the reference the compiled ``pnp_hessian`` op
(pyfacepnp.ops.hessian) is tested against, its derivatives included."""

from __future__ import annotations

import torch

from pyfacepnp.reference.objective import expand_weights, reprojection_cost
from pyfacepnp.reference.so3 import so3_exp


def safe_inputs(points3d, points2d, weights):
    """Zero-weight coordinates and inactive points made harmless for the torch objective, as
    the op removes them: their values never reach the arithmetic (nor the gradients)."""
    w = expand_weights(weights, points2d)
    active = (w > 0).any(-1, keepdim=True)
    fill = (torch.where(active, points3d, 0.0) * active).sum(-2, keepdim=True) / active.sum(-2, keepdim=True).clamp_min(1)
    X = torch.where(active, points3d, fill.detach())  # the active points' centroid: in front
    x = torch.where(w > 0, points2d, 0.0)
    return X, x, w


def local_hessian_reference(R, t, points3d, points2d, K, weights=None, loss="l2", loss_scale=1.0,
                            distortion=None, camera_model="pinhole"):
    """The exact Hessian ``(..., 6, 6)`` of the objective in ``(dw, dt)`` (``R <- exp([dw]x)
    R``, ``t <- t + dt``) at ``(R, t)``, differentiable with respect to every argument
    (``create_graph``)."""
    X, x, w = safe_inputs(points3d, points2d, weights)
    theta = R.new_zeros(R.shape[:-2] + (6,), requires_grad=True)

    def energy(th):
        return reprojection_cost(so3_exp(th[..., :3]) @ R, t + th[..., 3:], X, x, K, w, loss,
                                 loss_scale, distortion, camera_model)

    (g,) = torch.autograd.grad(energy(theta).sum(), theta, create_graph=True)
    rows = [torch.autograd.grad(g[..., k].sum(), theta, create_graph=True)[0] for k in range(6)]
    return torch.stack(rows, -2)
