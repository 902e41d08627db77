"""A coarse head, neck and shoulders behind the face mask, so that synthetic faces are not
masks floating in front of the background.

The face model covers the face only (like the WCPA mesh). For rendering, each sample gets
a head cap grown backwards from the face's boundary loop, an elliptic neck cylinder and a
clothed torso.
The cap shares the face's boundary vertices, so the two meet without a seam (normals are
averaged across it) and the cap follows identity and expression. Neither is part of the
ground truth.

Texturing uses the face texture: its outermost columns (outside the face, see
:func:`pyfacepnp.data.appearance.texture_weights`) hold a vertical skin-to-hair ramp,
and its top rows are hair. A head vertex picks the ramp row of its hair weight on the
strip of its side; a triangle that crosses the back midline interpolates along a texture
row, which is hair at the top and skin at the bottom. The texture's bottom rows are the clothes.
"""

from __future__ import annotations

import functools

import numpy as np

from pyfacepnp.data import appearance as ap
from pyfacepnp.data.face_layout import TEXTURE_EXTENT, smoothstep
from pyfacepnp.geometry.mesh import boundary_loop

__all__ = ["head_mesh"]

_RINGS = 7  # meridian samples from the face boundary to the back of the head
_NECK_SEGMENTS, _NECK_RINGS = 24, 4
_TORSO_SEGMENTS = 32
# Torso rings below the chin (metres down, half-width, half-depth): a neckline widening
# into the shoulders.
_TORSO = ((0.115, 0.062, 0.055), (0.150, 0.120, 0.080), (0.175, 0.175, 0.095), (0.200, 0.195, 0.100),
          (0.450, 0.200, 0.105))


@functools.lru_cache(maxsize=4)
def _topology(loop_bytes: bytes, n_vertices: int) -> np.ndarray:
    loop = np.frombuffer(loop_bytes, dtype=np.int64)
    n = len(loop)

    def vid(k, i):  # ring k (0 = the face boundary) at loop position i
        i %= n
        return int(loop[i]) if k == 0 else n_vertices + (k - 1) * n + i

    faces = []
    for k in range(_RINGS - 1):
        for i in range(n):
            a, b, c, d = vid(k, i), vid(k, i + 1), vid(k + 1, i), vid(k + 1, i + 1)
            faces += [[a, c, b], [b, c, d]]
    pole = n_vertices + (_RINGS - 1) * n
    for i in range(n):
        faces.append([vid(_RINGS - 1, i), pole, vid(_RINGS - 1, i + 1)])
    base = pole + 1
    for segments, rings in ((_NECK_SEGMENTS, _NECK_RINGS), (_TORSO_SEGMENTS, len(_TORSO))):
        for r in range(rings - 1):
            for s in range(segments):
                a = base + r * segments + s
                b = base + r * segments + (s + 1) % segments
                faces += [[a, b, a + segments], [b, b + segments, a + segments]]
        base += rings * segments
    return np.array(faces, dtype=np.int64)


def head_mesh(face_vertices: np.ndarray, model, hair_line: float = 0.0, hair: float = 1.0):
    """Head cap, neck and torso to render together with one face.

    Args:
        face_vertices: ``(1220, 3)`` canonical vertices of the face (metres).
        model: the :class:`~pyfacepnp.data.face_model.FaceModel`.
        hair_line: height (canonical y, metres) above which the head cap is hair.
        hair: hair coverage in [0, 1] (0: bald).

    Returns:
        ``(vertices (M, 3), faces (F, 3) int64, texcoords (M, 2))`` of the extra vertices;
        ``faces`` index the concatenation of the face's 1220 vertices and these.
    """
    loop = boundary_loop(model)
    b = face_vertices[loop].astype(np.float64)
    centre = np.array([0.0, b[:, 1].mean(), b[:, 2].mean() - 0.055])
    d = b - centre
    r = np.hypot(d[:, 0], d[:, 1])
    direction = d[:, :2] / np.maximum(r, 1e-9)[:, None]
    alpha0 = np.arctan2(r, d[:, 2])  # angle from the facing direction
    radius0 = np.hypot(r, d[:, 2])
    radius_back = 0.095 * (radius0.mean() / 0.1)
    rings = []
    fractions = (np.arange(1, _RINGS) / _RINGS) ** 1.5  # dense near the face: a thin seam band
    for f in fractions:
        alpha = alpha0 + (np.pi - alpha0) * f
        radius = (radius0 + (radius_back - radius0) * f) * (1.0 + 0.10 * np.sin(np.pi * f))
        rings.append(centre + np.concatenate([direction * (radius * np.sin(alpha))[:, None],
                                              (radius * np.cos(alpha))[:, None]], 1))
    pole = centre + np.array([0.0, 0.0, -radius_back])
    chin = b[:, 1].min()
    ang = np.linspace(0, 2 * np.pi, _NECK_SEGMENTS, endpoint=False)
    neck = [np.stack([0.052 * np.cos(ang), np.full_like(ang, y), centre[2] + 0.005 + 0.048 * np.sin(ang)], 1)
            for y in np.linspace(chin + 0.05, chin - 0.16, _NECK_RINGS)]
    ang = np.linspace(0, 2 * np.pi, _TORSO_SEGMENTS, endpoint=False)
    torso = [np.stack([wx * np.cos(ang), np.full_like(ang, chin - dy), centre[2] - 0.01 + wz * np.sin(ang)], 1)
             for dy, wx, wz in _TORSO]
    verts = np.concatenate(rings + [pole[None]] + neck + torso, 0)
    # Hair weight: the face texture's hair at the boundary fading into hair above hair_line.
    edge = ap.face_hair_alpha(model)[loop]
    w = [np.maximum(edge * (1 - f), smoothstep((p[:, 1] - hair_line) / 0.03) * hair)
         for f, p in zip(fractions, rings)]
    w = np.concatenate(w + [np.full(1, hair), np.zeros(_NECK_SEGMENTS * _NECK_RINGS)])
    side = np.where(verts[:, 0] >= 0, 1.0, -1.0)
    texel = 1.0 / ap.TEXTURE_SIZE
    tx = 0.5 + side * (0.5 - 1.5 * texel)  # the middle of a side strip
    v = ap.HEAD_RAMP[0] + (ap.HEAD_RAMP[1] - ap.HEAD_RAMP[0]) * w
    # Torso: three texels into the clothes rows, clear of bilinear blending with the skin.
    v = np.concatenate([v, np.full(_TORSO_SEGMENTS * len(_TORSO), ap.CLOTHES_ROWS - 3 * texel * 2 * TEXTURE_EXTENT)])
    ty = (TEXTURE_EXTENT - v) / (2 * TEXTURE_EXTENT)
    texcoords = np.stack([tx, ty], 1)
    faces = _topology(loop.tobytes(), len(face_vertices))
    return verts.astype(np.float32), faces, texcoords.astype(np.float32)
