"""Lens distortion of normalised image points, in OpenCV's conventions, and its inverse.

A camera-frame point ``Xc`` has normalised coordinates ``n = (Xc_x / z, Xc_y / z)``; the lens
moves them to ``nd = distort(n)`` and the pixels are ``u = K[:2] @ (nd, 1)`` (see
:func:`~pyfacepnp.geometry.camera.project_points`). Two models:

- ``"pinhole"``, OpenCV's ``cv2.projectPoints`` model, coefficients in OpenCV's order
  ``k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4]]]`` (4, 5, 8 or 12 of them; missing trailing terms
  are zero). With ``r2 = x^2 + y^2`` and
  ``radial = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)``::

      xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2) + s1 r2 + s2 r2^2
      yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y + s3 r2 + s4 r2^2

- ``"fisheye"``, ``cv2.fisheye``'s equidistant model, exactly four coefficients ``k1..k4``:
  ``theta = atan(r)``, ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``,
  ``nd = (theta_d / r) n``, whose limit at ``r = 0`` is ``nd = n``.

``distortion=None`` everywhere means no lens: ``nd = n``, whatever the camera model.

This module imports only torch, so input checks elsewhere (the ops' wrappers) can use
:func:`check_distortion` cheaply.
"""

from __future__ import annotations

import torch

__all__ = [
    "CAMERA_MODELS", "DISTORTION_LENGTHS", "check_distortion", "distort", "distort_with_jacobian", "undistort",
]

CAMERA_MODELS = ("pinhole", "fisheye")
DISTORTION_LENGTHS = {"pinhole": (4, 5, 8, 12), "fisheye": (4,)}
_NAMES = {"pinhole": "k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4]]]", "fisheye": "k1 k2 k3 k4"}


def check_distortion(coeffs, camera_model: str = "pinhole") -> None:
    """Raise a clear error unless ``(coeffs, camera_model)`` is a supported lens.

    Args:
        coeffs: ``None`` (no distortion) or a float32/float64 tensor ``(..., D)`` with
            ``D`` in ``DISTORTION_LENGTHS[camera_model]``.
        camera_model: one of ``CAMERA_MODELS``.

    Raises:
        ValueError: unknown camera model, no last dimension, or a length the model does
            not accept (OpenCV's 14-coefficient tilted model among them).
        TypeError: ``coeffs`` is neither ``None`` nor a floating tensor.

    Example:
        >>> check_distortion(torch.zeros(5))
        >>> check_distortion(torch.zeros(5), "fisheye")
        Traceback (most recent call last):
        ...
        ValueError: fisheye distortion needs D in (4,) coefficients (k1 k2 k3 k4), got shape (5,)
    """
    if not isinstance(camera_model, str) or camera_model not in CAMERA_MODELS:
        raise ValueError(f"camera_model must be one of {CAMERA_MODELS}, got {camera_model!r}")
    if coeffs is None:
        return
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"distortion must be None or a torch tensor (..., D), got {type(coeffs).__name__}")
    if coeffs.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"distortion must be float32 or float64, got {coeffs.dtype}")
    lengths = DISTORTION_LENGTHS[camera_model]
    if coeffs.dim() < 1 or coeffs.shape[-1] not in lengths:
        raise ValueError(
            f"{camera_model} distortion needs D in {lengths} coefficients ({_NAMES[camera_model]}), "
            f"got shape {tuple(coeffs.shape)}"
        )


# atan(r) / r = sum_k (-1)^k r2^k / (2k + 1). Near r = 0 the closed form's derivatives in r2
# cancel (relative error ~ eps / r2^order); below r2 = 0.1 these 20 terms are exact to
# rounding for the value and the first and second derivatives alike.
_ATAN_SERIES = [(-1) ** k / (2 * k + 1) for k in range(20)]
_ATAN_SERIES_R2 = 0.1


def _atan_ratio(r2: torch.Tensor):
    """``f = atan(sqrt(r2)) / sqrt(r2)`` and ``df / dr2``, smooth through ``r2 = 0``."""
    small = r2 < _ATAN_SERIES_R2
    # Each branch sees an input that is harmless where the other is selected, so neither
    # leaks an inf or NaN gradient through torch.where.
    rs = torch.where(small, r2, 0.0)
    f_s, df_s = torch.zeros_like(rs), torch.zeros_like(rs)
    for a in reversed(_ATAN_SERIES):  # Horner for the polynomial and its derivative together
        df_s = df_s * rs + f_s
        f_s = f_s * rs + a
    rl = torch.where(small, 1.0, r2)
    r = rl.sqrt()
    f_l = torch.atan(r) / r
    df_l = (1 / (1 + rl) - f_l) / (2 * rl)
    return torch.where(small, f_s, f_l), torch.where(small, df_s, df_l)


def _pinhole(x, y, c, jacobian: bool):
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = torch.nn.functional.pad(c, (0, 12 - c.shape[-1])).unbind(-1)
    x2, y2, xy = x * x, y * y, x * y
    r2 = x2 + y2
    den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / den
    xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x2) + r2 * (s1 + s2 * r2)
    yd = y * radial + p1 * (r2 + 2 * y2) + 2 * p2 * xy + r2 * (s3 + s4 * r2)
    if not jacobian:
        return xd, yd, None
    # d/dr2 of radial and of the thin-prism terms; d r2 / dx = 2 x, d r2 / dy = 2 y.
    dradial = (k1 + r2 * (2 * k2 + 3 * k3 * r2) - radial * (k4 + r2 * (2 * k5 + 3 * k6 * r2))) / den
    dpx, dpy = s1 + 2 * s2 * r2, s3 + 2 * s4 * r2
    j00 = radial + 2 * x2 * dradial + 2 * p1 * y + 6 * p2 * x + 2 * x * dpx
    j01 = 2 * xy * dradial + 2 * p1 * x + 2 * p2 * y + 2 * y * dpx
    j10 = 2 * xy * dradial + 2 * p1 * x + 2 * p2 * y + 2 * x * dpy
    j11 = radial + 2 * y2 * dradial + 6 * p1 * y + 2 * p2 * x + 2 * y * dpy
    return xd, yd, (j00, j01, j10, j11)


def _fisheye(x, y, c, jacobian: bool):
    k1, k2, k3, k4 = c.unbind(-1)
    r2 = x * x + y * y
    f, df = _atan_ratio(r2)  # theta / r
    t2 = r2 * f * f  # theta^2
    poly = 1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
    g = f * poly  # theta_d / r, a smooth function of r2
    xd, yd = g * x, g * y
    if not jacobian:
        return xd, yd, None
    dpoly = k1 + t2 * (2 * k2 + t2 * (3 * k3 + 4 * k4 * t2))
    dg = df * poly + f * dpoly * (f * f + 2 * r2 * f * df)  # d g / d r2
    # J = g I + 2 g'(r2) n n^T
    return xd, yd, (g + 2 * dg * x * x, 2 * dg * x * y, 2 * dg * x * y, g + 2 * dg * y * y)


def _apply(n, coeffs, camera_model, jacobian):
    check_distortion(coeffs, camera_model)
    x, y = n.unbind(-1)
    c = coeffs[..., None, :]  # one lens per batch element, shared by its N points
    xd, yd, j = (_pinhole if camera_model == "pinhole" else _fisheye)(x, y, c, jacobian)
    nd = torch.stack([xd, yd], -1)
    if not jacobian:
        return nd
    j = torch.broadcast_tensors(*j, xd)[:4]
    return nd, torch.stack(j, -1).reshape(*xd.shape, 2, 2)


def distort(n: torch.Tensor, coeffs: torch.Tensor | None, camera_model: str = "pinhole") -> torch.Tensor:
    """Distorted normalised coordinates ``nd = d(n)`` of the module's lens models.

    Differentiable (twice, and smoothly through ``r = 0`` for the fisheye) with respect to
    ``n`` and ``coeffs``.

    Args:
        n: ``(..., N, 2)`` normalised (undistorted) coordinates ``(x / z, y / z)``.
        coeffs: ``None`` (returns ``n``) or ``(..., D)`` coefficients; their batch dims
            broadcast against ``n``'s.
        camera_model: ``"pinhole"`` or ``"fisheye"``.

    Returns:
        ``(..., N, 2)`` distorted normalised coordinates.

    Example:
        >>> distort(torch.tensor([[0.5, 0.0]]), torch.tensor([-0.2, 0.0, 0.0, 0.0]))
        tensor([[0.4750, 0.0000]])
    """
    if coeffs is None:
        check_distortion(None, camera_model)
        return n
    return _apply(n, coeffs, camera_model, jacobian=False)


def distort_with_jacobian(n: torch.Tensor, coeffs: torch.Tensor, camera_model: str = "pinhole"):
    """:func:`distort` and its Jacobian ``J[..., m, i] = d nd_m / d n_i`` in closed form.

    Returns:
        ``(nd (..., N, 2), J (..., N, 2, 2))``, both differentiable.
    """
    return _apply(n, coeffs, camera_model, jacobian=True)


def _solve2(J, b):
    """``J^-1 b`` for stacks of 2x2 systems (inf / NaN where ``J`` is singular)."""
    det = J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]
    s0 = (J[..., 1, 1] * b[..., 0] - J[..., 0, 1] * b[..., 1]) / det
    s1 = (J[..., 0, 0] * b[..., 1] - J[..., 1, 0] * b[..., 0]) / det
    return torch.stack([s0, s1], -1)


def undistort(
    nd: torch.Tensor, coeffs: torch.Tensor | None, camera_model: str = "pinhole", max_iterations: int = 20
) -> torch.Tensor:
    """The inverse of :func:`distort`: ``n`` with ``distort(n) = nd``, by Newton's method.

    Newton with the 2x2 Jacobian, halving a step that does not lower the residual, from
    ``n = nd`` (pinhole) or from the undistorted fisheye angle ``theta = |nd|``; it stops
    once every point's residual is at the rounding level (a few iterations on typical
    lenses). Points that have not converged after ``max_iterations``, or whose root lies
    past a fold of the lens (the Jacobian ``J`` there has an eigenvalue of negative real
    part: pixels outside the region where the model is invertible), come back as NaN
    rather than as a wrong answer. Agrees with ``cv2.undistortPoints`` and
    ``cv2.fisheye.undistortPoints`` (to their convergence) and returns normalised
    coordinates like them without ``P``.

    Differentiable: the first derivatives are those of the inverse map (one Newton step
    at the solution carries the gradient: ``dn = J^-1 (dnd - d_coeffs distort)``).

    Args:
        nd: ``(..., N, 2)`` distorted normalised coordinates, ``K^-1`` applied to pixels.
        coeffs: ``None`` (returns ``nd``) or ``(..., D)``; batch dims broadcast.
        camera_model: ``"pinhole"`` or ``"fisheye"``.
        max_iterations: Newton iterations at most.

    Returns:
        ``(..., N, 2)`` undistorted normalised coordinates (NaN where not converged).

    Example:
        >>> k = torch.tensor([-0.2, 0.0, 0.0, 0.0], dtype=torch.float64)
        >>> undistort(distort(torch.tensor([[0.5, 0.1]], dtype=torch.float64), k), k)
        tensor([[0.5000, 0.1000]], dtype=torch.float64)
    """
    check_distortion(coeffs, camera_model)
    if coeffs is None:
        return nd
    shape = torch.broadcast_shapes(nd.shape[:-2], coeffs.shape[:-1]) + nd.shape[-2:]
    with torch.no_grad():
        target, c = nd.detach().expand(shape), coeffs.detach()
        n = target.clone()
        if camera_model == "fisheye":
            # |nd| is the distorted angle; tan of it is a radius close to the answer.
            theta_d = target.norm(dim=-1, keepdim=True)
            ratio = torch.tan(theta_d.clamp_max(1.5)) / theta_d.clamp_min(torch.finfo(nd.dtype).tiny)
            n = target * torch.where(theta_d > 0, ratio, 1.0)
        tol = 64 * torch.finfo(nd.dtype).eps * (1 + target.abs().amax(-1))

        def residual(n_):
            return (distort(n_, c, camera_model) - target).abs().amax(-1)

        for _ in range(max_iterations):
            d, J = distort_with_jacobian(n, c, camera_model)
            res = (d - target).abs().amax(-1)
            done = res <= tol
            if bool(done.all()):
                break
            step = torch.where(done[..., None], 0.0, _solve2(J, d - target))
            for _ in range(4):  # backtrack: no step may raise the residual
                worse = ~(residual(n - step) <= res) & ~done
                if not bool(worse.any()):
                    break
                step = torch.where(worse[..., None], 0.5 * step, step)
            n = n - step
        J = distort_with_jacobian(n, c, camera_model)[1]
        # A root past a fold of the lens is not the ray that was imaged: beyond a strong
        # barrel's maximum J has a negative eigenvalue (det J < 0), and further out, where
        # radial < 0 turns the point through the centre, two (det > 0 but trace < 0).
        trace = J[..., 0, 0] + J[..., 1, 1]
        ok = (residual(n) <= tol) & (torch.linalg.det(J) > 0) & (trace > 0)
        # (the identity where n failed, so that no inf from a singular J reaches a gradient)
        J = torch.where(ok[..., None, None], J, torch.eye(2, dtype=n.dtype, device=n.device))
    # At the solution this step moves n by rounding only, but through distort(n, coeffs)
    # and nd it carries the implicit-function derivatives of the inverse map.
    n = n - _solve2(J, distort(n, coeffs, camera_model) - nd)
    return torch.where(ok[..., None], n, torch.nan)
