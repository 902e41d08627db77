"""Pixel <-> normalised coordinates, and image resampling by an affine, in one place.

Pixel convention (the project's, OpenCV's): integer coordinates are pixel centres, so an
image of size S spans [-0.5, S - 0.5]. Normalised coordinates map that span to [-1, 1],
which is also ``torch.nn.functional.grid_sample``'s convention with ``align_corners=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixels_to_normalized(p: torch.Tensor, size: int | float) -> torch.Tensor:
    """Pixel coordinates ``(..., 2)`` of an image of side ``size`` to [-1, 1]."""
    return (p + 0.5) * (2.0 / size) - 1.0


def normalized_to_pixels(n: torch.Tensor, size: int | float) -> torch.Tensor:
    """Inverse of :func:`pixels_to_normalized`."""
    return (n + 1.0) * (size / 2.0) - 0.5


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

    Pixel centres stay consistent with :func:`pixels_to_normalized` (half-pixel alignment).
    """
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)
