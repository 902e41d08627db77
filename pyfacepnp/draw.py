"""Drawing a mesh wireframe over an image (the one drawer of the predict overlays, the run
report and the data preview sheets). Needs OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pyfacepnp.geometry.mesh import edges_from_triangles

__all__ = ["draw_mesh"]


def draw_mesh(image: np.ndarray, points2d, triangles, color=(255, 64, 64), thickness: int = 1,
              alpha: float = 0.6) -> np.ndarray:
    """Wireframe of a mesh projected to ``points2d`` blended over an RGB image.

    Every edge of ``triangles`` is drawn once, anti-aliased with sub-pixel precision; edges
    with a non-finite end point are left out.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        points2d: ``(N, 2)`` pixel coordinates (pixel centres at integers), numpy or torch.
        triangles: ``(T, 3)`` vertex indices (e.g. only the visible ones).
        color: RGB of the lines; thickness in pixels; alpha: line opacity.

    Returns:
        ``(H, W, 3)`` uint8 RGB copy with the mesh drawn.

    Example:
        >>> img = draw_mesh(np.zeros((8, 8, 3), np.uint8), np.array([[1.0, 1], [6, 1], [1, 6]]), [[0, 1, 2]])
        >>> img.shape, int(img[1, 3, 0]) > 0
        ((8, 8, 3), True)
    """
    pts = np.asarray(points2d.detach().cpu() if torch.is_tensor(points2d) else points2d, dtype=np.float64)
    edges = edges_from_triangles(triangles).numpy()
    finite = np.isfinite(pts).all(1)
    edges = edges[finite[edges[:, 0]] & finite[edges[:, 1]]]
    shift = 4  # sub-pixel precision of cv2.line: coordinates in 1/16 px
    safe = np.where(np.isfinite(pts), pts, 0.0)  # non-finite points have no edges left
    fixed = np.round(safe * (1 << shift)).clip(-(2**30), 2**30).astype(np.int64)
    layer = np.ascontiguousarray(image.copy())
    lines = [fixed[e].reshape(2, 1, 2).astype(np.int32) for e in edges]
    cv2.polylines(layer, lines, False, tuple(int(c) for c in color), thickness, cv2.LINE_AA, shift)
    return cv2.addWeighted(layer, alpha, image, 1 - alpha, 0)
