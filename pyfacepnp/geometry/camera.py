"""WCPA camera intrinsics and the pixel-grid algebra shared by the renderer and loaders.

Pixel convention (the project's): integer coordinates are pixel centres, the origin is
the centre of the top-left pixel, ``x`` right, ``y`` down. A WCPA frame is 800x800 with
``fx = fy = 629.8`` and ``cx = cy = 400`` (the challenge's OpenGL projection matrix maps
NDC 0 to 400).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "WCPA_IMAGE_SIZE",
    "WCPA_FOCAL",
    "wcpa_intrinsics",
    "resize_affine",
    "crop_intrinsics",
    "project_points",
]

WCPA_IMAGE_SIZE = 800
WCPA_FOCAL = 629.8  # px at 800x800 (1.5745 * 400 from the challenge's projection matrix)


def resize_affine(src_size: int, dst_size: int) -> np.ndarray:
    """``(2, 3)`` affine mapping pixel coordinates of a square image resized from
    ``src_size`` to ``dst_size`` (pixel-centre convention: ``x' = s (x + 1/2) - 1/2``)."""
    s = dst_size / src_size
    return np.array([[s, 0.0, 0.5 * (s - 1.0)], [0.0, s, 0.5 * (s - 1.0)]])


def crop_intrinsics(K: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Intrinsics of a crop: ``K_crop = [A; 0 0 1] @ K`` for the image-to-crop affine ``A``.

    Args:
        K: ``(..., 3, 3)`` intrinsics of the source image.
        affine: ``(..., 2, 3)`` image-to-crop pixel affine.

    Returns:
        ``(..., 3, 3)`` intrinsics that render the crop directly.

    Example:
        >>> crop_intrinsics(np.eye(3), np.array([[2.0, 0, 1], [0, 2.0, 0]]))[0]
        array([2., 0., 1.])
    """
    affine = np.asarray(affine, dtype=np.float64)
    batch = affine.shape[:-2]
    A3 = np.zeros(batch + (3, 3))
    A3[..., :2, :] = affine
    A3[..., 2, 2] = 1.0
    return A3 @ np.asarray(K, dtype=np.float64)


def wcpa_intrinsics(image_size=WCPA_IMAGE_SIZE, focal: float = WCPA_FOCAL) -> np.ndarray:
    """``(3, 3)`` float64 WCPA intrinsics for the 800x800 frame resized to ``image_size``
    (an int for a square frame, or ``(width, height)``), pixel-centre convention.

    Example:
        >>> wcpa_intrinsics()[0]
        array([629.8,   0. , 400. ])
    """
    w, h = (image_size, image_size) if np.isscalar(image_size) else image_size
    sx, sy = w / WCPA_IMAGE_SIZE, h / WCPA_IMAGE_SIZE
    # x' = s (x + 1/2) - 1/2 maps the 800 px frame's pixel coordinates to the resized one's.
    return np.array([[focal * sx, 0.0, 400.5 * sx - 0.5], [0.0, focal * sy, 400.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def project_points(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection ``u = K (R X + t) / z`` (OpenCV convention), numpy, batched.

    Args:
        points: ``(..., N, 3)`` canonical points.
        R: ``(..., 3, 3)``; t: ``(..., 3)``; K: ``(..., 3, 3)``.

    Returns:
        ``(..., N, 2)`` pixel coordinates.
    """
    cam = points @ np.swapaxes(R, -1, -2) + t[..., None, :]
    uvw = cam @ np.swapaxes(K, -1, -2)
    return uvw[..., :2] / uvw[..., 2:3]
