"""Contact sheets of synthetic samples with the ground truth drawn over them."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from pyfacepnp.draw import draw_mesh
from pyfacepnp.geometry.camera import project_points
from pyfacepnp.geometry.mesh import LANDMARK_GROUPS
from pyfacepnp.geometry.transforms import transform_points
from pyfacepnp.ops.render import render_mesh

__all__ = ["draw_ground_truth", "contact_sheet"]

_COLOURS = {"jaw": (255, 220, 0), "brows": (255, 120, 0), "nose": (0, 220, 255), "eyes": (0, 255, 120),
            "lips": (255, 60, 200)}


def draw_ground_truth(item: dict, model, mesh_alpha: float = 0.35) -> np.ndarray:
    """The crop of a dataset item as uint8 RGB with the visible mesh edges and the 68
    landmarks (coloured by group) drawn over it.

    Args:
        item: a :class:`~pyfacepnp.data.synthetic.SyntheticFaceDataset` item.
        model: the :class:`~pyfacepnp.data.face_model.FaceModel` it was rendered with.
        mesh_alpha: opacity of the wireframe.
    """
    crop = item["crop"].permute(1, 2, 0).numpy()
    size = crop.shape[0]
    img = (crop * 255 + 0.5).astype(np.uint8)
    V, R, t, K = (item[k].double().numpy() for k in ("vertices", "R", "t", "K_crop"))
    cam = transform_points(V, R, t)
    # Edges of the triangles that are visible somewhere: hidden ones would clutter.
    tri = render_mesh(cam.astype(np.float32), model.triangles, model.texcoords, np.ones((1, 1, 3), np.float32),
                      K.astype(np.float32), (size, size)).triangle.numpy()
    visible = np.unique(tri[tri >= 0])
    img = draw_mesh(img, project_points(V, R, t, K), model.triangles[visible], color=(255, 255, 255),
                    alpha=mesh_alpha)
    lm = item["landmarks68_crop"].double().numpy()
    r = max(1, size // 128)
    shift = 4  # sub-pixel precision of cv2.circle
    for group, idx in LANDMARK_GROUPS.items():
        colour = _COLOURS[group]
        for k in idx:
            cv2.circle(img, tuple(np.round(lm[k] * (1 << shift)).astype(int)), r << shift, colour, -1, cv2.LINE_AA, shift)
    return img


def contact_sheet(dataset, indices: Sequence[int], cols: int = 4, overlay: bool = True) -> np.ndarray:
    """A grid of crops, each shown clean and with the ground truth overlaid side by side.

    Returns:
        uint8 RGB image.
    """
    tiles = []
    for i in indices:
        item = dataset[int(i)]
        clean = (item["crop"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        tile = np.concatenate([clean, draw_ground_truth(item, dataset.model)], 1) if overlay else clean
        tiles.append(cv2.copyMakeBorder(tile, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[r:r + cols], 1) for r in range(0, len(tiles), cols)]
    return np.concatenate(rows, 0)
