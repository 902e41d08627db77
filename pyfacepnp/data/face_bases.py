"""The procedural face model's geometry: the neutral template and the identity and
expression bases, as smooth displacement fields over the layout of
:mod:`pyfacepnp.data.face_layout` (assembled into a :class:`~pyfacepnp.data.face_model.FaceModel`
by :func:`~pyfacepnp.data.face_model.build_face_model`).

* :func:`neutral_template`: the neutral face in metres in the WCPA canonical frame.
* :func:`identity_basis` ``(40, N, 3)``: the displacement of a one-standard-deviation
  change of each of :data:`IDENTITY_NAMES`.
* :func:`expression_basis` ``(21, N, 3)``: blendshape-like displacements at full
  activation of each of :data:`EXPRESSION_NAMES`.
"""

from __future__ import annotations

import numpy as np

from pyfacepnp.data import face_layout as L
from pyfacepnp.data.face_layout import MOUTH_V, smooth_interp, smoothstep

__all__ = ["IDENTITY_NAMES", "EXPRESSION_NAMES", "neutral_template", "identity_basis", "expression_basis"]

EXPRESSION_NAMES = (
    "jaw_open", "smile_left", "smile_right", "mouth_frown", "mouth_pucker", "mouth_stretch",
    "upper_lip_raise", "lower_lip_depress", "brow_inner_up", "brow_outer_up", "brow_down",
    "blink_left", "blink_right", "eye_wide", "eye_squint", "cheek_puff", "nose_sneer",
    "jaw_left", "jaw_right", "mouth_left", "mouth_right",
)

IDENTITY_NAMES = (
    "scale", "face_width", "face_height", "face_depth", "jaw_width", "chin_length",
    "chin_protrusion", "forehead_slope", "forehead_height", "nose_length", "nose_projection",
    "nose_width", "nose_bridge", "nose_tip_up", "eye_spacing", "eye_size", "eye_height",
    "eye_tilt", "mouth_width", "upper_lip_thickness", "lower_lip_thickness",
    "lip_protrusion", "mouth_height", "brow_height", "brow_ridge", "cheekbones",
    "cheek_fullness", "eye_socket_depth", "face_roundness", "asymmetry",
) + tuple(f"shape_field_{i}" for i in range(10))

_HEAD_RADIUS = 0.085  # horizontal wrap of the layout around the head
_EYE_CENTRE = np.array([0.0305, 0.0265])


def _g(u, v, cu, cv, su, sv):
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _gsym(u, v, cu, cv, su, sv):
    """Mirror-symmetric pair of Gaussians at ``u = +-cu`` (smooth across the midline)."""
    return _g(u, v, cu, cv, su, sv) + _g(u, v, -cu, cv, su, sv)


def _gpair(u, v, cu, cv, su, sv):
    """Antisymmetric pair (``+`` at ``u = cu``, ``-`` at ``-cu``): an x-displacement that
    pushes both sides outwards without tearing or folding the midline."""
    return _g(u, v, cu, cv, su, sv) - _g(u, v, -cu, cv, su, sv)


def _nose_height(u, v):
    """Height of the nose above the face plane (ridge, tip, alae)."""
    ridge = smooth_interp(v, [-0.028, -0.0235, -0.019, -0.014, -0.011, 0.0, 0.0125, 0.025, 0.032],
                          [0.0, 0.003, 0.012, 0.0215, 0.0222, 0.014, 0.008, 0.004, 0.0])
    width = smooth_interp(v, [-0.022, -0.012, 0.0, 0.025], [0.0125, 0.0105, 0.008, 0.007])
    cross = np.exp(-((u / width) ** 4))
    alae = 0.0075 * _gsym(u, v, 0.0125, -0.016, 0.0055, 0.005)
    return ridge * cross + alae


def _mouth_collapse(u, v):
    """Vertical shift that closes the layout's open mouth band in 3D."""
    lens = L.mouth_lens(u)
    half = L.MOUTH_BAND * lens
    d = np.abs(v - MOUTH_V) - half
    amount = (L.MOUTH_BAND - L.MOUTH_BAND_3D) * lens * (1.0 - smoothstep(d / 0.006))
    return -np.sign(v - MOUTH_V) * amount


def _lip_side_weight(u, v):
    """1 for the lower lip/jaw side of the seam, 0 for the upper side; the transition is
    sharp between the lips and widens over the cheeks so that opening is smooth there."""
    width = 0.0012 + 0.02 * smoothstep((np.abs(u) - 0.018) / 0.02)
    return smoothstep(0.5 + 0.5 * (MOUTH_V - v) / width)


def neutral_template(uv):
    """``(N, 3)`` neutral face (metres) at layout sites ``uv (N, 2)``."""
    u, v = uv[:, 0], uv[:, 1]
    y = v + _mouth_collapse(u, v)
    theta = u / _HEAD_RADIUS
    x = _HEAD_RADIUS * np.sin(theta)
    z = _HEAD_RADIUS * (np.cos(theta) - 1.0)
    z += smooth_interp(y, [-0.104, -0.095, -0.085, -0.07, -0.045, -0.03, 0.0, 0.025, 0.045, 0.07, 0.09, 0.10],
                       [0.022, 0.043, 0.056, 0.052, 0.058, 0.058, 0.055, 0.051, 0.053, 0.046, 0.036, 0.026])
    # Features are functions of the closed-mouth position (u, y), so the two lips meet.
    z += _nose_height(u, y)
    z += 0.009 * _gsym(u, y, 0.042, -0.008, 0.016, 0.018)  # cheeks
    z -= 0.0075 * _gsym(u, y, 0.031, 0.026, 0.013, 0.009)  # eye sockets
    z += 0.0045 * _gsym(u, y, 0.031, 0.045, 0.022, 0.005)  # brow ridge
    z += 0.006 * _g(u, y, 0.0, -0.046, 0.026, 0.016)  # muzzle
    z += 0.0055 * _g(u, y, 0.0, -0.086, 0.016, 0.010)  # chin
    z -= 0.0025 * _g(u, y, 0.0, -0.066, 0.02, 0.004)  # labiomental fold
    # Lips: rounded bumps between the seam and the outer contour.
    for outer, sign, amp in ((L.lip_outer_upper(u), 1.0, 0.0038), (L.lip_outer_lower(u), -1.0, 0.0045)):
        height = np.maximum(np.abs(outer - MOUTH_V), 1e-4)
        centre = MOUTH_V + 0.45 * (outer - MOUTH_V)
        env = 1.0 - smoothstep((np.abs(u) - 0.016) / 0.012)
        z += amp * env * np.exp(-0.5 * ((y - centre) / (0.42 * height)) ** 2)
    # Eyeballs bulge in the eye opening; the upper lid is slightly thicker.
    for side in (-1.0, 1.0):
        s = L.eye_param(u, side)
        base, upper, lower = L.eye_lids(s)
        inside = (s > 0) & (s < 1)
        centre_v = 0.5 * (upper + lower)
        r = np.sqrt(((s - 0.5) / 0.62) ** 2 + ((y - centre_v) / 0.0075) ** 2)
        z += np.where(inside | (r < 1), 0.0032 * np.clip(1 - r**2, 0, 1), 0.0)
        z += 0.0012 * np.exp(-0.5 * ((y - upper - 0.002) / 0.0018) ** 2) * smoothstep(s / 0.2) * smoothstep((1 - s) / 0.2)
    return np.stack([x, y, z], -1)


def _eye_lid_field(u, v, side, lid):
    """Per-site weights of eye ``side``: ``(window, above, frac, below, opening)`` used by
    blink/wide/squint (``frac`` = 0 on the lower lid, 1 on the upper lid)."""
    s = L.eye_param(u, side)
    base, upper, lower = L.eye_lids(s)
    opening = upper - lower
    window = smoothstep((s + 0.15) / 0.15) * smoothstep((1.15 - s) / 0.15)
    frac = np.clip((v - lower) / np.maximum(opening, 1e-5), 0.0, 1.0)
    above = 1.0 - smoothstep((v - upper) / 0.016)  # gentle enough not to fold the lid skin
    below = 1.0 - smoothstep((lower - v) / 0.008)
    return window, above, frac, below, opening


def expression_basis(uv, P):
    """``(21, N, 3)`` expression displacements at sites ``uv`` of the template ``P``."""
    # Smooth fields use the closed-mouth 3D template position (x, y), so both lips at the
    # seam move together; only the lip-side and eyelid weights use the layout.
    lu, lv = uv[:, 0], uv[:, 1]
    u, v = P[:, 0], P[:, 1]
    n = len(u)
    out = {}

    def field(dx=0.0, dy=0.0, dz=0.0):
        return np.stack([np.broadcast_to(np.asarray(a, dtype=np.float64), (n,)) for a in (dx, dy, dz)], -1)

    jaw_w = _lip_side_weight(lu, lv)
    hinge_v = 0.012
    reach = np.clip((hinge_v - lv) / (hinge_v + 0.10), 0.0, 1.2) * jaw_w
    out["jaw_open"] = field(dx=-0.08 * P[:, 0] * reach, dy=-0.028 * reach, dz=-0.009 * reach)
    for name, side in (("smile_left", 1.0), ("smile_right", -1.0)):
        corner = _g(u, v, side * 0.025, MOUTH_V, 0.013, 0.011)
        cheek = _g(u, v, side * 0.038, -0.012, 0.014, 0.014)
        sw, _, _, below, _ = _eye_lid_field(lu, lv, side, "lower")
        out[name] = field(dx=side * 0.006 * corner, dy=0.006 * corner + 0.0025 * cheek + 0.0008 * sw * below * (v < 0.03),
                          dz=-0.003 * corner + 0.002 * cheek)
    corners = _gsym(u, v, 0.025, MOUTH_V, 0.012, 0.011)
    out["mouth_frown"] = field(dy=-0.005 * corners, dz=-0.001 * corners)
    mouth = _g(u, v, 0.0, MOUTH_V, 0.022, 0.012)
    out["mouth_pucker"] = field(dx=-0.35 * P[:, 0] * mouth, dz=0.008 * mouth)
    out["mouth_stretch"] = field(dx=0.25 * P[:, 0] * mouth, dy=-0.2 * (v - MOUTH_V) * mouth)
    lips = _g(u, v, 0.0, MOUTH_V, 0.022, 0.008)
    out["upper_lip_raise"] = field(dy=0.004 * lips * (1 - jaw_w), dz=0.001 * lips * (1 - jaw_w))
    out["lower_lip_depress"] = field(dy=-0.005 * lips * jaw_w, dz=0.0005 * lips * jaw_w)
    inner = _gsym(u, v, 0.018, 0.047, 0.011, 0.013)
    outer = _gsym(u, v, 0.048, 0.045, 0.012, 0.012)
    out["brow_inner_up"] = field(dy=0.0055 * inner)
    out["brow_outer_up"] = field(dy=0.005 * outer)
    brow = _gsym(u, v, 0.022, 0.044, 0.014, 0.01)
    out["brow_down"] = field(dx=-0.0022 * _gpair(u, v, 0.022, 0.044, 0.014, 0.01), dy=-0.0042 * brow, dz=0.001 * brow)
    for name, side in (("blink_left", 1.0), ("blink_right", -1.0)):
        window, above, frac, _, opening = _eye_lid_field(lu, lv, side, "upper")
        # The upper lid (and the skin above it, fading out) comes down onto the lower lid;
        # the eyeball sites between the lids are compressed onto it.
        weight = np.where(lv >= L.eye_lids(L.eye_param(lu, side))[1], above, frac)
        out[name] = field(dy=-0.97 * opening * weight * window)
    wide = np.zeros((n, 3))
    squint = np.zeros((n, 3))
    for side in (-1.0, 1.0):
        window, above, frac, below, opening = _eye_lid_field(lu, lv, side, "upper")
        upper = L.eye_lids(L.eye_param(lu, side))[1]
        w_up = np.where(lv >= upper, above, frac)
        wide[:, 1] += 0.0017 * w_up * window
        w_low = np.where(lv <= L.eye_lids(L.eye_param(lu, side))[2], below, 1.0 - frac)
        squint[:, 1] += (0.0016 * w_low - 0.0009 * w_up) * window
    out["eye_wide"], out["eye_squint"] = wide, squint
    puff = _gsym(u, v, 0.04, -0.035, 0.015, 0.016)
    out["cheek_puff"] = field(dx=0.004 * _gpair(u, v, 0.04, -0.035, 0.015, 0.016), dz=0.007 * puff)
    alae = _gsym(u, v, 0.012, -0.014, 0.008, 0.01)
    out["nose_sneer"] = field(dy=0.0025 * alae + 0.0012 * lips * (1 - jaw_w), dz=0.0008 * alae)
    jaw_side = np.clip((hinge_v - lv) / (hinge_v + 0.10), 0.0, 1.2) * jaw_w
    out["jaw_left"] = field(dx=0.006 * jaw_side)
    out["jaw_right"] = field(dx=-0.006 * jaw_side)
    mouth_wide = _g(u, v, 0.0, MOUTH_V, 0.03, 0.016)
    out["mouth_left"] = field(dx=0.005 * mouth_wide)
    out["mouth_right"] = field(dx=-0.005 * mouth_wide)
    return np.stack([out[k] for k in EXPRESSION_NAMES], 0)


def identity_basis(uv, P):
    """``(40, N, 3)`` identity displacements at sites ``uv`` of the template ``P``."""
    # Fields are functions of the closed-mouth 3D template position (see _expression_basis).
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    u, v = x, y
    n = len(u)
    zero = np.zeros(n)

    def f(dx=zero, dy=zero, dz=zero):
        return np.stack(np.broadcast_arrays(dx, dy, dz), -1).astype(np.float64)

    nose = _g(u, v, 0.0, -0.005, 0.012, 0.02)
    eyes = _gsym(u, v, 0.031, 0.026, 0.014, 0.011)
    mouth = _g(u, v, 0.0, MOUTH_V, 0.02, 0.012)
    low = smoothstep(-v / 0.06)
    comps = {
        "scale": f(0.035 * x, 0.035 * y, 0.035 * z),
        "face_width": f(dx=0.045 * x),
        "face_height": f(dy=0.04 * y),
        "face_depth": f(dz=0.06 * z),
        "jaw_width": f(dx=0.06 * x * low),
        "chin_length": f(dy=-0.005 * smoothstep((-v - 0.05) / 0.04)),
        "chin_protrusion": f(dz=0.004 * _g(u, v, 0.0, -0.085, 0.02, 0.012)),
        "forehead_slope": f(dz=-0.005 * smoothstep((v - 0.04) / 0.06)),
        "forehead_height": f(dy=0.006 * smoothstep((v - 0.05) / 0.05)),
        "nose_length": f(dy=-0.0035 * nose * np.clip((0.025 - v) / 0.035, 0, 1)),
        "nose_projection": f(dz=0.2 * _nose_height(u, y)),
        "nose_width": f(dx=0.15 * x * _g(u, v, 0.0, -0.012, 0.02, 0.014)),
        "nose_bridge": f(dz=0.003 * _g(u, v, 0.0, 0.012, 0.006, 0.012)),
        "nose_tip_up": f(dy=0.002 * _g(u, v, 0.0, -0.013, 0.008, 0.006)),
        "eye_spacing": f(dx=0.002 * _gpair(u, v, 0.031, 0.026, 0.016, 0.014)),
        "eye_size": f(dx=0.08 * ((u - _EYE_CENTRE[0]) * _g(u, v, _EYE_CENTRE[0], 0.026, 0.014, 0.011)
                                 + (u + _EYE_CENTRE[0]) * _g(u, v, -_EYE_CENTRE[0], 0.026, 0.014, 0.011)),
                      dy=0.08 * (v - _EYE_CENTRE[1]) * eyes),
        "eye_height": f(dy=0.0025 * _gsym(u, v, 0.031, 0.026, 0.018, 0.014)),
        "eye_tilt": f(dy=0.0015 * ((np.abs(u) - 0.031) / 0.015) * eyes),
        "mouth_width": f(dx=0.07 * x * mouth),
        "upper_lip_thickness": f(dy=0.0015 * _g(u, v, 0.0, -0.039, 0.018, 0.004)),
        "lower_lip_thickness": f(dy=-0.0018 * _g(u, v, 0.0, -0.055, 0.018, 0.005)),
        "lip_protrusion": f(dz=0.003 * _g(u, v, 0.0, MOUTH_V, 0.02, 0.009)),
        "mouth_height": f(dy=0.003 * _g(u, v, 0.0, MOUTH_V, 0.03, 0.015)),
        "brow_height": f(dy=0.003 * _gsym(u, v, 0.034, 0.047, 0.02, 0.008)),
        "brow_ridge": f(dz=0.003 * _gsym(u, v, 0.032, 0.045, 0.022, 0.006)),
        "cheekbones": f(dx=0.002 * _gpair(u, v, 0.05, 0.0, 0.014, 0.014), dz=0.004 * _gsym(u, v, 0.045, 0.0, 0.014, 0.014)),
        "cheek_fullness": f(dx=0.003 * _gpair(u, v, 0.045, -0.03, 0.018, 0.018), dz=0.004 * _gsym(u, v, 0.045, -0.03, 0.018, 0.018)),
        "eye_socket_depth": f(dz=-0.003 * eyes),
        "face_roundness": f(dz=-0.01 * (x / 0.07) ** 2),
        "asymmetry": f(dy=0.0015 * (x / 0.07), dz=0.001 * (x / 0.07) * low),
    }
    rng = np.random.default_rng(20220)  # fixed: the model is the same everywhere
    for i in range(10):
        d = np.zeros((n, 3))
        for _ in range(6):
            cu, cv = rng.uniform(0.0, 0.065), rng.uniform(-0.09, 0.08)
            s = rng.uniform(0.015, 0.03)
            amp = rng.normal(0.0, 0.0008, 3)
            # A mirror-symmetric pair of bumps: x antisymmetric, y and z symmetric.
            d[:, 0] += amp[0] * _gpair(u, v, cu, cv, s, s)
            d[:, 1:] += amp[1:] * _gsym(u, v, cu, cv, s, s)[:, None]
            d += rng.normal(0.0, 0.0002, 3) * _g(u, v, rng.uniform(-0.06, 0.06), cv, s, s)[:, None]
        comps[f"shape_field_{i}"] = d
    return np.stack([comps[k] for k in IDENTITY_NAMES], 0)
