"""The 2D layout of the procedural face: feature curves, landmark points and vertex sites.

Everything is in *layout coordinates* ``(u, v)`` in metres: a flattened frontal view of
the face, ``u`` to the face's left (``+x``), ``v`` up. The mesh is a Delaunay
triangulation of the vertex sites in this plane, the texture is painted in it, and
:mod:`pyfacepnp.data.face_model` lifts it to 3D. The mouth is drawn *open* here (a
lens-shaped band between the inner-lip lines) and closed in 3D, so that opening the jaw
stretches the band's triangles, which the texture paints as the mouth interior.

(A little over 300 lines on purpose: the feature curves, the landmark and feature sites on
them and the fill sites between them are one construction whose counts add up to
:data:`~pyfacepnp.geometry.mesh.NUM_VERTICES`; split, each half would need the other's
internals.)
"""

from __future__ import annotations

import numpy as np

from pyfacepnp.geometry.mesh import NUM_VERTICES

# Feature geometry (metres). The face's right eye is at u < 0.
EYE_INNER_U, EYE_OUTER_U = 0.016, 0.045
EYE_INNER_V, EYE_OUTER_V = 0.0245, 0.027
EYE_UPPER_H, EYE_LOWER_H = 0.0058, 0.0040
MOUTH_V = -0.047  # the lip seam
MOUTH_CORNER_U = 0.021  # inner mouth corners (landmarks 60, 64)
MOUTH_BAND = 0.003  # half-height of the open-mouth band in the layout
MOUTH_BAND_3D = 0.0004  # half-height of the closed lips' gap in the 3D template
TEXTURE_EXTENT = 0.112  # texture covers u, v in [-extent, extent]

# Half-width of the face outline as a function of v (control points, bottom to top).
_OUTLINE_V = np.array([-0.104, -0.1035, -0.101, -0.095, -0.085, -0.070, -0.050, -0.025, 0.0,
                       0.020, 0.040, 0.060, 0.075, 0.088, 0.096, 0.0995, 0.100])
_OUTLINE_HW = np.array([0.0, 0.008, 0.018, 0.030, 0.043, 0.056, 0.066, 0.073, 0.077,
                        0.078, 0.076, 0.069, 0.058, 0.042, 0.025, 0.010, 0.0])

# Outer lip contour, right half (u <= 0) from the corner to the middle.
_LIP_U = np.array([-0.025, -0.021, -0.016, -0.011, -0.006, 0.0])
_LIP_UPPER_V = np.array([-0.047, -0.0435, -0.041, -0.039, -0.0375, -0.0385])
_LIP_LOWER_V = np.array([-0.047, -0.0505, -0.053, -0.0553, -0.0565, -0.0570])


def smooth_interp(x, xp, fp):
    """C1 piecewise-cubic interpolation (Catmull-Rom tangents), clamped outside ``xp``."""
    x = np.asarray(x, dtype=np.float64)
    xp, fp = np.asarray(xp, np.float64), np.asarray(fp, np.float64)
    m = np.empty_like(fp)
    m[1:-1] = (fp[2:] - fp[:-2]) / (xp[2:] - xp[:-2])
    m[0] = (fp[1] - fp[0]) / (xp[1] - xp[0])
    m[-1] = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    i = np.clip(np.searchsorted(xp, x) - 1, 0, len(xp) - 2)
    h = xp[i + 1] - xp[i]
    s = np.clip((x - xp[i]) / h, 0.0, 1.0)
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * fp[i] + h10 * h * m[i] + h01 * fp[i + 1] + h11 * h * m[i + 1]


def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def outline_half_width(v):
    return np.maximum(smooth_interp(v, _OUTLINE_V, _OUTLINE_HW), 0.0)


def lip_outer_upper(u):
    return smooth_interp(-np.abs(u), _LIP_U, _LIP_UPPER_V)


def lip_outer_lower(u):
    return smooth_interp(-np.abs(u), _LIP_U, _LIP_LOWER_V)


def mouth_lens(u):
    """Opening profile of the mouth band: 1 in the middle, 0 at the inner corners."""
    return np.sqrt(np.clip(1.0 - (np.asarray(u) / MOUTH_CORNER_U) ** 2, 0.0, 1.0))


def eye_param(u, side):
    """Eye parameter ``s`` (0 inner corner, 1 outer corner) of ``u`` for eye ``side`` (+-1)."""
    return (np.asarray(u) * side - EYE_INNER_U) / (EYE_OUTER_U - EYE_INNER_U)


def eye_lids(s):
    """``(base, upper, lower)`` v of the eye's corner line and lids at parameter ``s``."""
    s = np.asarray(s, dtype=np.float64)
    sc = np.clip(s, 0.0, 1.0)
    base = EYE_INNER_V + (EYE_OUTER_V - EYE_INNER_V) * s
    bump = np.sin(np.pi * sc)
    return base, base + EYE_UPPER_H * bump**0.8, base - EYE_LOWER_H * bump**0.9


def eye_point(s, side, where):
    base, upper, lower = eye_lids(s)
    u = side * (EYE_INNER_U + (EYE_OUTER_U - EYE_INNER_U) * np.asarray(s))
    v = {"upper": upper, "lower": lower, "base": base, "mid": 0.5 * (upper + lower)}[where]
    return np.stack(np.broadcast_arrays(u, v), axis=-1)


def brow_point(b, side):
    """Brow centre line, ``b`` = 0 at the inner end, 1 at the outer end."""
    b = np.asarray(b, dtype=np.float64)
    u = side * (0.013 + 0.043 * b)
    v = 0.0435 + 0.0072 * np.sin(np.pi * (0.15 + 0.8 * b)) - 0.002 * b
    return np.stack([u, v], axis=-1)


def _outline_polyline(n=4001):
    v = np.linspace(_OUTLINE_V[0], _OUTLINE_V[-1], n)
    hw = outline_half_width(v)
    # Counter-clockwise from the chin bottom: up the left side (u > 0), down the right.
    left = np.stack([hw, v], -1)
    right = np.stack([-hw[::-1], v[::-1]], -1)
    return np.concatenate([left, right[1:]], 0)


def _resample(poly, n, closed=False):
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, arc[-1], n, endpoint=not closed)
    return np.stack([np.interp(targets, arc, poly[:, k]) for k in range(2)], -1)


def _boundary(jaw_v=0.012, per_gap=3):
    """Outline sites: the 17 jaw landmarks on the lower arc plus evenly spaced others."""
    poly = _outline_polyline()
    upper_mask = poly[:, 1] > jaw_v
    idx = np.nonzero(upper_mask)[0]
    # The polyline runs chin -> left side -> top -> right side -> chin; the lower arc is the
    # part below jaw_v, from the right side (landmark 0) around the chin to the left (16).
    start_left, end_right = idx[0], idx[-1]
    lower = np.concatenate([poly[end_right + 1:], poly[1:start_left]], 0)
    lower = np.concatenate([[[-outline_half_width(jaw_v), jaw_v]], lower, [[outline_half_width(jaw_v), jaw_v]]])
    n_lower = 16 * per_gap + 1
    lower_pts = _resample(lower, n_lower)
    upper = np.concatenate([[[outline_half_width(jaw_v), jaw_v]], poly[start_left:end_right + 1],
                            [[-outline_half_width(jaw_v), jaw_v]]])
    spacing = np.linalg.norm(np.diff(lower, axis=0), axis=1).sum() / (n_lower - 1)
    up_len = np.linalg.norm(np.diff(upper, axis=0), axis=1).sum()
    n_upper = int(round(up_len / spacing)) + 1
    upper_pts = _resample(upper, n_upper)[1:-1]
    jaw_landmarks = np.arange(0, n_lower, per_gap)
    return np.concatenate([lower_pts, upper_pts], 0), jaw_landmarks


def _mirror(points):
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points * np.array([-1.0, 1.0])


class _Sites:
    def __init__(self):
        self.points: list[np.ndarray] = []
        self.kind: list[str] = []

    def add(self, pts, kind) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        start = sum(len(p) for p in self.points)
        self.points.append(pts)
        self.kind += [kind] * len(pts)
        return np.arange(start, start + len(pts))

    def array(self):
        return np.concatenate(self.points, 0)


def build_layout():
    """Vertex sites of the face in layout coordinates.

    Returns:
        dict with ``sites (1220, 2)`` float64, ``landmarks (68,)`` int64 indices into the
        sites (the usual 68-point order), ``kind`` (list of 1220 region names) and
        ``boundary (B,)`` indices of the outline sites in order.
    """
    S = _Sites()
    lm = np.full(68, -1, dtype=np.int64)

    boundary, jaw_lm = _boundary()
    b_idx = S.add(boundary, "outline")
    lm[0:17] = b_idx[jaw_lm]

    for side in (-1.0, 1.0):
        s_lid = np.linspace(0.0, 1.0, 13)  # includes s = 1/3 and 2/3 (landmarks)
        up = S.add(eye_point(s_lid, side, "upper"), "eye_upper")
        low = S.add(eye_point(s_lid[1:-1], side, "lower"), "eye_lower")
        S.add(eye_point(np.linspace(0, 1, 9)[1:-1], side, "mid"), "eye_mid")
        s_ring = np.linspace(-0.06, 1.06, 10)
        base, upper, lower = eye_lids(s_ring)
        u_ring = side * (EYE_INNER_U + (EYE_OUTER_U - EYE_INNER_U) * s_ring)
        S.add(np.stack([u_ring, upper + 0.0045], -1), "eye_crease")
        S.add(np.stack([u_ring[1:-1], lower[1:-1] - 0.0045], -1), "eye_under")
        brow = S.add(brow_point(np.linspace(0.0, 1.0, 9), side), "brow")
        # 68-point order: landmark numbers run from the image's left (the face's right).
        if side < 0:
            lm[36], lm[37], lm[38], lm[39] = up[12], up[8], up[4], up[0]
            lm[40], lm[41] = low[3], low[7]
            lm[17:22] = brow[[8, 6, 4, 2, 0]]
        else:
            lm[42], lm[43], lm[44], lm[45] = up[0], up[4], up[8], up[12]
            lm[46], lm[47] = low[7], low[3]
            lm[22:27] = brow[[0, 2, 4, 6, 8]]

    # Nose.
    bridge = S.add([[0.0, 0.025], [0.0, 0.0125], [0.0, 0.0], [0.0, -0.011]], "nose")
    lm[27:31] = bridge
    S.add([[0.0, -0.0165]], "nose")
    nose_right = np.array([[-0.0065, 0.019], [-0.0065, 0.009], [-0.007, -0.001], [-0.0085, -0.008],
                           [-0.005, -0.0095], [-0.004, -0.015], [-0.011, -0.004], [-0.0115, -0.012],
                           [-0.016, -0.0145], [-0.006, -0.0185], [-0.019, -0.009], [-0.020, -0.0175]])
    S.add(nose_right, "nose")
    S.add(_mirror(nose_right), "nose")
    base = S.add([[-0.0135, -0.0205], [-0.007, -0.0225], [0.0, -0.0235], [0.007, -0.0225],
                  [0.0135, -0.0205]], "nose_base")
    lm[31:36] = base

    # Mouth: outer contour (landmarks 48-59) and extra contour sites.
    outer_u = np.array([-0.025, -0.016, -0.006, 0.0, 0.006, 0.016, 0.025])
    upper_outer = S.add(np.stack([outer_u, lip_outer_upper(outer_u)], -1), "lip_outer")
    low_u = np.array([0.016, 0.007, 0.0, -0.007, -0.016])
    lower_outer = S.add(np.stack([low_u, lip_outer_lower(low_u)], -1), "lip_outer")
    lm[48:55] = upper_outer
    lm[55:60] = lower_outer
    extra_u = np.array([-0.021, -0.011, 0.011, 0.021])
    S.add(np.stack([extra_u, lip_outer_upper(extra_u)], -1), "lip_outer")
    extra_l = np.array([-0.0205, -0.0115, 0.0115, 0.0205])
    S.add(np.stack([extra_l, lip_outer_lower(extra_l)], -1), "lip_outer")
    # Inner lips: corners shared, the upper and lower lines bound the open band.
    corners = S.add([[-MOUTH_CORNER_U, MOUTH_V], [MOUTH_CORNER_U, MOUTH_V]], "mouth_corner")
    inner_u = np.array([-0.0175, -0.0135, -0.009, -0.0045, 0.0, 0.0045, 0.009, 0.0135, 0.0175])
    band = MOUTH_BAND * mouth_lens(inner_u)
    inner_up = S.add(np.stack([inner_u, MOUTH_V + band], -1), "lip_inner_upper")
    inner_low = S.add(np.stack([inner_u, MOUTH_V - band], -1), "lip_inner_lower")
    lm[60], lm[64] = corners
    lm[61:64] = inner_up[[2, 4, 6]]
    lm[65:68] = inner_low[[6, 4, 2]]
    mid_u = np.array([-0.016, -0.008, 0.0, 0.008, 0.016])
    S.add(np.stack([mid_u, 0.5 * (lip_outer_upper(mid_u) + MOUTH_V + MOUTH_BAND * mouth_lens(mid_u))], -1), "lip_upper")
    S.add(np.stack([mid_u, 0.5 * (lip_outer_lower(mid_u) + MOUTH_V - MOUTH_BAND * mouth_lens(mid_u))], -1), "lip_lower")
    S.add([[-0.031, MOUTH_V], [0.031, MOUTH_V], [-0.004, -0.030], [0.0, -0.031], [0.004, -0.030]], "mouth_ring")

    feature = S.array()
    n_fill = NUM_VERTICES - len(feature)
    fill = _fill_sites(feature, n_fill)
    S.add(fill, "fill")
    sites = S.array()
    assert len(sites) == NUM_VERTICES and (lm >= 0).all()
    return {"sites": sites, "landmarks": lm, "kind": S.kind, "boundary": b_idx}


def _hex_grid(h):
    vmin, vmax = _OUTLINE_V[0], _OUTLINE_V[-1]
    rows = np.arange(vmin, vmax, h * np.sqrt(3) / 2)
    pts = []
    for r, v in enumerate(rows):
        u = np.arange(-0.08, 0.08 + 1e-9, h) + (0.5 * h if r % 2 else 0.0)
        pts.append(np.stack([u, np.full_like(u, v)], -1))
    return np.concatenate(pts, 0)


def _fill_sites(feature, n_fill):
    """Hexagonal fill of the outline away from the feature sites, exactly ``n_fill`` sites."""

    def candidates(h):
        g = _hex_grid(h)
        inside = np.abs(g[:, 0]) < outline_half_width(g[:, 1]) - 0.5 * h
        inside &= (g[:, 1] > _OUTLINE_V[0] + 0.5 * h) & (g[:, 1] < _OUTLINE_V[-1] - 0.5 * h)
        g = g[inside]
        d = np.sqrt(((g[:, None, :] - feature[None, :, :]) ** 2).sum(-1)).min(1)
        keep = d > 0.6 * h
        # No site inside the open mouth band: only the inner-lip lines may span it.
        band = MOUTH_BAND * mouth_lens(g[:, 0]) + 0.5 * h
        keep &= ~((np.abs(g[:, 1] - MOUTH_V) < band) & (np.abs(g[:, 0]) < MOUTH_CORNER_U + 0.5 * h))
        return g[keep], d[keep]

    lo, hi = 0.002, 0.012  # count(h) decreases with h: find the largest h with enough sites
    for _ in range(18):
        mid = 0.5 * (lo + hi)
        if len(candidates(mid)[0]) >= n_fill:
            lo = mid
        else:
            hi = mid
    pts, d = candidates(lo)
    # Drop the surplus closest to the feature sites (stable order: deterministic).
    order = np.argsort(-d, kind="stable")[:n_fill]
    return pts[np.sort(order)]


def triangulate(sites):
    """Delaunay triangles of the layout sites, counter-clockwise in ``(u, v)``."""
    import cv2

    scale = 1e4  # work in 0.1 mm units: well-conditioned floats for Subdiv2D
    p = (sites * scale).astype(np.float32)
    lo, hi = p.min(0) - 10.0, p.max(0) + 10.0
    sub = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    index = {}
    for i, q in enumerate(p):
        sub.insert((float(q[0]), float(q[1])))
        index[(float(q[0]), float(q[1]))] = i
    tris = []
    for t in sub.getTriangleList():
        keys = [(float(np.float32(t[0])), float(np.float32(t[1]))), (float(np.float32(t[2])), float(np.float32(t[3]))),
                (float(np.float32(t[4])), float(np.float32(t[5])))]
        if all(k in index for k in keys):
            tris.append([index[k] for k in keys])
    tris = np.array(tris, dtype=np.int64)
    a, b, c = sites[tris[:, 0]], sites[tris[:, 1]], sites[tris[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    flip = cross < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    tris = tris[np.abs(cross) > 1e-12]
    return tris[np.lexsort((tris[:, 2], tris[:, 1], tris[:, 0]))]
