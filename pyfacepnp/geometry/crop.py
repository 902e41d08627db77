"""Face crops: the similarity affine from landmarks to a square crop, its composition with
other affines (training jitter), and resampling an image by it.

An affine ``A (2, 3)`` maps image pixels to crop pixels (``p_crop = A[:, :2] p + A[:, 2]``,
pixel centres at integer coordinates in both, see :mod:`pyfacepnp.geometry.camera`).
:func:`warp_image` (or ``cv2.warpAffine(image, A, (S, S))``) cuts the crop, and the
renderer draws it directly with ``K_crop = [A; 0 0 1] @ K``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pyfacepnp.geometry.camera import pixels_to_normalized

__all__ = ["crop_affine_from_landmarks", "jitter_affine", "apply_affine", "compose_affines", "warp_image", "resize_image"]


def crop_affine_from_landmarks(landmarks, crop_size: int, margin: float = 0.25, shift: float = 0.1):
    """Axis-aligned similarity (scale + translation) framing the face for a square crop.

    The box is the landmarks' bounding square (side = the larger extent) widened by
    ``margin`` of the side on each edge and moved up by ``shift`` of the side, since the
    68 landmarks stop at the brows (the WCPA baseline frames its crops the same way:
    0.75 / 0.75 / 0.85 / 0.65 of the side left / right / top / bottom).

    Args:
        landmarks: ``(..., N, 2)`` image pixels, numpy or torch.
        crop_size: side of the square crop in pixels.
        margin: extra border as a fraction of the side (on each edge).
        shift: upward shift of the box centre as a fraction of the side.

    Returns:
        ``(..., 2, 3)`` image-to-crop affine of the same kind (float64 for numpy).

    Example:
        >>> lm = np.array([[100.0, 100.0], [200.0, 200.0]])
        >>> crop_affine_from_landmarks(lm, 150, margin=0.25, shift=0.0)
        array([[  1. ,   0. , -75.5],
               [  0. ,   1. , -75.5]])
    """
    if landmarks.shape[-1] != 2 or landmarks.ndim < 2 or landmarks.shape[-2] < 2:
        raise ValueError(f"landmarks must have shape (..., N, 2) with N >= 2, got {tuple(landmarks.shape)}")
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    is_torch = isinstance(landmarks, torch.Tensor)
    if is_torch:
        lo, hi = landmarks.amin(dim=-2), landmarks.amax(dim=-2)
        side = (hi - lo).amax(dim=-1)
    else:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        lo, hi = landmarks.min(-2), landmarks.max(-2)
        side = (hi - lo).max(-1)
    cx = 0.5 * (lo[..., 0] + hi[..., 0])
    cy = 0.5 * (lo[..., 1] + hi[..., 1]) - shift * side
    box = side * (1.0 + 2.0 * margin)
    s = crop_size / box
    c = 0.5 * (crop_size - 1)
    zero = s * 0
    rows = [[s, zero, c - s * cx], [zero, s, c - s * cy]]
    if is_torch:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def jitter_affine(affine: np.ndarray, rng: np.random.Generator, crop_size: int, translate: float = 0.05,
                  scale: float = 0.05, rotate: float = 0.0) -> np.ndarray:
    """Compose a crop affine with a random similarity about the crop centre.

    Args:
        affine: ``(2, 3)`` image-to-crop affine.
        translate: std of the shift as a fraction of ``crop_size``.
        scale: std of the log zoom.
        rotate: std of the in-plane rotation (radians).

    Returns:
        ``(2, 3)`` jittered affine (float64).
    """
    c = 0.5 * (crop_size - 1)
    z = float(np.exp(rng.normal(0.0, scale)))
    a = float(rng.normal(0.0, rotate)) if rotate > 0 else 0.0
    d = rng.normal(0.0, translate * crop_size, 2)
    J = np.array([[z * np.cos(a), -z * np.sin(a), 0.0], [z * np.sin(a), z * np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    J[:2, 2] = np.array([c, c]) + d - J[:2, :2] @ np.array([c, c])
    return compose_affines(J[:2], affine)


def apply_affine(points, affine):
    """``A[:, :2] p + A[:, 2]`` for ``points (..., N, 2)`` and ``affine (..., 2, 3)``, numpy or
    torch (for differentiable torch warps with their own kernel use ``pyfacepnp.warp_points``).

    Example:
        >>> apply_affine(np.array([[1.0, 1.0]]), np.array([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]]))
        array([[3., 1.]])
    """
    return points @ affine[..., :2].swapaxes(-1, -2) + affine[..., None, :, 2]


def compose_affines(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` affine of ``outer`` after ``inner`` (numpy): ``[outer; 0 0 1] @ [inner; 0 0 1]``.

    Example:
        >>> compose_affines(np.array([[2.0, 0, 1], [0, 2.0, 0]]), np.array([[1.0, 0, 3], [0, 1.0, 0]]))[:, 2]
        array([7., 0.])
    """
    row = [0.0, 0.0, 1.0]
    return (np.vstack([outer, row]) @ np.vstack([inner, row]))[:2]


def warp_image(image: torch.Tensor, affine: torch.Tensor, size: int) -> torch.Tensor:
    """Resample a square crop: ``crop[y, x] = image[A^-1 (x, y)]`` (bilinear, zero outside).

    Matches ``cv2.warpAffine(image, A, (size, size))`` on interior pixels.

    Args:
        image: ``(B, C, H, W)`` images.
        affine: ``(B, 2, 3)`` image-pixel -> crop-pixel affines ``A``.
        size: side of the output crop.

    Returns:
        ``(B, C, size, size)`` crops, same dtype as ``image`` (float).

    Example:
        >>> img = torch.rand(1, 3, 8, 8)
        >>> eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        >>> torch.allclose(warp_image(img, eye, 8), img, atol=1e-6)
        True
    """
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
    if affine.shape != (image.shape[0], 2, 3):
        raise ValueError(f"affine must have shape ({image.shape[0]}, 2, 3), got {tuple(affine.shape)}")
    b, _, h, w = image.shape
    a = affine.to(torch.float64)
    lin, tr = a[:, :, :2], a[:, :, 2]
    inv_lin = torch.linalg.inv(lin)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=image.device),
                            torch.arange(size, dtype=torch.float64, device=image.device),
                            indexing="ij")
    dst = torch.stack([xs, ys], -1).reshape(1, -1, 2) - tr[:, None, :]
    src = dst @ inv_lin.transpose(1, 2)  # (B, size*size, 2) image pixels
    grid = torch.stack([pixels_to_normalized(src[..., 0], w), pixels_to_normalized(src[..., 1], h)], -1)
    grid = grid.reshape(b, size, size, 2).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale ``(B, C, H, W)`` images to ``(B, C, size, size)`` with antialiasing.

    Pixel centres stay consistent with :func:`~pyfacepnp.geometry.camera.pixels_to_normalized`
    (half-pixel alignment).
    """
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)
