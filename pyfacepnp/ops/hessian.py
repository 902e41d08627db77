"""The exact Hessian of solve_pnp's objective at a given pose, as a differentiable op."""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

from pyfacepnp._ext import ops
from pyfacepnp.ops._checks import check_same, check_tensor
from pyfacepnp.ops.pnp import (
    SCHEMA_CAMERA_MODELS,
    check_solver_options,
    flatten_problems,
    problem_scales,
    solve_pnp,  # noqa: F401  (the example's)
    unflatten,
)

__all__ = ["PoseHessian", "pose_hessian"]


class PoseHessian(NamedTuple):
    """Result of :func:`pose_hessian`; every field has the batch shape ``(...)`` in front."""

    hessian: torch.Tensor  #: ``(..., 6, 6)`` float64; zero where not ``valid``
    valid: torch.Tensor  #: ``(...)`` bool: the Hessian exists there


def pose_hessian(
    R: torch.Tensor,
    t: torch.Tensor,
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    loss: str = "l2",
    loss_scale: Union[float, torch.Tensor] = 1.0,
    distortion: Optional[torch.Tensor] = None,
    camera_model: str = "pinhole",
) -> PoseHessian:
    """The exact Hessian of :func:`solve_pnp`'s objective ``E`` in the op's local pose
    coordinates ``(dw, dt)`` (``R <- exp([dw]x) R``, ``t <- t + dt``) at the pose ``(R, t)``,
    computed in the compiled kernels (csrc/common/pnp_hessian.h), in float64.

    At a ``CONVERGED`` solution it is the inverse of the solution's ``covariance``.
    Differentiable with respect to ``R`` and ``t`` (any 3x3 matrix: ``E`` depends on ``R``
    only through ``R X``), the points, pixels, ``K`` (top two rows), weights and lens
    coefficients: its backward is the third derivatives of the objective, computed in the
    kernels by forward-mode derivatives of the per-point terms (no double backward).
    ``valid`` is False where the Hessian does not exist: invalid inputs, camera or scale, or
    an active point on or behind the camera plane; ``hessian`` is zero there, with zero
    gradients.

    Args:
        R: ``(..., 3, 3)`` and t: ``(..., 3)``, the pose, any floating dtype.
        points3d, points2d, K, weights, loss, loss_scale, distortion, camera_model: as in
            :func:`solve_pnp`.

    Returns:
        :class:`PoseHessian` ``(hessian, valid)``.

    Example:
        >>> X = torch.randn(8, 3, dtype=torch.float64)
        >>> K = torch.tensor([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]], dtype=torch.float64)
        >>> t = torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64)
        >>> x = ((X + t) @ K.T)[:, :2] / (X + t)[:, 2:]
        >>> res = solve_pnp(X, x, K)
        >>> H, valid = pose_hessian(res.R, res.t, X, x, K)
        >>> bool(valid), bool(torch.allclose(H @ res.covariance, torch.eye(6, dtype=H.dtype)))
        (True, True)
    """
    loss, scale, per_problem, _, _ = check_solver_options(loss, ("loss_scale", loss_scale), 1, 0.5)
    check_tensor("R", R, [3, 3])
    check_tensor("t", t, [3], min_dim=1)
    check_same(["R", "t"], [R, t])
    # The pose enters as an init would (same broadcasting rules), but differentiably.
    batch, X, x, Kb, wb, _, _, D = flatten_problems(
        points3d, points2d, K, weights, (R.detach(), t.detach()), distortion, camera_model)
    B = X.shape[0]
    Rb = R.expand(*batch, 3, 3).reshape(B, 3, 3)
    tb = t.expand(*batch, 3).reshape(B, 3)
    H, valid = ops.pnp_hessian(Rb, tb, X, x, Kb, wb, loss, scale,
                               problem_scales(per_problem, batch, X), D,
                               SCHEMA_CAMERA_MODELS[camera_model])
    return PoseHessian(*unflatten(batch, [H, valid]))
