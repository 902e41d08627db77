"""Face crops: the similarity affine from landmarks to a square crop, and training jitter.

An affine ``A (2, 3)`` maps image pixels to crop pixels (``p_crop = A[:, :2] p + A[:, 2]``,
pixel centres at integer coordinates in both). ``cv2.warpAffine(image, A, (S, S))`` cuts
the crop, and the renderer draws it directly with ``K_crop = [A; 0 0 1] @ K``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["crop_affine_from_landmarks", "jitter_affine"]


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
    return (J @ np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]
