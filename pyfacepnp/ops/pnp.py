"""Batched differentiable Perspective-n-Point: the public ``solve_pnp`` function."""

from __future__ import annotations

import enum
import math
import warnings
from typing import NamedTuple, Optional, Tuple, Union

import torch

from pyfacepnp._ext import ops
from pyfacepnp.geometry.distortion import check_distortion
from pyfacepnp.ops._checks import (
    broadcast_batch,
    check_int,
    check_real,
    check_same,
    check_tensor,
)


class PnPStatus(enum.IntEnum):
    """Per-problem outcome of :func:`solve_pnp` (the ``status`` field)."""

    #: The refinement (Newton, else Levenberg-Marquardt) met the tolerance and the exact
    #: Hessian at the solution is positive definite. Only these problems have a covariance and
    #: receive gradients; their R, t, cost and covariance are finite in the inputs' dtype.
    CONVERGED = 0
    #: ``max_iterations`` ran out first; the pose is the best found, covariance and gradients
    #: are zero.
    MAX_ITERATIONS = 1
    #: The pose is not determined: the Hessian at the solution is not positive definite
    #: (all points identical, collinear points, a point driven onto the camera centre, ...),
    #: or no start could be moved in front of the camera. Covariance and gradients are zero.
    #: (Starts that put a weighted point behind the camera are moved in front and refined;
    #: every answer has every weighted point in front: docs/training.md.)
    DEGENERATE = 2
    #: Non-finite or negative inputs, a malformed K, a malformed ``init`` (not a rotation
    #: within 1e-3, entrywise in ``R^T R - I``), fewer than 4 points with positive weight, or a
    #: solution that does not fit the inputs' dtype (pose, cost or covariance beyond its
    #: range: a float32 scene scaled beyond ~1e30, weights near float32's maximum, a float64
    #: scene scaled by ~1e155). Outputs are R = I, t = 0, cost = 0, zero covariance.
    INVALID_INPUT = 3


class PnPResult(NamedTuple):
    """Result of :func:`solve_pnp`; every field has the batch shape ``(...)`` in front."""

    R: torch.Tensor  #: ``(..., 3, 3)`` rotation, ``x_cam = R @ X + t``
    t: torch.Tensor  #: ``(..., 3)`` translation
    cost: torch.Tensor  #: ``(...)`` objective value at the solution
    iterations: torch.Tensor  #: ``(...)`` int32, refinement steps used (Newton and Levenberg-Marquardt)
    status: torch.Tensor  #: ``(...)`` int32, a :class:`PnPStatus` value
    #: ``(..., 6, 6)`` inverse of the exact Hessian of the cost at the solution, in the local
    #: pose coordinates ``(dw, dt)`` with ``R = exp([dw]x) R*``, ``t = t* + dt``.
    covariance: torch.Tensor

    @property
    def converged(self) -> torch.Tensor:
        """``(...)`` bool: ``status == PnPStatus.CONVERGED``."""
        return self.status == int(PnPStatus.CONVERGED)


LOSSES = ("l2", "huber", "cauchy", "geman_mcclure")
# The limits of the kernels' own checks (csrc/pnp/pnp_glue.h): one set of rules, reported here
# with the argument's name before the C++ invariants could fire.
MAX_ITERATIONS_LIMIT = 100_000
LOSS_SCALE_RANGE = (1e-150, 1e150)  # the scale's square must be a normal float64


def _weights_as_per_axis(weights: Optional[torch.Tensor], points2d: torch.Tensor):
    """``(..., N, 2)`` weights, or None: the op reads unit weights without a tensor of ones."""
    n = points2d.shape[-2]
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dim() >= 2 and weights.shape[-2:] == (n, 2):
        return weights
    if weights.dim() >= 1 and weights.shape[-1] == n:
        return weights.unsqueeze(-1).expand(*weights.shape, 2)
    raise ValueError(
        f"weights must have shape (..., N) or (..., N, 2) with N = {n}, got {tuple(weights.shape)}"
    )


def solve_pnp(
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    loss: str = "l2",
    loss_scale: Union[float, torch.Tensor, None] = None,
    max_iterations: int = 100,
    tolerance: float = 1e-10,
    huber_delta: Optional[float] = None,
    distortion: Optional[torch.Tensor] = None,
    camera_model: str = "pinhole",
) -> PnPResult:
    """Solve batched Perspective-n-Point problems, differentiably.

    Finds the pose ``(R, t)`` minimising ``E = 1/2 sum_i rho(w_i . |pi(R X_i + t) - x_i|^2)``
    for every problem of the batch, independently: a global initialisation computed in the
    kernel (the object-space formulation of SQPnP on the undistorted rays, minimised over
    SO(3) from 24 starts; it handles planar scenes, N = 4..6 and any rotation), then
    Newton steps with the exact Hessian from each start, Levenberg-Marquardt and a final Newton
    polish where those do not converge. Gradients of ``R``,
    ``t`` and ``cost`` flow to ``points3d``, ``points2d``, ``K`` (top two rows),
    ``weights`` and ``distortion`` by the implicit function theorem at the solution (see
    docs/math.md).

    Pixel coordinates follow OpenCV: integer values at pixel centres. The projection is
    ``pi(X_c) = K[:2] @ (d(X_c,x / z, X_c,y / z), 1)`` with ``d`` the lens model
    (the identity without ``distortion``; docs/cameras.md): only K's top two rows are read,
    its bottom row is ignored and gets a zero gradient.
    Per-axis weights multiply each coordinate's squared residual; a zero weight removes a
    point (or, per axis, a coordinate) exactly: its coordinates may then be anything, NaN
    and 1e300 included, and it receives zero gradients, its weight's included (the
    derivative at a zero weight is one-sided; parametrise learned weights away from zero).
    Ragged batches are padded with weight 0.

    Contract, per problem of the batch (the property suite tests/test_pnp_contract.py
    asserts it over magnitudes 1e-300..1e300, dtypes, layouts, padding, init and options):

    - A ``CONVERGED`` problem has finite ``R`` (a rotation), ``t``, ``cost`` and
      ``covariance`` in the inputs' dtype, and finite gradients to every input for a finite
      upstream gradient (float32: see below).
    - Every other problem has another :class:`PnPStatus`, finite outputs, zero covariance
      and zero gradients. Bad input never raises or produces NaN (option values and shapes
      that are wrong do raise, a ``ValueError`` or ``TypeError`` naming the argument).
    - Nothing of one problem reaches another's outputs or gradients, through a shared
      (broadcast) ``K`` or weights included: a problem's results are bit-identical to
      solving it alone.
    - float32 inputs are solved in float64 and the backward works from the float64 solution
      (pose and inverse exact Hessian), so float32 gradients are the float64 gradients of the
      same values rounded to float32. A solution that does not fit float32 is
      ``INVALID_INPUT``; a gradient entry whose exact value exceeds float32's range (e.g.
      the rotation's sensitivity to an object of size 1e-38) is +-inf, never NaN.

    Args:
        points3d: ``(..., N, 3)`` object points, N >= 4.
        points2d: ``(..., N, 2)`` observed pixels.
        K: ``(..., 3, 3)`` intrinsics; rows 0 and 1 are used (skew included), the bottom
            row is ignored (taken as ``[0, 0, 1]``).
        weights: ``(..., N)`` or ``(..., N, 2)`` non-negative weights (e.g. ``1/sigma^2``);
            ``None`` for all ones.
        init: optional ``(R (..., 3, 3), t (..., 3))`` starting pose; skips the global
            initialisation, which still follows where the init puts a point behind the
            camera or its refinement does not converge within ``max_iterations`` (then
            ``iterations`` counts both, up to twice ``max_iterations``).
        loss: the robust kernel rho of the squared weighted residual norm s, with scale
            c = ``loss_scale``: ``"l2"`` (rho = s), ``"huber"`` (Huber on the norm: s up to
            c^2, then 2 c sqrt(s) - c^2), ``"cauchy"`` (c^2 log(1 + s / c^2)) or
            ``"geman_mcclure"`` (c^2 s / (c^2 + s), redescending). A robust kernel bounds the
            pull of outliers on the refinement, but the global initialisation is least
            squares: with many gross outliers (e.g. 20 % of points anywhere in the image) it
            can start outside the inliers' basin; use :func:`solve_pnp_ransac` there.
        loss_scale: the kernel's scale c, in units of the weighted residual norm (pixels for
            unit weights), in [1e-150, 1e150] (its square must be a normal float64); default
            1.0. Ignored by ``"l2"``. A float, or a real ``(...)`` tensor broadcasting to the
            batch for a scale per problem (e.g. an adaptive Huber threshold); a problem whose
            scale is outside the range is ``INVALID_INPUT``. Not differentiated.
        huber_delta: deprecated alias of ``loss_scale``.
        max_iterations: refinement step limit (Newton and Levenberg-Marquardt) per start (the
            init's, the global start's), in [1, 100000].
        tolerance: stop when the step satisfies ``|dw|_inf <= tolerance`` (radians) and
            ``|dt|_inf <= tolerance * |t|``; a final exact Newton step follows, so the
            answer is at the optimum to rounding and ``torch.autograd.gradcheck`` of the op
            passes at its default settings with this default (tests/test_pnp_bad_input.py).
        distortion: optional ``(..., D)`` lens coefficients, broadcasting to the batch (one
            lens shared, or one per problem), differentiable: OpenCV's order ``k1 k2 p1 p2
            [k3 [k4 k5 k6 [s1 s2 s3 s4]]]`` (D = 4, 5, 8 or 12) for ``camera_model="pinhole"``,
            ``k1 k2 k3 k4`` for ``"fisheye"`` (OpenCV's ``cv2.fisheye``). Non-finite
            coefficients make their problem ``INVALID_INPUT``.
        camera_model: ``"pinhole"`` (with or without ``distortion``) or ``"fisheye"``.

    All batch dimensions ``(...)`` broadcast; inputs are torch tensors sharing a dtype
    (float32 or float64; numpy arrays, integer and half tensors raise a ``TypeError`` naming
    the argument) and a device. Solving is done in float64.

    Returns:
        :class:`PnPResult` with ``R (..., 3, 3)``, ``t (..., 3)``, ``cost (...)``,
        ``iterations (...)``, ``status (...)`` and ``covariance (..., 6, 6)``.

    Example:
        >>> X = torch.randn(8, 3, dtype=torch.float64)  # object points
        >>> K = torch.tensor([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]], dtype=torch.float64)
        >>> Xc = X + torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64)  # R = I, t = (0, 0, 6)
        >>> x = (Xc @ K.T)[:, :2] / Xc[:, 2:]
        >>> res = solve_pnp(X, x, K)
        >>> bool(res.converged), round(float(res.t[2]), 9)
        (True, 6.0)
    """
    loss_scale = resolve_loss_scale(loss_scale, huber_delta)
    loss, loss_scale, per_problem, max_iterations, tolerance = check_solver_options(
        loss, loss_scale, max_iterations, tolerance)
    batch, X, x, Kb, wb, init_R, init_t, D = flatten_problems(
        points3d, points2d, K, weights, init, distortion, camera_model)
    *outputs, _state = ops.solve_pnp(
        X, x, Kb, wb, init_R, init_t, loss, loss_scale, max_iterations, tolerance,
        problem_scales(per_problem, batch, X), D, SCHEMA_CAMERA_MODELS[camera_model],
    )
    return PnPResult(*unflatten(batch, outputs))


def unflatten(batch, outputs):
    """The op's flat outputs ``(B, ...)`` with the batch shape restored: ``(*batch, ...)``."""
    if len(batch) == 1:  # already so; a reshape would still add a view to the autograd graph
        return outputs
    if not batch:  # one problem: indexing is the cheaper view
        return [o[0] for o in outputs]
    return [o.reshape(tuple(batch) + tuple(o.shape[1:])) for o in outputs]


def resolve_loss_scale(loss_scale, huber_delta) -> tuple[str, object]:
    """``("loss_scale", value)``, or the deprecated alias ``("huber_delta", value)``; the
    default scale is 1.0. The name is the one the user wrote, for the error messages."""
    if huber_delta is not None:
        warnings.warn("huber_delta is deprecated: use loss_scale", DeprecationWarning, stacklevel=3)
        if loss_scale is not None:
            raise ValueError("give loss_scale or its deprecated alias huber_delta, not both")
        return "huber_delta", huber_delta
    return "loss_scale", 1.0 if loss_scale is None else loss_scale


def check_solver_options(loss, scale, max_iterations, tolerance):
    """The solver's options, validated with the rules of the kernels' own checks; ``scale``
    is ``(name, value)`` from :func:`resolve_loss_scale`. Returns ``(loss, scalar scale,
    per-problem scales tensor or None, max_iterations, tolerance)``."""
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    name, loss_scale = scale
    per_problem = None
    if isinstance(loss_scale, torch.Tensor):  # its values are checked per problem, in the kernel
        if not (loss_scale.is_floating_point() or loss_scale.dtype in _INTEGER_DTYPES):
            raise TypeError(f"{name} must be a real tensor, got {loss_scale.dtype}")
        per_problem, loss_scale = loss_scale, 1.0
    else:
        check_real(name, loss_scale, 0.0, math.inf, open_low=True, rule="positive")
        loss_scale = check_real(name, loss_scale, *LOSS_SCALE_RANGE)
    check_int("max_iterations", max_iterations, 1, 2**63, rule="a positive int")
    max_iterations = check_int("max_iterations", max_iterations, 1, MAX_ITERATIONS_LIMIT)
    tolerance = check_real("tolerance", tolerance, 0.0, 1.0, open_low=True, open_high=True)
    return loss, loss_scale, per_problem, max_iterations, tolerance


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def problem_scales(per_problem, batch, X):
    """Per-problem loss scales broadcast to the batch and flattened: ``(B,)`` float64 on the
    points' device (not differentiated), or None."""
    if per_problem is None:
        return None
    try:
        s = per_problem.detach().to(device=X.device, dtype=torch.float64).expand(batch)
    except RuntimeError:
        raise ValueError(f"loss_scale of shape {tuple(per_problem.shape)} does not broadcast to "
                         f"the batch shape {tuple(batch)}") from None
    return s.reshape(X.shape[0]).contiguous()


# The op schema's camera_model integers (csrc/pnp/pnp_glue.h).
SCHEMA_CAMERA_MODELS = {"pinhole": 0, "fisheye": 1}


def flatten_problems(points3d, points2d, K, weights, init, distortion=None,
                     camera_model="pinhole"):
    """Check the problem tensors and broadcast them to one flat batch ``(B, ...)``.

    Returns ``(batch, X, x, K, weights, init_R, init_t, distortion)`` with ``batch`` the
    broadcast batch shape and the weights, init and distortion ``None`` when absent."""
    check_tensor("points3d", points3d, ["N", 3])
    check_tensor("points2d", points2d, ["N", 2])
    check_tensor("K", K, [3, 3])
    check_same(["points3d", "points2d", "K"], [points3d, points2d, K])
    check_distortion(distortion, camera_model)
    if camera_model == "fisheye" and distortion is None:
        raise ValueError("camera_model='fisheye' needs its coefficients: distortion (..., 4)")
    if distortion is not None:
        check_same(["points3d", "distortion"], [points3d, distortion])
    n = points3d.shape[-2]
    if points2d.shape[-2] != n:
        raise ValueError(
            f"points3d and points2d must have the same number of points N, got "
            f"{tuple(points3d.shape)} and {tuple(points2d.shape)}"
        )
    if n < 4:
        raise ValueError(
            f"solve_pnp needs at least 4 points per problem (N >= 4), got points3d of shape "
            f"{tuple(points3d.shape)}"
        )
    w = _weights_as_per_axis(weights, points2d)
    shapes = [
        ("points3d", points3d.shape[:-2]),
        ("points2d", points2d.shape[:-2]),
        ("K", K.shape[:-2]),
    ]
    if w is not None:
        check_same(["points3d", "weights"], [points3d, w])
        shapes.append(("weights", w.shape[:-2]))
    init_R = init_t = None
    if init is not None:
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            raise TypeError("init must be a tuple (R (..., 3, 3), t (..., 3))")
        init_R, init_t = init
        check_tensor("init R", init_R, [3, 3])
        check_tensor("init t", init_t, [3], min_dim=1)
        check_same(["points3d", "init R", "init t"], [points3d, init_R, init_t])
        shapes += [("init R", init_R.shape[:-2]), ("init t", init_t.shape[:-1])]
    if distortion is not None:
        shapes.append(("distortion", distortion.shape[:-1]))
    batch = broadcast_batch(shapes)

    def flat(a, core):
        """``a`` of shape ``(..., *a.shape[-core:])`` as ``(B, ...)``; a tensor already in that
        layout is passed as it is (no view: each would be an autograd node)."""
        tail = a.shape[-core:]
        if a.shape[:-core] != batch:
            a = a.expand(*batch, *tail)
        if len(batch) == 1:
            return a
        return a[None] if not batch else a.reshape(-1, *tail)

    if init is not None:
        init_R, init_t = flat(init_R.detach(), 2), flat(init_t.detach(), 1)
    return (batch, flat(points3d, 2), flat(points2d, 2), flat(K, 2),
            None if w is None else flat(w, 2), init_R, init_t,
            None if distortion is None else flat(distortion, 1))
