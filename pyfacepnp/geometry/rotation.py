"""Rotations: the geodesic error between two rotations, the nearest rotation to a matrix,
and rotations from Euler angles.

The rotation error is the ``atan2`` formula of :func:`pyfacepnp.reference.so3.rotation_angle`
(accurate for small and large angles alike; the ``acos`` of the trace loses half the digits
near zero), re-exported here so that there is one formula.
"""

from __future__ import annotations

import numpy as np
import torch

from pyfacepnp.reference.init import nearest_rotation
from pyfacepnp.reference.so3 import rotation_angle

__all__ = ["rotation_angle", "rotation_error_deg", "nearest_rotation", "rotation_from_euler"]


def rotation_error_deg(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations in degrees, ``(..., 3, 3) x2 -> (...)`` in ``[0, 180]``.

    Example:
        >>> Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
        >>> rotation_error_deg(Rz, torch.eye(3))
        tensor(90.)
    """
    return torch.rad2deg(rotation_angle(R1, R2))


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
