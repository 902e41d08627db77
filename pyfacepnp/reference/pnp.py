"""Batched PnP by Levenberg-Marquardt in plain torch ops: the independent reference for
``pyfacepnp.solve_pnp`` and the stand-in for solvers written in torch ops.

One loop over iterations, none over problems: each iteration gathers the problems still
running, every one of them takes its own damped step and accepts or rejects it, and the
results are scattered back with ``index_put`` (which autograd differentiates). Gradients
are those of plain autograd through the unrolled iterations; the initialisation and the
exact Hessians of the final Newton steps are detached, so the gradient is that of the
last steps' fixed point, which is the implicit gradient at a converged solution.

(A little over 300 lines on purpose: the input rules, the batched LM and the statuses are one
algorithm that the tests compare with the op as a whole; its objective and initialisation
already live in reference/objective.py and reference/init.py.)
"""

from __future__ import annotations

import torch

from pyfacepnp.geometry.distortion import check_distortion
from pyfacepnp.reference.init import omega_initialisation
from pyfacepnp.reference.objective import (
    LOSSES,
    cost_of_residuals,
    expand_weights,
    project,
    reprojection_cost,
    residual_jacobian,
    robust_weight,
)
from pyfacepnp.reference.result import PnPResult, PnPStatus
from pyfacepnp.reference.so3 import so3_exp

_LAMBDA0, _LAMBDA_MIN, _MAX_REJECTIONS = 1e-4, 1e-12, 8
_MAX_POLISH = 2  # undamped exact-Hessian steps once the cost cannot judge steps
_EXACT_AFTER = 10  # iterations of Gauss-Newton before the stragglers switch to Newton


def _check(points3d, points2d, K, weights, init, loss, huber_delta, max_iterations, distortion, camera_model):
    for name, x, last in (("points3d", points3d, 3), ("points2d", points2d, 2)):
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] != last:
            raise ValueError(f"{name} must have shape (..., N, {last}), got {tuple(getattr(x, 'shape', ()))}")
        if x.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if points3d.shape[-2] != points2d.shape[-2]:
        raise ValueError(
            f"points3d and points2d must have the same N, got {points3d.shape[-2]} and {points2d.shape[-2]}"
        )
    if points3d.shape[-2] < 4:
        raise ValueError(f"PnP needs N >= 4 points, got points3d of shape {tuple(points3d.shape)}")
    if not isinstance(K, torch.Tensor) or K.shape[-2:] != (3, 3):
        raise ValueError(f"K must have shape (..., 3, 3), got {tuple(getattr(K, 'shape', ()))}")
    n = points3d.shape[-2]
    if weights is not None and weights.shape[-1:] != (n,) and weights.shape[-2:] != (n, 2):
        raise ValueError(f"weights must have shape (..., N) or (..., N, 2) with N={n}, got {tuple(weights.shape)}")
    if init is not None and (
        len(init) != 2 or init[0].shape[-2:] != (3, 3) or init[1].shape[-1:] != (3,)
    ):
        raise ValueError("init must be a tuple (R (..., 3, 3), t (..., 3))")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not huber_delta > 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    check_distortion(distortion, camera_model)
    if camera_model == "fisheye" and distortion is None:
        # As in the op: a fisheye with k = 0 is not the pinhole, so None would be ambiguous.
        raise ValueError("camera_model='fisheye' needs its coefficients: distortion (..., 4)")


def _invalid_problems(X, x, K, w, D):
    """Per-problem flags: non-finite values, negative weights or a singular K."""
    finite = torch.isfinite(X).flatten(1).all(1) & torch.isfinite(x).flatten(1).all(1)
    finite &= torch.isfinite(K).flatten(1).all(1) & torch.isfinite(w).flatten(1).all(1)
    if D is not None:
        finite &= torch.isfinite(D).all(1)
    k_ok = torch.det(K[:, :2, :2]).abs() > 0
    return ~(finite & k_ok & (w >= 0).flatten(1).all(1))


def _move_in_front(R, t, X, w, which):
    """As in the op (move_in_front): a start that puts a weighted point behind the camera is
    moved back along its optical axis, t_z growing by the centroid's depth deficit plus the
    object's size (the mean |X - centroid|_inf), doubling until every point is in front, so no
    problem is discarded for its start."""
    if not bool(which.any()):
        return t
    used = (w > 0).any(-1)
    X, R, t, ws = X.detach(), R.detach(), t.detach(), w.detach().sum(-1) * used
    z = torch.where(used, (X @ R.transpose(-1, -2) + t[:, None])[..., 2], torch.inf)
    mean = (X * ws[..., None]).sum(1) / ws.sum(-1).clamp_min(1e-300)[:, None]
    n = used.sum(-1).clamp_min(1)
    spread = ((X - mean[:, None]).abs().amax(-1) * used).sum(-1) / n
    shift = (-(mean[:, None] @ R.transpose(-1, -2))[:, 0, 2] - t[:, 2]).clamp_min(0) + spread
    for _ in range(64):
        bad = which & ~((z + shift[:, None]) > 0).all(-1)
        if not bool(bad.any()):
            break
        shift = torch.where(bad, 2 * shift, shift)
    dz = torch.where(which, shift, 0.0).detach()
    return t + torch.stack([torch.zeros_like(dz), torch.zeros_like(dz), dz], -1)


def _cost_in_front(R, t, X, x, K, w, used, loss, delta, lens):
    """The objective, ``inf`` where a weighted point is not in front of the camera."""
    uv, z = project(R, t, X, K, *lens)
    E = cost_of_residuals(uv - x, w, loss, delta)
    ok = ((z > 0) | ~used).all(-1) & torch.isfinite(E)
    return torch.where(ok, E, torch.full_like(E, float("inf")))


def _lm_iteration(R, t, E, lam, X, x, K, w, used, floor, tol, loss, delta, exact, polished, lens):
    """One damped (Gauss-)Newton step for each problem given (all of them active).

    With ``exact``, the step uses the exact Hessian (autograd, detached) wherever it is
    positive definite: Gauss-Newton converges only linearly on large-residual problems.
    Once the decrease a full step predicts is at the rounding level of E, comparing costs
    cannot judge steps any more: the problem then takes undamped exact-Hessian "polish"
    steps, accepted unconditionally (``polished`` counts them), as the op does.

    Returns ``(R_new, t_new, E_new, converged, step_taken, accepted, gain, polishing)``: a
    problem is converged without stepping when its cost is at the rounding floor, its
    undamped step is below tolerance (the test the op uses) or it has been polished
    twice; otherwise it steps, the step is accepted if it lowers the cost (or polishes),
    and ``gain`` is the actual over the predicted decrease.
    """
    A, n = X.shape[:2]
    uv, _, J = residual_jacobian(R, t, X, K, *lens)
    r = uv - x
    Wr = w * robust_weight((w * r * r).sum(-1), loss, delta)[..., None]  # (A, N, 2)
    Jf = J.reshape(A, 2 * n, 6)
    WJ = (Wr.reshape(A, 2 * n, 1) * Jf).transpose(1, 2)  # (A, 6, 2N)
    g = (WJ @ r.reshape(A, 2 * n, 1)).squeeze(-1)
    H = WJ @ Jf
    gd = g.detach()

    def newton_of(H_):
        sol, info = torch.linalg.solve_ex(H_.detach(), gd[:, :, None])
        return sol.squeeze(-1), info == 0

    newton, ok = newton_of(H)
    at_rounding = ok & (0.5 * (gd * newton).sum(-1).abs() <= 100 * torch.finfo(E.dtype).eps * E)
    use_exact = at_rounding if not exact else torch.ones_like(at_rounding)
    if bool(use_exact.any()):
        sel = use_exact.nonzero().squeeze(1)
        He = _exact_hessian(R[sel].detach(), t[sel].detach(), X[sel].detach(), x[sel].detach(), K[sel].detach(),
                            w[sel].detach(), loss, delta, _detached(_lens_at(lens, sel)))
        pd = torch.linalg.cholesky_ex(He)[1] == 0
        H = H.index_put((sel,), torch.where(pd[:, None, None], He, H[sel]))
        newton, ok = newton_of(H)
    small = (newton[:, :3].abs().amax(-1) <= tol) & (newton[:, 3:].abs().amax(-1) <= tol * t.detach().norm(dim=-1))
    converged = (E <= floor) | (ok & small) | (polished >= _MAX_POLISH)
    polishing = at_rounding & ~converged
    dH = H.detach().diagonal(dim1=1, dim2=2)
    damp = torch.where(polishing[:, None], 0.0, lam[:, None] * dH) + 1e-12 * dH.amax(-1, keepdim=True)
    step = -torch.linalg.solve(H + torch.diag_embed(damp), g)
    R_new = so3_exp(step[:, :3]) @ R
    t_new = t + step[:, 3:]
    E_new = _cost_in_front(R_new, t_new, X, x, K, w, used, loss, delta, lens).detach()
    sd = step.detach()
    predicted = -((gd * sd).sum(-1) + 0.5 * (sd[:, None] @ H.detach() @ sd[:, :, None]).reshape(-1))
    gain = (E - E_new) / predicted.clamp_min(torch.finfo(E.dtype).tiny)
    step_taken = ~converged
    accepted = step_taken & ((E_new < E) | (polishing & torch.isfinite(E_new)))
    return R_new, t_new, E_new, converged, step_taken, accepted, gain, polishing


def _lens_at(lens, idx):
    """``(distortion, camera_model)`` of the problems ``idx``."""
    return (None if lens[0] is None else lens[0][idx], lens[1])


def _detached(lens):
    return (None if lens[0] is None else lens[0].detach(), lens[1])


def _exact_hessian(R, t, X, x, K, w, loss, delta, lens):
    """``d^2 E / d theta^2`` at ``(R, t)`` by double autograd, ``(B, 6, 6)``."""
    with torch.enable_grad():
        theta = torch.zeros(R.shape[0], 6, dtype=R.dtype, device=R.device, requires_grad=True)
        Rl = so3_exp(theta[:, :3]) @ R
        E = reprojection_cost(Rl, t + theta[:, 3:], X, x, K, w, loss, delta, *lens).sum()
        (g,) = torch.autograd.grad(E, theta, create_graph=True)
        rows = [torch.autograd.grad(g[:, k].sum(), theta, retain_graph=k < 5)[0] for k in range(6)]
    H = torch.stack(rows, 1)
    return 0.5 * (H + H.transpose(1, 2))


def solve_pnp_reference(
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss: str = "l2",
    huber_delta: float = 1.0,
    max_iterations: int = 100,
    tolerance: float = 1e-10,
    distortion: torch.Tensor | None = None,
    camera_model: str = "pinhole",
) -> PnPResult:
    """Solve batched PnP by Levenberg-Marquardt on the reprojection objective.

    Minimises ``E = 1/2 sum_i rho(w_i . ||u(R X_i + t) - x_i||^2)`` per problem, with
    ``u(Xc) = K[:2] @ (d(Xc_x / z, Xc_y / z), 1)`` for the lens ``d`` of ``distortion`` and
    ``camera_model`` (:mod:`pyfacepnp.geometry.distortion`; without distortion ``u`` is
    the pinhole ``pi(K Xc)``), with the same conventions as :func:`pyfacepnp.solve_pnp`
    (OpenCV's camera models, local pose updates ``R <- exp([dw]x) R``, ``t <- t + dt``).
    Without ``init`` the pose starts from :func:`omega_initialisation` (on the undistorted
    rays, with a lens). A problem stops when its undamped Gauss-Newton step satisfies
    ``|dw|_inf <= tol`` and ``|dt|_inf <= tol |t|`` with ``tol = max(tolerance, 10 eps)``
    of the dtype, when its cost reaches the rounding floor of the pixels, or when eight
    damped steps in a row fail to lower the cost.
    Problems still running after ten iterations switch to the exact Hessian (by
    autograd), and so does every problem once its cost can no longer tell a better pose
    from a worse one (a full step predicts a decrease below 100 eps E): it then takes at
    most two undamped Newton steps, like the op's final polish.

    Statuses follow the op: non-finite inputs (distortion coefficients included), negative
    weights, a singular K (its bottom row is ignored, as by the op) or fewer than four
    weighted points give ``INVALID_INPUT`` (outputs ``R = I``, ``t = 0``, ``cost = 0``); a
    Hessian that is not positive definite at the solution, or a start that no shift along the
    optical axis puts in front of the camera, gives ``DEGENERATE`` (starts with a weighted
    point behind the camera are moved in front, as in the op). Only ``CONVERGED`` problems
    carry gradients and a covariance; the others' outputs are detached and their covariance
    is zero. No problem affects another.

    Args:
        points3d: ``(..., N, 3)`` object points, N >= 4.
        points2d: ``(..., N, 2)`` pixels.
        K: ``(..., 3, 3)`` intrinsics; leading dims broadcast with the points'.
        weights: ``None``, ``(..., N)`` or per-axis ``(..., N, 2)``, non-negative.
        init: optional ``(R (..., 3, 3), t (..., 3))`` starting pose (not differentiated);
            where it puts a weighted point behind the camera, the global initialisation
            is used instead (as in the op).
        loss: ``"l2"`` or ``"huber"``.
        huber_delta: Huber threshold on ``sqrt(w . r^2)``.
        max_iterations: LM iterations at most (rejected steps count).
        tolerance: step tolerance (radians for dw, relative to |t| for dt).
        distortion: ``None`` or ``(..., D)`` lens coefficients in OpenCV's order, ``D`` in
            ``DISTORTION_LENGTHS[camera_model]``; leading dims broadcast with the points'.
            Gradients reach them like every other input.
        camera_model: ``"pinhole"`` (OpenCV's radial-tangential-thin-prism model) or
            ``"fisheye"`` (``cv2.fisheye``, which needs ``distortion``).

    Returns:
        :class:`PnPResult` with ``R (..., 3, 3)``, ``t (..., 3)``, ``cost (...)``,
        ``iterations (...)`` int32, ``status (...)`` int32 (:class:`PnPStatus`) and
        ``covariance (..., 6, 6)``, the inverse exact Hessian of E in (dw, dt).

    Example:
        >>> X = torch.randn(4, 10, 3, dtype=torch.float64)
        >>> K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=torch.float64)
        >>> p = (X + torch.tensor([0.1, 0, 6], dtype=torch.float64)) @ K.T
        >>> res = solve_pnp_reference(X, p[..., :2] / p[..., 2:], K)
        >>> bool((res.status == 0).all()), bool(torch.allclose(res.t[:, 2], torch.full((4,), 6.0, dtype=torch.float64)))
        (True, True)
    """
    _check(points3d, points2d, K, weights, init, loss, huber_delta, max_iterations, distortion, camera_model)
    n = points3d.shape[-2]
    w = expand_weights(weights, points2d)
    shapes = [points3d.shape[:-2], points2d.shape[:-2], K.shape[:-2], w.shape[:-2]]
    if init is not None:
        shapes += [init[0].shape[:-2], init[1].shape[:-1]]
    if distortion is not None:
        shapes.append(distortion.shape[:-1])
    batch = torch.broadcast_shapes(*shapes)
    X = points3d.expand(*batch, n, 3).reshape(-1, n, 3)
    x = points2d.expand(*batch, n, 2).reshape(-1, n, 2)
    # As in the op, only K's top two rows are read: its bottom row is taken as [0, 0, 1].
    Kb = K.expand(*batch, 3, 3).reshape(-1, 3, 3)[:, :2]
    Kb = torch.cat([Kb, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=Kb.dtype, device=Kb.device).expand(
        Kb.shape[0], 1, 3)], 1)
    w = w.to(X.dtype).expand(*batch, n, 2).reshape(-1, n, 2)
    B, dtype, device = X.shape[0], X.dtype, X.device
    eye = torch.eye(3, dtype=dtype, device=device)
    D = None
    if distortion is not None:
        D = distortion.to(dtype).expand(*batch, distortion.shape[-1]).reshape(B, -1)

    # Bad problems are swapped for a harmless one so no inf/NaN enters the batched math.
    invalid = _invalid_problems(X, x, Kb, w, D)
    invalid |= (w.sum(-1) > 0).sum(-1) < 4
    bad = invalid
    if bool(bad.any()):
        dX = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]], dtype=dtype, device=device)
        dX = torch.cat([dX, dX.new_zeros(n - 4, 3)]) + torch.tensor([0, 0, 4.0], dtype=dtype, device=device)
        dx = dX[:, :2] / dX[:, 2:]
        m3, m2 = bad[:, None, None], bad[:, None, None]
        X = torch.where(m3, dX, X)
        x = torch.where(m2, dx, x)
        Kb = torch.where(m3, eye, Kb)
        w = torch.where(m2, torch.ones_like(w), w)
        if D is not None:
            D = torch.where(bad[:, None], 0.0, D)
    lens = (D, camera_model)

    if init is None:
        R, t = omega_initialisation(X, x, Kb, w, loss, huber_delta, *lens)
    used = w.sum(-1) > 0
    if init is not None:
        R = init[0].detach().to(dtype).expand(*batch, 3, 3).reshape(-1, 3, 3)
        t = init[1].detach().to(dtype).expand(*batch, 3).reshape(-1, 3)
        # As in the op: an init that puts a weighted point behind the camera is replaced
        # by the global initialisation.
        behind = ~torch.isfinite(_cost_in_front(R, t, X, x, Kb, w, used, loss, huber_delta, lens))
        if bool(behind.any()):
            i = behind.nonzero().squeeze(1)
            Ri, ti = omega_initialisation(X[i], x[i], Kb[i], w[i], loss, huber_delta, *_lens_at(lens, i))
            R, t = R.index_put((i,), Ri), t.index_put((i,), ti)
    scale = x.detach().abs().amax((1, 2)) + 1
    eps = torch.finfo(dtype).eps
    floor = 0.5 * (8 * eps * scale) ** 2 * w.detach().sum((1, 2))
    tol = max(float(tolerance), 10 * eps)

    E = _cost_in_front(R, t, X, x, Kb, w, used, loss, huber_delta, lens).detach()
    t = _move_in_front(R, t, X, w, ~bad & ~torch.isfinite(E))
    E = _cost_in_front(R, t, X, x, Kb, w, used, loss, huber_delta, lens).detach()
    no_start = ~bad & ~torch.isfinite(E)  # no start could be put in front of the camera
    active = ~bad & ~no_start
    lam = torch.full((B,), _LAMBDA0, dtype=dtype, device=device)
    growth = torch.full((B,), 2.0, dtype=dtype, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    iterations = torch.zeros(B, dtype=torch.int32, device=device)
    rejections = torch.zeros(B, dtype=torch.int32, device=device)
    polished = torch.zeros(B, dtype=torch.int32, device=device)
    for it in range(max_iterations):
        # Work on the active problems only; index_put keeps the scatter differentiable.
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        sub = (X[idx], x[idx], Kb[idx], w[idx])
        Ra, ta, Ea, la = R[idx], t[idx], E[idx], lam[idx]
        Rn, tn, En, done, step_taken, accept, gain, polishing = _lm_iteration(
            Ra, ta, Ea, la, *sub, used[idx], floor[idx], tol, loss, huber_delta, it >= _EXACT_AFTER, polished[idx],
            _lens_at(lens, idx),
        )
        polished[idx] += polishing.to(torch.int32)
        R = R.index_put((idx,), torch.where(accept[:, None, None], Rn, Ra))
        t = t.index_put((idx,), torch.where(accept[:, None], tn, ta))
        E = E.index_put((idx,), torch.where(accept, En, Ea))
        # Nielsen's damping update: shrink by the gain ratio on success, grow 2, 4, 8... on failure.
        nu = growth[idx]
        shrink = (1 - (2 * gain - 1) ** 3).clamp(1 / 3, 1)
        shrink = torch.where(polishing, 1.0, shrink)
        lam[idx] = torch.where(accept, (la * shrink).clamp_min(_LAMBDA_MIN), torch.where(step_taken, la * nu, la))
        growth[idx] = torch.where(accept, 2.0, torch.where(step_taken, nu * 2, nu))
        iterations[idx] += step_taken.to(torch.int32)
        rejections[idx] = torch.where(accept, 0, rejections[idx] + step_taken.to(torch.int32))
        # No damped step lowers the cost any more: the pose is at the dtype's resolution.
        done |= rejections[idx] >= _MAX_REJECTIONS
        converged[idx] |= done
        active[idx] &= ~done

    status = torch.full((B,), int(PnPStatus.MAX_ITERATIONS), dtype=torch.int32, device=device)
    status[converged] = int(PnPStatus.CONVERGED)
    cost = reprojection_cost(R, t, X, x, Kb, w, loss, huber_delta, *lens)
    H = _exact_hessian(R.detach(), t.detach(), X.detach(), x.detach(), Kb.detach(), w.detach(), loss, huber_delta,
                       _detached(lens))
    L, info = torch.linalg.cholesky_ex(H)
    pd = (info == 0) & torch.isfinite(H).flatten(1).all(1)
    eye6 = torch.eye(6, dtype=dtype, device=device)
    covariance = torch.where(pd[:, None, None], torch.cholesky_inverse(torch.where(pd[:, None, None], L, eye6)), 0.0)
    status[~pd | no_start] = int(PnPStatus.DEGENERATE)
    status[invalid] = int(PnPStatus.INVALID_INPUT)

    # Only converged problems are differentiable; invalid ones get fixed outputs.
    ok = status == int(PnPStatus.CONVERGED)
    covariance = torch.where(ok[:, None, None], covariance, 0.0)
    if not bool(ok.all()):
        R = torch.where(ok[:, None, None], R, R.detach())
        t = torch.where(ok[:, None], t, t.detach())
        cost = torch.where(ok, cost, cost.detach())
        R = torch.where(invalid[:, None, None], eye, R)
        t = torch.where(invalid[:, None], 0.0, t)
        cost = torch.where(invalid, 0.0, cost)
    return PnPResult(
        R.reshape(*batch, 3, 3),
        t.reshape(*batch, 3),
        cost.reshape(batch),
        iterations.reshape(batch),
        status.reshape(batch),
        covariance.reshape(*batch, 6, 6),
    )
