"""The pose distribution of the op's objective: ``pose_nll``, the negative log-likelihood of
a target pose under its Laplace approximation, with exact gradients.

With ``p(y | correspondences) ∝ exp(-E(y))`` and ``E`` the op's objective, the Laplace
approximation at the solution ``y*`` (Hessian ``H`` in the op's local pose coordinates,
``∫ exp(-E) ≈ exp(-E(y*)) (2 pi)^3 det(H)^(-1/2)``) gives

    -log p(y_target) = E(y_target) - E(y*) - 1/2 log det H(y*) + 3 log(2 pi)

(the 1-D check: ``E = h (y - m)^2 / 2`` is the Gaussian of variance ``1/h``, whose
``-log p = E - log(h) / 2 + log(2 pi) / 2``).
It is a learning signal even where the solved pose is far from the target, and it weighs the
fit's confidence against its error (a sharp H pays for an error at the target), from one solve
and no sampling. The Hessian is the exact one the op inverts for its covariance, computed by
the compiled ``pnp_hessian`` op at the op's solution (pyfacepnp.ops.hessian), whose backward
gives the log-determinant's own derivatives (third derivatives of the objective) in the kernels;
its dependence on the solution goes through the op's implicit backward. So the loss's gradient
is exact.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from pyfacepnp.ops.hessian import pose_hessian
from pyfacepnp.ops.pnp import PnPResult, solve_pnp
from pyfacepnp.reference.hessian import safe_inputs
from pyfacepnp.reference.objective import expand_weights, reprojection_cost

__all__ = ["PoseNLL", "pose_nll", "local_hessian"]


class PoseNLL(NamedTuple):
    """Result of :func:`pose_nll`; every field has the batch shape ``(...)`` in front."""

    nll: torch.Tensor  #: ``(...)`` the negative log-likelihood (0 where not ``valid``)
    valid: torch.Tensor  #: ``(...)`` bool: converged, the target in front of the camera, nll finite
    result: PnPResult  #: the :func:`solve_pnp` solution it is taken at


def local_hessian(R, t, points3d, points2d, K, weights=None, loss="l2", loss_scale=1.0,
                  distortion=None, camera_model="pinhole"):
    """The exact Hessian ``(..., 6, 6)`` (float64) of the objective in the local pose
    coordinates ``(dw, dt)`` (``R <- exp([dw]x) R``, ``t <- t + dt``) at ``(R, t)``,
    differentiable with respect to every argument: at a ``solve_pnp`` solution it is the
    inverse of the op's ``covariance``. The ``hessian`` of
    :func:`pyfacepnp.ops.hessian.pose_hessian` (zero where it does not exist, e.g. a
    weighted point behind the camera: that function also returns where it is ``valid``)."""
    return pose_hessian(R, t, points3d, points2d, K, weights, loss=loss, loss_scale=loss_scale,
                        distortion=distortion, camera_model=camera_model).hessian


def pose_nll(
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    R_target: torch.Tensor,
    t_target: torch.Tensor,
    loss: str = "l2",
    loss_scale: float = 1.0,
    distortion: Optional[torch.Tensor] = None,
    camera_model: str = "pinhole",
    max_iterations: int = 100,
    tolerance: float = 1e-10,
) -> PoseNLL:
    """The Laplace negative log-likelihood of ``(R_target, t_target)`` given the
    correspondences, with the :func:`solve_pnp` result it is taken at.

    ``nll = E(target) - E(solution) - 1/2 log det H(solution) + 3 log(2 pi)`` per problem,
    with ``E`` the op's objective (same ``weights``, ``loss``, ``loss_scale``, lens) and ``H``
    its exact Hessian at the solution. Differentiable with respect to the points, pixels,
    ``K``, weights, coefficients and the target pose, exactly (tests/test_pose_nll.py proves
    it by float64 gradcheck against finite differences of the whole, solver included).

    The approximation exists only where the solve ``CONVERGED`` and the target pose puts every
    weighted point in front of the camera (the objective is undefined behind it); elsewhere
    ``valid`` is False and ``nll`` is 0 with zero gradients (never NaN): mask the loss by
    ``valid`` so that such problems do not count as perfect. ``loss_scale`` is a float here.

    Args:
        points3d, points2d, K, weights, loss, loss_scale, distortion, camera_model,
            max_iterations, tolerance: as in :func:`solve_pnp` (no ``init``).
        R_target: ``(..., 3, 3)`` and t_target: ``(..., 3)``, the target pose.

    Returns:
        :class:`PoseNLL` ``(nll, valid, result)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.rand(20, 3, generator=g, dtype=torch.float64) - 0.5
        >>> K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=torch.float64)
        >>> t = torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
        >>> x = ((X + t) @ K.T)[:, :2] / (X + t)[:, 2:] + torch.randn(20, 2, generator=g, dtype=torch.float64)
        >>> out = pose_nll(X, x, K, R_target=torch.eye(3, dtype=torch.float64), t_target=t)
        >>> bool(out.valid), bool(out.result.converged), bool(torch.isfinite(out.nll))
        (True, True, True)
    """
    res = solve_pnp(points3d, points2d, K, weights, loss=loss, loss_scale=loss_scale,
                    max_iterations=max_iterations, tolerance=tolerance, distortion=distortion,
                    camera_model=camera_model)
    # The approximation exists where the solve converged and the target puts every weighted
    # point in front of the camera (E(target) is defined there). Elsewhere the problem is
    # evaluated as a harmless empty one (no weight, identity camera and poses) and masked
    # out: none of its values, NaN included, reaches the arithmetic or the gradients.
    # In float64 whatever the inputs' dtype, as the op solves: a float32 Hessian of a stiff
    # problem can lose its positive definiteness (and its log-determinant) to rounding.
    dtype = res.cost.dtype
    points3d, points2d, K, R_target, t_target = (
        a.double() for a in (points3d, points2d, K, R_target, t_target))
    weights = None if weights is None else weights.double()
    distortion = None if distortion is None else distortion.double()
    res64_R, res64_t, res64_cost = res.R.double(), res.t.double(), res.cost.double()
    w_all = expand_weights(weights, points2d)
    with torch.no_grad():
        z = (torch.nan_to_num(points3d) @ R_target.transpose(-1, -2) + t_target[..., None, :])[..., 2]
        in_front = ((z > 0) | ~(w_all > 0).any(-1)).all(-1)
    ok = res.converged & in_front & torch.isfinite(R_target).flatten(-2).all(-1) & torch.isfinite(t_target).all(-1)

    # The Hessian at the solution, where it exists (the op's kernels: its backward is the
    # third derivatives), and the identity elsewhere so that log det stays finite.
    H, h_valid = pose_hessian(res64_R, res64_t, points3d, points2d, K, weights, loss=loss,
                              loss_scale=loss_scale, distortion=distortion,
                              camera_model=camera_model)
    ok = ok & h_valid

    def evaluate(ok):
        b3, b2, b1 = ok[..., None, None], ok[..., None, None], ok[..., None]
        eye3 = torch.eye(3, dtype=torch.float64, device=res.R.device)
        front = res64_t.new_tensor([0.0, 0.0, 1.0])
        w = torch.where(b2, w_all, 0.0)
        Kc = torch.where(b3, K, eye3)
        D = None if distortion is None else torch.where(b1, distortion, 0.0)
        Hc = torch.where(b3, H, torch.eye(6, dtype=H.dtype, device=H.device))
        X, x, w = safe_inputs(points3d, points2d, w)
        e_target = reprojection_cost(torch.where(b3, R_target, eye3), torch.where(b1, t_target, front),
                                     X, x, Kc, w, loss, loss_scale, D, camera_model)
        return e_target - res64_cost - 0.5 * torch.logdet(Hc) + 3 * math.log(2 * math.pi)

    nll = evaluate(ok)
    overflow = ok & ~torch.isfinite(nll.detach())  # e.g. a target point a hair in front
    if bool(overflow.any()):
        ok = ok & ~overflow
        nll = evaluate(ok)
    return PoseNLL(torch.where(ok, nll, 0.0).to(dtype), ok, res)
