"""Rotations: skew matrices, the SO(3) exponential and logarithm (OpenCV's Rodrigues vectors),
the geodesic error between two rotations, the nearest rotation to a matrix, and rotations
from Euler angles.

This module is the one home of these formulas; the reference solver imports them from here.
It imports nothing else of the package, so every module (the ops' wrappers included) can
import the geometry layer without an import cycle.

The rotation error uses ``atan2(|skew part|, trace part)``, accurate for small and large
angles alike (the ``acos`` of the trace loses half the digits near zero).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "skew", "so3_exp", "rvec_to_matrix", "matrix_to_rvec", "quaternion_to_matrix", "rotation_angle",
    "rotation_error_deg", "nearest_rotation", "rotation_from_euler",
]


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``[v]x`` with ``[v]x @ u = v x u``.

    Args:
        v: ``(..., 3)`` vectors.

    Returns:
        ``(..., 3, 3)`` skew-symmetric matrices.

    Example:
        >>> skew(torch.tensor([0.0, 0.0, 1.0])) @ torch.tensor([1.0, 0.0, 0.0])
        tensor([0., 1., 0.])
    """
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``exp([w]x)`` from axis-angle vectors (Rodrigues' formula).

    Small angles use Taylor series, selected with ``torch.where`` on a clamped angle so
    that both branches (and their gradients) stay finite at ``w = 0``.

    Args:
        w: ``(..., 3)`` axis-angle vectors (radians).

    Returns:
        ``(..., 3, 3)`` rotation matrices.

    Example:
        >>> R = so3_exp(torch.tensor([0.0, 0.0, torch.pi / 2]))
        >>> torch.allclose(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
        True
    """
    theta2 = (w * w).sum(-1)
    small = theta2 < (1e-6 if w.dtype == torch.float32 else 1e-12) ** 0.5
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(theta)) / safe2)
    k = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def _numpy_in_numpy_out(fn, x):
    """Run a torch formula on a numpy array (float64) and hand back a numpy array."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    return fn(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def rvec_to_matrix(rvec):
    """Rotation matrices from Rodrigues vectors (OpenCV's ``rvec``: axis times angle, radians),
    the same map as ``cv2.Rodrigues(rvec)`` and :func:`so3_exp`.

    Args:
        rvec: ``(..., 3)`` torch tensor (differentiable) or numpy array.

    Returns:
        ``(..., 3, 3)`` rotations, of the input's kind (numpy input gives float64).

    Example:
        >>> R = rvec_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
        >>> np.round(R @ [1.0, 0.0, 0.0], 12) + 0.0
        array([0., 1., 0.])
    """
    return _numpy_in_numpy_out(so3_exp, rvec)


def _quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True)
    w, a, b, c = q.unbind(-1)
    R = torch.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w),
                     2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w),
                     2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], -1)
    return R.reshape(q.shape[:-1] + (3, 3))


def quaternion_to_matrix(q):
    """Rotation matrices from quaternions ``(w, x, y, z)`` (normalised first), batched; torch
    (differentiable) or numpy. Normalised Gaussian 4-vectors give uniformly random rotations.

    Example:
        >>> quaternion_to_matrix(np.array([1.0, 0.0, 0.0, 0.0]))
        array([[1., 0., 0.],
               [0., 1., 0.],
               [0., 0., 1.]])
    """
    return _numpy_in_numpy_out(_quaternion_to_matrix, q)


# asin(s) / s = sum_k c_k s^(2k); with s^2 < _LOG_SERIES_S2 the terms below reach double precision.
_ASIN_SERIES = [math.comb(2 * k, k) / (4**k * (2 * k + 1)) for k in range(9)]
_LOG_SERIES_S2 = 1e-2


def _matrix_to_rvec(R: torch.Tensor) -> torch.Tensor:
    v = 0.5 * torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    c = 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)  # cos(angle)
    s2 = (v * v).sum(-1)  # sin(angle)^2
    # sqrt on a clamped value: at angle pi exactly (s2 = 0) the gradient stays finite.
    theta = torch.atan2(s2.clamp_min(torch.finfo(R.dtype).tiny).sqrt(), c)
    # Beyond 2 pi / 3 the axis comes from the symmetric part, (R + R^T) / 2 - c I = (1 - c) a a^T:
    # near pi, v = sin(angle) a is too small to give the axis to full precision.
    near_pi = c < -0.5
    small = ~near_pi & (s2 < _LOG_SERIES_S2)
    exact = ~near_pi & ~small
    # Each branch runs on inputs made harmless where it is not selected, so no inf or NaN
    # gradient leaks through torch.where.
    s2_small = torch.where(small, s2, 0.0)
    series = torch.zeros_like(s2)
    for coef in reversed(_ASIN_SERIES):
        series = series * s2_small + coef
    s_exact = torch.where(exact, s2, 1.0).sqrt()
    ratio = torch.where(small, series, theta / s_exact)  # angle / sin(angle)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    B = torch.where(near_pi[..., None, None], 0.5 * (R + R.transpose(-1, -2)) - c[..., None, None] * eye, eye)
    k = B.diagonal(dim1=-2, dim2=-1).argmax(-1)  # the axis' largest component: a well-scaled column
    col = torch.take_along_dim(B, k[..., None, None].expand(*B.shape[:-2], 3, 1), -1).squeeze(-1)
    axis = col / (col * col).sum(-1, keepdim=True).sqrt()
    # v = sin(angle) a with sin(angle) >= 0 fixes the sign (at pi exactly both signs are right).
    axis = torch.where((axis * v).sum(-1, keepdim=True) < 0, -axis, axis)
    return torch.where(near_pi[..., None], theta[..., None] * axis, ratio[..., None] * v)


def matrix_to_rvec(R):
    """Rodrigues vectors (axis times angle, angle in ``[0, pi]``) of rotation matrices: the
    inverse of :func:`rvec_to_matrix`, as ``cv2.Rodrigues(R)``.

    Accurate at every angle: a series near 0 and the axis from the symmetric part of ``R``
    near ``pi`` (where ``R - R^T`` vanishes); differentiable (torch), with finite gradients
    everywhere. At ``pi`` exactly, ``r`` and ``-r`` are the same rotation; either may come back.

    Args:
        R: ``(..., 3, 3)`` rotations, torch tensor or numpy array.

    Returns:
        ``(..., 3)`` Rodrigues vectors of the input's kind.

    Example:
        >>> matrix_to_rvec(rvec_to_matrix(np.array([0.0, 0.3, 0.0]))).round(12) + 0.0
        array([0. , 0.3, 0. ])
    """
    return _numpy_in_numpy_out(_matrix_to_rvec, R)


def rotation_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians) between rotations, ``(..., 3, 3) x2 -> (...)``.

    Uses ``atan2(|skew part|, trace part)``, accurate for small and large angles.

    Example:
        >>> R = so3_exp(torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64))
        >>> float(rotation_angle(R, torch.eye(3, dtype=torch.float64)))
        0.3
    """
    d = R1 @ R2.transpose(-1, -2)
    tr = d.diagonal(dim1=-2, dim2=-1).sum(-1)
    v = torch.stack([d[..., 2, 1] - d[..., 1, 2], d[..., 0, 2] - d[..., 2, 0], d[..., 1, 0] - d[..., 0, 1]], -1)
    return torch.atan2(v.norm(dim=-1), tr - 1)


def rotation_error_deg(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations in degrees, ``(..., 3, 3) x2 -> (...)`` in ``[0, 180]``.

    Example:
        >>> Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
        >>> rotation_error_deg(Rz, torch.eye(3))
        tensor(90.)
    """
    return torch.rad2deg(rotation_angle(R1, R2))


def nearest_rotation(M: torch.Tensor) -> torch.Tensor:
    """The rotation closest to ``M`` in Frobenius norm, ``(..., 3, 3) -> (..., 3, 3)``."""
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.ones_like(M[..., 0])
    D[..., 2] = d.sign() + (d == 0).to(d.dtype)
    return (U * D[..., None, :]) @ Vh


def _elementary(axis: str, angle):
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    rows = {"x": ((o, z, z), (z, c, -s), (z, s, c)),
            "y": ((c, z, s), (z, o, z), (-s, z, c)),
            "z": ((c, -s, z), (s, c, z), (z, z, o))}[axis]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotation_from_euler(axes: str, *angles) -> np.ndarray:
    """The product of rotations about the named axes, left to right (numpy, float64).

    ``rotation_from_euler("zyx", a, b, c) = Rz(a) @ Ry(b) @ Rx(c)``: the rotation that
    turns about x by ``c`` first, then about y by ``b``, then about z by ``a`` (fixed
    axes). Angles in radians, scalars or arrays of one broadcastable shape ``(...)``.

    Returns:
        ``(..., 3, 3)`` rotation matrices.

    Example:
        >>> R = rotation_from_euler("zyx", np.pi / 2, 0.0, 0.0)
        >>> np.round(R @ [1.0, 0.0, 0.0], 12) + 0.0
        array([0., 1., 0.])
    """
    if len(axes) != len(angles) or not set(axes) <= set("xyz"):
        raise ValueError(f"axes must name one of x, y, z per angle, got {axes!r} for {len(angles)} angle(s)")
    angles = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in angles))
    out = _elementary(axes[0], angles[0])
    for axis, angle in zip(axes[1:], angles[1:]):
        out = out @ _elementary(axis, angle)
    return out
