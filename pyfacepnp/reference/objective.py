"""The PnP objective in plain torch: projection, robust loss, cost, residual Jacobians.

    E = 1/2 sum_i rho(s_i),   s_i = w_i0 r_i0^2 + w_i1 r_i1^2,   r_i = u(R X_i + t) - x_i

with ``u(Xc) = K[:2] @ (lens(Xc_x / z, Xc_y / z), 1)`` (the lens of
:mod:`pyfacepnp.geometry.distortion`, the identity without one: ``u = pi(K Xc)``) and
``rho(s) = s`` (``"l2"``) or Huber ``rho(s) = s if s <= d^2 else 2 d sqrt(s) - d^2``.
Pose perturbations are local: ``R <- exp([dw]x) R``, ``t <- t + dt``, theta = (dw, dt).
"""

from __future__ import annotations

import torch

from pyfacepnp.geometry.distortion import distort, distort_with_jacobian


LOSSES = ("l2", "huber")  # the reference solver's
# The objective's robust kernels, those of the op (csrc/common/pnp_point.h, Robust).
OBJECTIVE_LOSSES = ("l2", "huber", "cauchy", "geman_mcclure")


def expand_weights(weights: torch.Tensor | None, points2d: torch.Tensor) -> torch.Tensor:
    """Per-axis weights ``(..., N, 2)`` from ``None``, ``(..., N)`` or ``(..., N, 2)``."""
    if weights is None:
        return torch.ones_like(points2d)
    if weights.shape[-1:] == points2d.shape[-2:-1] and weights.dim() == points2d.dim() - 1:
        return weights[..., None].expand(*weights.shape, 2)
    return weights


def project(R: torch.Tensor, t: torch.Tensor, points3d: torch.Tensor, K: torch.Tensor,
            distortion: torch.Tensor | None = None, camera_model: str = "pinhole"):
    """Pixel projections and depths of ``points3d`` under the pose ``(R, t)``.

    Args:
        R: ``(..., 3, 3)`` rotations, t: ``(..., 3)`` translations.
        points3d: ``(..., N, 3)`` object points.
        K: ``(..., 3, 3)`` intrinsics (last row ``[0, 0, 1]``).
        distortion: ``None`` or ``(..., D)`` lens coefficients of ``camera_model``
            (``"pinhole"`` or ``"fisheye"``, see :mod:`pyfacepnp.geometry.distortion`).

    Returns:
        ``(pixels (..., N, 2), depth (..., N))``. As in the op, K's last row is taken to
        be ``[0, 0, 1]`` (it is not read), so gradients reach only its top two rows.

    Example:
        >>> K = torch.tensor([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
        >>> uv, z = project(torch.eye(3), torch.tensor([0.0, 0, 2]), torch.tensor([[0.2, 0, 0]]), K)
        >>> uv
        tensor([[60., 50.]])
    """
    x_cam = points3d @ R.transpose(-1, -2) + t[..., None, :]
    z = x_cam[..., 2]
    if distortion is None:
        return (x_cam @ K[..., :2, :].transpose(-1, -2)) / z[..., None], z
    nd = distort(x_cam[..., :2] / z[..., None], distortion, camera_model)
    return nd @ K[..., :2, :2].transpose(-1, -2) + K[..., None, :2, 2], z


def robust_rho(s: torch.Tensor, loss: str, delta: float) -> torch.Tensor:
    """``rho(s)`` of the op's kernels; the Huber branch takes sqrt of a clamped value so
    gradients stay finite."""
    if loss == "l2":
        return s
    d2 = delta * delta
    if loss == "cauchy":
        return d2 * torch.log1p(s / d2)
    if loss == "geman_mcclure":
        return d2 * s / (d2 + s)
    return torch.where(s <= d2, s, 2 * delta * s.clamp_min(d2).sqrt() - d2)


def robust_weight(s: torch.Tensor, loss: str, delta: float) -> torch.Tensor:
    """``rho'(s)``: the per-point factor of the gradient and of the Gauss-Newton Hessian."""
    if loss == "l2":
        return torch.ones_like(s)
    d2 = delta * delta
    return torch.where(s <= d2, torch.ones_like(s), delta / s.clamp_min(d2).sqrt())


def reprojection_cost(
    R: torch.Tensor,
    t: torch.Tensor,
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: torch.Tensor | None = None,
    loss: str = "l2",
    huber_delta: float = 1.0,
    distortion: torch.Tensor | None = None,
    camera_model: str = "pinhole",
) -> torch.Tensor:
    """The PnP objective ``E = 1/2 sum_i rho(w_i . r_i^2)`` at the given poses.

    Batched and differentiable with respect to every tensor argument; leading batch
    dimensions broadcast. Points with zero weight contribute nothing.

    Args:
        R: ``(..., 3, 3)`` rotations (camera from object).
        t: ``(..., 3)`` translations.
        points3d: ``(..., N, 3)`` object points.
        points2d: ``(..., N, 2)`` observed pixels.
        K: ``(..., 3, 3)`` intrinsics.
        weights: ``None``, ``(..., N)`` or per-axis ``(..., N, 2)`` non-negative weights.
        loss: one of ``OBJECTIVE_LOSSES``, the op's kernels.
        huber_delta: the kernel's scale ``d`` on ``sqrt(s)`` (pixels for unit weights).
        distortion, camera_model: the lens, as in :func:`project`.

    Returns:
        ``(...)`` costs.

    Example:
        >>> K = torch.tensor([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
        >>> X = torch.tensor([[0.2, 0, 0]]); x = torch.tensor([[61.0, 50.0]])
        >>> reprojection_cost(torch.eye(3), torch.tensor([0.0, 0, 2]), X, x, K)
        tensor(0.5000)
    """
    if loss not in OBJECTIVE_LOSSES:
        raise ValueError(f"loss must be one of {OBJECTIVE_LOSSES}, got {loss!r}")
    uv, _ = project(R, t, points3d, K, distortion, camera_model)
    return cost_of_residuals(uv - points2d, expand_weights(weights, points2d), loss, huber_delta)


def cost_of_residuals(r: torch.Tensor, w: torch.Tensor, loss: str, delta: float) -> torch.Tensor:
    """``1/2 sum_i rho(w_i . r_i^2)`` over the points axis: ``r, w (..., N, 2) -> (...)``."""
    return 0.5 * robust_rho((w * r * r).sum(-1), loss, delta).sum(-1)


def residual_jacobian(R, t, points3d, K, distortion=None, camera_model="pinhole"):
    """Projections, depths and the Jacobian of the pixels w.r.t. the local pose theta.

    ``d x_cam / d dw = -[R X]x`` and ``d x_cam / d dt = I``; with ``A = d u / d x_cam =
    (K[:2] - u e3^T) / z`` each row ``a`` of A gives ``a^T (-[y]x) = (y x a)^T``, so the
    Jacobian needs only elementwise ops (no batched tiny matmuls). With a lens, by the chain
    rule ``A = K[:2, :2] Dd(n) [I | -n] / z`` for ``n = (x / z, y / z)``.

    Returns:
        ``(pixels (..., N, 2), depth (..., N), J (..., N, 2, 6))``.
    """
    rx = points3d @ R.transpose(-1, -2)
    x_cam = rx + t[..., None, :]
    z = x_cam[..., 2]
    if distortion is None:
        uv = (x_cam @ K[..., :2, :].transpose(-1, -2)) / z[..., None]
        e3 = torch.zeros_like(K[..., None, 2:3, :])
        e3[..., 2] = 1
        A = (K[..., None, :2, :] - uv[..., :, None] * e3) / z[..., None, None]
    else:
        n = x_cam[..., :2] / z[..., None]
        nd, Dd = distort_with_jacobian(n, distortion, camera_model)
        uv = nd @ K[..., :2, :2].transpose(-1, -2) + K[..., None, :2, 2]
        G = K[..., None, :2, :2] @ Dd  # (..., N, 2, 2) = d u / d n
        A = torch.cat([G, -(G @ n[..., :, None])], -1) / z[..., None, None]
    return uv, z, torch.cat([torch.linalg.cross(rx[..., None, :].expand_as(A), A, dim=-1), A], dim=-1)
