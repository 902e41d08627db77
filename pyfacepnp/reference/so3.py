"""Rotations for the reference solver: skew matrices, the SO(3) exponential (Rodrigues) and
the geodesic angle, defined once in :mod:`pyfacepnp.geometry.rotation` and re-exported here."""

from __future__ import annotations

from pyfacepnp.geometry.rotation import rotation_angle, skew, so3_exp

__all__ = ["rotation_angle", "skew", "so3_exp"]
