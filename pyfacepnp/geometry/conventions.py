"""Pose conventions: WCPA / ARKitFace (row-vector OpenGL ``R_t``) <-> OpenCV ``(R, t)``.

WCPA stores a pose as a 4x4 matrix ``R_t`` applied to row vectors: a canonical vertex
``v`` goes to the OpenGL camera frame as ``[v, 1] @ R_t``, i.e. ``R_t[:3, :3]`` is the
transpose of the column-vector rotation and ``R_t[3, :3]`` is the translation. The OpenGL
camera looks down ``-z`` with ``+y`` up; OpenCV's looks down ``+z`` with ``+y`` down, so
the two camera frames differ by ``F = diag(1, -1, -1)``:

    x_cv = F x_gl,   R = F R_t[:3, :3]^T,   t = F R_t[3, :3].

This module is the one place that conversion is written. Both functions accept numpy
arrays or torch tensors with any leading batch shape and return the same kind.
"""

from __future__ import annotations

import numpy as np
import torch

from pyfacepnp.geometry.rotation import rotation_from_euler

__all__ = ["wcpa_to_opencv", "opencv_to_wcpa", "wcpa_rotation_from_euler"]


def _check_trailing(name: str, x, shape: tuple) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < len(shape) or tuple(x.shape[-len(shape):]) != shape:
        want = "(..., " + ", ".join(map(str, shape)) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def _flip_yz(x, axis: int):
    """Negate entries 1 and 2 along ``axis`` (counted from the end); copies the input."""
    sign_shape = [1] * x.ndim
    sign_shape[axis] = 3
    if isinstance(x, torch.Tensor):
        sign = torch.tensor([1.0, -1.0, -1.0], dtype=x.dtype, device=x.device)
        return x * sign.reshape(sign_shape)
    return x * np.array([1.0, -1.0, -1.0], dtype=x.dtype).reshape(sign_shape)


def wcpa_to_opencv(R_t):
    """Convert WCPA ``R_t`` matrices to OpenCV-convention rotations and translations.

    Args:
        R_t: ``(..., 4, 4)`` row-vector OpenGL poses (``v_cam = [v, 1] @ R_t``).

    Returns:
        ``(R, t)`` with ``R (..., 3, 3)`` and ``t (..., 3)`` such that the OpenCV camera
        frame point is ``R @ v + t`` (camera looks down ``+z``, ``+y`` down).

    Example:
        >>> R_t = np.eye(4); R_t[3, :3] = [0.0, 0.0, -0.5]
        >>> R, t = wcpa_to_opencv(R_t)
        >>> t + 0.0  # (+ 0.0 turns the -0.0 of the flipped axis into 0.0)
        array([0. , 0. , 0.5])
    """
    _check_trailing("R_t", R_t, (4, 4))
    rot_gl = R_t[..., :3, :3].swapaxes(-1, -2) if isinstance(R_t, np.ndarray) else R_t[..., :3, :3].transpose(-1, -2)
    return _flip_yz(rot_gl, -2), _flip_yz(R_t[..., 3, :3], -1)


def opencv_to_wcpa(R, t):
    """Convert OpenCV ``(R, t)`` to WCPA row-vector OpenGL ``R_t`` matrices.

    Inverse of :func:`wcpa_to_opencv`.

    Args:
        R: ``(..., 3, 3)`` rotations, ``x_cam = R @ v + t`` (OpenCV camera).
        t: ``(..., 3)`` translations in metres. Batch shapes of ``R`` and ``t`` must match.

    Returns:
        ``(..., 4, 4)`` matrices with ``R_t[:3, :3] = (F R)^T``, ``R_t[3, :3] = F t``,
        ``R_t[:3, 3] = 0`` and ``R_t[3, 3] = 1``.

    Example:
        >>> opencv_to_wcpa(np.eye(3), np.array([0.0, 0.0, 0.5]))[3]
        array([ 0. , -0. , -0.5,  1. ])
    """
    _check_trailing("R", R, (3, 3))
    _check_trailing("t", t, (3,))
    if tuple(R.shape[:-2]) != tuple(t.shape[:-1]):
        raise ValueError(
            f"R and t must share a batch shape, got R {tuple(R.shape)} and t {tuple(t.shape)}"
        )
    rot_gl = _flip_yz(R, -2)
    t_gl = _flip_yz(t, -1)
    batch = tuple(R.shape[:-2])
    if isinstance(R, torch.Tensor):
        out = torch.zeros(batch + (4, 4), dtype=R.dtype, device=R.device)
        out[..., :3, :3] = rot_gl.transpose(-1, -2)
    else:
        out = np.zeros(batch + (4, 4), dtype=np.result_type(R.dtype, t.dtype))
        out[..., :3, :3] = rot_gl.swapaxes(-1, -2)
    out[..., 3, :3] = t_gl
    out[..., 3, 3] = 1.0
    return out


def wcpa_rotation_from_euler(pitch, yaw, roll) -> np.ndarray:
    """The ``R_t[:3, :3]`` block WCPA tools build from Euler angles (radians).

    The challenge's tools use ``Rotation.from_euler('yxz', [yaw, pitch, roll]).as_matrix().T``
    (extrinsic y, then x, then z), i.e. ``R_t[:3, :3] = (Rz(roll) Rx(pitch) Ry(yaw))^T``.
    Right-handed rotations of the face in the OpenGL camera frame: positive yaw turns the
    face towards its own left (``+x``, the image's right), positive pitch turns it down
    (``-y``), positive roll turns it counter-clockwise as seen from the camera.

    Args:
        pitch, yaw, roll: scalars or arrays of one shape ``(...)``.

    Returns:
        ``(..., 3, 3)`` float64 array.

    Example:
        >>> np.allclose(wcpa_rotation_from_euler(0.0, 0.0, 0.0), np.eye(3))
        True
    """
    return np.swapaxes(rotation_from_euler("zxy", roll, pitch, yaw), -1, -2)
