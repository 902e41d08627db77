"""Rigid transforms ``x_cam = R X + t`` (the OpenCV convention of the ops), written once.

Every function takes numpy arrays or torch tensors with any leading batch shape (batch
dimensions broadcast) and returns the same kind.
"""

from __future__ import annotations

__all__ = ["transform_points"]


def transform_points(points, R, t):
    """``R X + t`` for every point: ``points (..., N, 3)``, ``R (..., 3, 3)``, ``t (..., 3)``.

    Numpy arrays or torch tensors (differentiable); batch dimensions broadcast.

    Returns:
        ``(..., N, 3)`` transformed points, e.g. canonical vertices in the camera frame.

    Example:
        >>> import numpy as np
        >>> transform_points(np.array([[1.0, 0.0, 0.0]]), np.eye(3), np.array([0.0, 0.0, 2.0]))
        array([[1., 0., 2.]])
    """
    return points @ R.swapaxes(-1, -2) + t[..., None, :]
