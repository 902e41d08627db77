"""Mesh topology of the face: the vertex and landmark counts of the WCPA mesh, the edges of
a triangle list and the ordered boundary loop of an open mesh."""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["NUM_VERTICES", "NUM_LANDMARKS", "LANDMARK_GROUPS", "edges_from_triangles", "boundary_loop"]

#: Vertices of the WCPA / ARKitFace mesh (and of the procedural face model).
NUM_VERTICES = 1220
#: Landmarks of the usual 68-point layout.
NUM_LANDMARKS = 68
#: The 68-point layout's groups: jaw, brows, nose, eyes, lips (index ranges).
LANDMARK_GROUPS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
                   "lips": range(48, 68)}


def edges_from_triangles(triangles) -> torch.Tensor:
    """Unique undirected edges ``(E, 2)`` int64 (sorted, smaller index first) of a triangle
    list ``(T, 3)``.

    Example:
        >>> edges_from_triangles(np.array([[0, 1, 2]])).tolist()
        [[0, 1], [0, 2], [1, 2]]
    """
    tri = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], 0)
    e = np.unique(np.sort(e, axis=1), axis=0)
    return torch.from_numpy(e)


@functools.lru_cache(maxsize=4)
def _loop(triangles_bytes: bytes, n: int) -> np.ndarray:
    tris = np.frombuffer(triangles_bytes, dtype=np.int64).reshape(n, 3)
    directed = {(int(a), int(b)) for t in tris for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    nxt = {a: b for a, b in directed if (b, a) not in directed}
    start = min(nxt)
    loop, cur = [start], nxt[start]
    while cur != start:
        loop.append(cur)
        cur = nxt[cur]
    return np.array(loop, dtype=np.int64)


def boundary_loop(triangles) -> np.ndarray:
    """Indices of an open mesh's boundary vertices in order (its single boundary loop;
    counter-clockwise from the front for the face model's triangles).

    Args:
        triangles: ``(T, 3)`` vertex indices (consistently oriented), or an object with a
            ``triangles`` attribute (a :class:`~pyfacepnp.data.face_model.FaceModel`).
    """
    tris = np.ascontiguousarray(getattr(triangles, "triangles", triangles), dtype=np.int64)
    return _loop(tris.tobytes(), len(tris))
