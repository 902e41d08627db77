"""Every minimum of batched PnP problems: ``solve_pnp_minima``, the multiple-solution mode
(OpenCV's ``solvePnPGeneric``, SQPnP's solutions), differentiable per solution."""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

from pyfacepnp._ext import ops
from pyfacepnp.ops._checks import check_int
from pyfacepnp.ops.pnp import (
    SCHEMA_CAMERA_MODELS,
    check_solver_options,
    flatten_problems,
    problem_scales,
    resolve_loss_scale,
    unflatten,
)

#: The kernels' limit on ``num_solutions`` (csrc/common/pnp_args.h).
MAX_SOLUTIONS = 8


class PnPMinima(NamedTuple):
    """Result of :func:`solve_pnp_minima`: the :class:`PnPResult` fields of each solution,
    with a solutions axis ``k`` after the batch shape, sorted by cost, then their number."""

    R: torch.Tensor  #: ``(..., k, 3, 3)``
    t: torch.Tensor  #: ``(..., k, 3)``
    cost: torch.Tensor  #: ``(..., k)``
    iterations: torch.Tensor  #: ``(..., k)`` int32, iterations of each solution's refinement
    status: torch.Tensor  #: ``(..., k)`` int32, a :class:`PnPStatus` value per solution
    covariance: torch.Tensor  #: ``(..., k, 6, 6)``
    num_solutions: torch.Tensor  #: ``(...)`` int32, the distinct minima found (at most k)

    @property
    def converged(self) -> torch.Tensor:
        """``(..., k)`` bool: ``status == PnPStatus.CONVERGED``."""
        return self.status == 0


def solve_pnp_minima(
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    num_solutions: int = 4,
    loss: str = "l2",
    loss_scale: Union[float, torch.Tensor, None] = None,
    max_iterations: int = 100,
    tolerance: float = 1e-10,
    distortion: Optional[torch.Tensor] = None,
    camera_model: str = "pinhole",
) -> PnPMinima:
    """Every local minimum :func:`solve_pnp`'s global start finds, each refined, sorted by cost.

    The start minimises the object-space error over SO(3) from 24 rotations; its distinct
    minima (moved in front of the camera where they put a weighted point behind it) are each
    refined by the
    Levenberg-Marquardt and exact-Newton finish of :func:`solve_pnp` (each on its own
    ``max_iterations``), results that reach the same pose are merged, and the
    ``num_solutions`` lowest costs are returned. A planar target seen at a distance has two
    minima of similar cost (the two-fold ambiguity: the plane tilted one way or the mirror
    way); small N (4 to 6 points) can have up to four. Solution 0 is at or below
    :func:`solve_pnp`'s cost (which refines only the most promising starts).

    Each solution has its own status and covariance and is differentiable on its own, by the
    implicit function theorem at that minimum, to every input as in :func:`solve_pnp`. The
    slots past ``num_solutions`` found hold ``R = I``, ``t = 0``, zero cost and covariance
    and the status ``DEGENERATE`` (no further minimum), or all the problem's own status when
    it has no solution (``INVALID_INPUT``, ``DEGENERATE``); they get zero gradients.

    Args:
        points3d, points2d, K, weights, loss, loss_scale, max_iterations, tolerance,
            distortion, camera_model: as in :func:`solve_pnp` (no ``init``: the minima are
            those of the global start).
        num_solutions: k, the solutions kept per problem, in [1, 8].

    Returns:
        :class:`PnPMinima`.

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> X = torch.cat([torch.rand(6, 2, generator=g, dtype=torch.float64) - 0.5,
        ...                torch.zeros(6, 1, dtype=torch.float64)], 1)  # a planar target
        >>> K = torch.tensor([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]], dtype=torch.float64)
        >>> Xc = X + torch.tensor([0.0, 0.0, 20.0], dtype=torch.float64)  # far away
        >>> x = (Xc @ K.T)[:, :2] / Xc[:, 2:] + 0.3 * torch.randn(6, 2, generator=g, dtype=torch.float64)
        >>> res = solve_pnp_minima(X, x, K, num_solutions=2)
        >>> int(res.num_solutions), res.status.tolist(), bool(res.cost[0] <= res.cost[1])
        (2, [0, 0], True)
    """
    scale = resolve_loss_scale(loss_scale, None)
    loss, loss_scale, per_problem, max_iterations, tolerance = check_solver_options(
        loss, scale, max_iterations, tolerance)
    num_solutions = check_int("num_solutions", num_solutions, 1, MAX_SOLUTIONS)
    batch, X, x, Kb, wb, _, _, D = flatten_problems(
        points3d, points2d, K, weights, None, distortion, camera_model)
    *outputs, _state, count = ops.solve_pnp_minima(
        X, x, Kb, wb, loss, loss_scale, num_solutions, max_iterations, tolerance,
        problem_scales(per_problem, batch, X), D, SCHEMA_CAMERA_MODELS[camera_model],
    )
    return PnPMinima(*unflatten(batch, outputs), count.reshape(tuple(batch)))
