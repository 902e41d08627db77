"""Batched robust PnP: ``solve_pnp_ransac``, LO-RANSAC inside the kernels."""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

from pyfacepnp._ext import ops
from pyfacepnp.ops._checks import check_int, check_real
from pyfacepnp.ops.pnp import (
    LOSS_SCALE_RANGE,
    check_solver_options,
    SCHEMA_CAMERA_MODELS,
    flatten_problems,
    problem_scales,
    resolve_loss_scale,
    unflatten,
)

#: The kernels' limit on ``max_trials`` (csrc/pnp/pnp_glue.h).
MAX_TRIALS_LIMIT = 1_000_000


class RansacResult(NamedTuple):
    """Result of :func:`solve_pnp_ransac`: the :class:`PnPResult` fields of the final solve
    on the inlier set, then the RANSAC outcome. Every field has the batch shape in front."""

    R: torch.Tensor  #: ``(..., 3, 3)``
    t: torch.Tensor  #: ``(..., 3)``
    cost: torch.Tensor  #: ``(...)`` the objective on the inliers at the solution
    iterations: torch.Tensor  #: ``(...)`` int32, iterations of the final solve
    status: torch.Tensor  #: ``(...)`` int32, a :class:`PnPStatus` value
    covariance: torch.Tensor  #: ``(..., 6, 6)`` inverse exact Hessian on the inliers
    inliers: torch.Tensor  #: ``(..., N)`` bool, the inlier set the final solve used
    num_inliers: torch.Tensor  #: ``(...)`` int32
    trials: torch.Tensor  #: ``(...)`` int32, RANSAC samples drawn

    @property
    def converged(self) -> torch.Tensor:
        """``(...)`` bool: ``status == PnPStatus.CONVERGED``."""
        return self.status == 0


def solve_pnp_ransac(
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    threshold: float,
    confidence: float = 0.9999,
    max_trials: int = 10000,
    seed: int = 0,
    loss: str = "l2",
    loss_scale: Union[float, torch.Tensor, None] = None,
    max_iterations: int = 100,
    tolerance: float = 1e-10,
    distortion: Optional[torch.Tensor] = None,
    camera_model: str = "pinhole",
) -> RansacResult:
    """Solve batched PnP problems with gross outliers, differentiably (LO-RANSAC).

    Per problem, in the kernel: hypotheses from P3P (Lambda Twist) on 3 sampled points (both
    weights positive), scored by MSAC — ``sum_i min(s_i, threshold^2)`` with ``s_i`` the
    weighted squared residual (``w_ix r_ix^2 + w_iy r_iy^2``; a point behind the camera
    counts ``threshold^2``); whenever the best improves, a local optimisation refits its
    inliers (Gauss-Newton) and re-scores, twice; sampling stops once an all-inlier sample
    has been drawn with probability ``confidence`` given the best inlier ratio (or after
    ``max_trials``). The inliers of the best model (``s_i < threshold^2``) are then solved by
    :func:`solve_pnp`'s Levenberg-Marquardt and exact-Newton finish from the best pose, with
    ``loss`` and ``loss_scale``.

    Gradients flow as in :func:`solve_pnp`, by the implicit function theorem at the final
    optimum **with the inlier set held fixed** (outliers get zero gradients): exact
    wherever a small perturbation does not change the inlier set.

    Deterministic: the samples come from a counter-based generator keyed by ``seed`` and the
    problem's index in the flattened batch, so a problem gets the same answer whatever the
    other problems of its batch, the thread count or the device.

    Statuses as :class:`PnPStatus`; ``DEGENERATE`` also when no hypothesis has 4 inliers
    (then ``R = I``, ``t = 0``, no inliers). Shapes, broadcasting, dtypes and weights as in
    :func:`solve_pnp`.

    Args:
        points3d: ``(..., N, 3)``; points2d: ``(..., N, 2)``; K: ``(..., 3, 3)``.
        weights: ``(..., N)`` or ``(..., N, 2)``, non-negative, or ``None``.
        threshold: inlier threshold on the weighted residual norm (pixels for unit weights).
        confidence: in (0, 1), the adaptive stopping's confidence.
        max_trials: at most this many samples, in [1, 1e6].
        seed: the generator's key (any int).
        loss, loss_scale, max_iterations, tolerance: the final solve's, as in
            :func:`solve_pnp` (``loss_scale`` a float or a per-problem tensor).
        distortion, camera_model: the lens, as in :func:`solve_pnp` (the hypotheses are
            drawn on undistorted rays; residuals are those of the distorted projection).

    Returns:
        :class:`RansacResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.rand(50, 3, generator=g, dtype=torch.float64) - 0.5
        >>> K = torch.tensor([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]], dtype=torch.float64)
        >>> Xc = X + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
        >>> x = (Xc @ K.T)[:, :2] / Xc[:, 2:]
        >>> x[:15] = torch.rand(15, 2, generator=g, dtype=torch.float64) * 600  # 30 % outliers
        >>> res = solve_pnp_ransac(X, x, K, threshold=2.0)
        >>> bool(res.converged), int(res.num_inliers), round(float(res.t[2]), 6)
        (True, 35, 4.0)
    """
    scale = resolve_loss_scale(loss_scale, None)
    loss, loss_scale, per_problem, max_iterations, tolerance = check_solver_options(
        loss, scale, max_iterations, tolerance)
    threshold = check_real("threshold", threshold, 0.0, LOSS_SCALE_RANGE[1], open_low=True)
    confidence = check_real("confidence", confidence, 0.0, 1.0, open_low=True, open_high=True)
    max_trials = check_int("max_trials", max_trials, 1, MAX_TRIALS_LIMIT)
    seed = check_int("seed", seed, -(2**63), 2**63 - 1)
    batch, X, x, Kb, wb, _, _, D = flatten_problems(
        points3d, points2d, K, weights, None, distortion, camera_model)
    R, t, cost, iterations, status, cov, _state, *robust = ops.solve_pnp_ransac(
        X, x, Kb, wb, loss, loss_scale, threshold, confidence, max_trials, seed, max_iterations,
        tolerance, problem_scales(per_problem, batch, X), D, SCHEMA_CAMERA_MODELS[camera_model],
    )
    return RansacResult(*unflatten(batch, [R, t, cost, iterations, status, cov, *robust]))
