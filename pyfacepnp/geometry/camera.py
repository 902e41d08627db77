"""Cameras: the pixel convention, WCPA intrinsics, crop intrinsics and the projection
(with OpenCV's lens distortion, :mod:`pyfacepnp.geometry.distortion`).

Pixel convention (the project's, OpenCV's): integer coordinates are pixel centres, the
origin is the centre of the top-left pixel, ``x`` right, ``y`` down, so an image of side S
spans ``[-0.5, S - 0.5]``. Normalised coordinates map that span to ``[-1, 1]``, which is
also ``torch.nn.functional.grid_sample``'s convention with ``align_corners=False``.

A WCPA frame is 800x800 with ``fx = fy = 629.8`` and ``cx = cy = 400`` (the challenge's
OpenGL projection matrix maps NDC 0 to 400).
"""

from __future__ import annotations

import numpy as np
import torch

from pyfacepnp.geometry.distortion import check_distortion, distort
from pyfacepnp.geometry.transforms import transform_points

__all__ = [
    "WCPA_IMAGE_SIZE",
    "WCPA_FOCAL",
    "wcpa_intrinsics",
    "resize_affine",
    "crop_intrinsics",
    "project_points",
    "project_to_crop",
    "pixels_to_normalized",
    "normalized_to_pixels",
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


def project_points(points, R, t, K, distortion=None, camera_model="pinhole"):
    """Projection to pixels ``u = K[:2] @ (d(x / z, y / z), 1)`` of ``(x, y, z) = R X + t``
    (OpenCV convention), batched, with an optional lens ``d``.

    Without ``distortion`` this is the pinhole ``u = K (R X + t) / z``, for numpy arrays or
    torch tensors; with it, ``d`` is :func:`~pyfacepnp.geometry.distortion.distort` of
    ``camera_model`` and K's bottom row is not read. Torch tensors are differentiable with
    respect to every argument; numpy inputs with a lens are computed in float64 and come
    back as numpy. Batch dimensions broadcast.

    Args:
        points: ``(..., N, 3)`` canonical points.
        R: ``(..., 3, 3)``; t: ``(..., 3)``; K: ``(..., 3, 3)``.
        distortion: ``None`` or ``(..., D)`` coefficients (OpenCV's order, see
            :mod:`pyfacepnp.geometry.distortion`).
        camera_model: ``"pinhole"`` or ``"fisheye"``.

    Returns:
        ``(..., N, 2)`` pixel coordinates.

    Example:
        >>> K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
        >>> project_points(np.array([[0.2, 0.0, 0.0]]), np.eye(3), np.array([0.0, 0.0, 2.0]), K)
        array([[60., 50.]])
        >>> project_points(np.array([[0.2, 0.0, 0.0]]), np.eye(3), np.array([0.0, 0.0, 2.0]), K,
        ...                np.array([-0.2, 0.0, 0.0, 0.0]))
        array([[59.98, 50.  ]])
    """
    if distortion is None:
        check_distortion(None, camera_model)
        uvw = transform_points(points, R, t) @ K.swapaxes(-1, -2)
        return uvw[..., :2] / uvw[..., 2:3]
    args = (points, R, t, K, distortion)
    if not all(isinstance(a, torch.Tensor) for a in args):
        # numpy (or mixed) inputs: the torch formula in float64, handed back as numpy.
        as_t = [torch.as_tensor(np.asarray(a.detach() if isinstance(a, torch.Tensor) else a, dtype=np.float64))
                for a in args]
        return project_points(*as_t, camera_model=camera_model).numpy()
    xc = transform_points(points, R, t)
    nd = distort(xc[..., :2] / xc[..., 2:3], distortion, camera_model)
    return nd @ K[..., :2, :2].transpose(-1, -2) + K[..., None, :2, 2]


def project_to_crop(points, R, t, K, crop_affine):
    """Crop pixels ``(B, N, 2)`` of points under a pose: the projection with the frame's
    ``K``, then the frame-to-crop affine (``pyfacepnp.warp_points``, differentiable).

    Args:
        points: ``(B, N, 3)``; R: ``(B, 3, 3)``; t: ``(B, 3)``; K: ``(B, 3, 3)`` frame
            intrinsics; crop_affine: ``(B, 2, 3)`` frame-to-crop pixel affines (torch).
    """
    from pyfacepnp.ops.warp import warp_points

    return warp_points(project_points(points, R, t, K), crop_affine)


def pixels_to_normalized(p, size):
    """Pixel coordinates ``(..., 2)`` of an image of side ``size`` to ``[-1, 1]``."""
    return (p + 0.5) * (2.0 / size) - 1.0


def normalized_to_pixels(n, size):
    """Inverse of :func:`pixels_to_normalized`."""
    return (n + 1.0) * (size / 2.0) - 0.5
