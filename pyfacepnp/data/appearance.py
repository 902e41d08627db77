"""Appearance of synthetic faces: albedo textures and their random palettes (lighting,
backgrounds, occluders and degradations are :mod:`pyfacepnp.data.imaging`).

The albedo texture is painted in the face layout plane (see
:mod:`pyfacepnp.data.face_layout`) as a stack of soft feature masks (skin variation,
brows, eyes, lips, mouth interior, ...) composited with "over". Compositing is linear in
the layer colours, so the stack is reduced once to per-layer weights and a sample's
texture is one small matrix product with its random palette.
"""

from __future__ import annotations

import functools
import cv2
import numpy as np

from pyfacepnp.data import face_layout as L
from pyfacepnp.data.face_layout import MOUTH_V, smoothstep

__all__ = [
    "TEXTURE_LAYERS",
    "TEXTURE_SIZE",
    "HEAD_RAMP",
    "CLOTHES_ROWS",
    "face_hair_alpha",
    "texture_weights",
    "sample_palette",
    "texture_from_palette",
]

TEXTURE_LAYERS = (
    "skin", "skin_dark", "skin_light", "blush", "stubble", "hair", "eye_shadow", "lips",
    "brows", "nostrils", "sclera", "iris", "pupil", "lashes", "mouth", "teeth", "clothes",
)

TEXTURE_SIZE = 256
# The outermost texels of each side hold a skin (v = HEAD_RAMP[0]) to hair (HEAD_RAMP[1])
# ramp for the head behind the face (see pyfacepnp.data.head); rows above HEAD_RAMP[1]
# are hair across the whole texture.
HEAD_RAMP = (-0.1, 0.1)
# Texture rows below this v (across the whole width) are the clothes of the torso.
CLOTHES_ROWS = -0.105
_STRIP_TEXELS = 3

# Skin albedos from light to dark (sRGB-ish, [0, 1]).
_SKIN_TONES = np.array([[0.94, 0.80, 0.70], [0.88, 0.68, 0.56], [0.78, 0.57, 0.44],
                        [0.63, 0.43, 0.31], [0.45, 0.29, 0.20], [0.30, 0.19, 0.13]])
_HAIR = np.array([[0.05, 0.04, 0.04], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12], [0.62, 0.48, 0.30],
                  [0.50, 0.22, 0.10], [0.55, 0.55, 0.55]])
_IRIS = np.array([[0.25, 0.14, 0.07], [0.40, 0.26, 0.12], [0.30, 0.42, 0.55], [0.32, 0.42, 0.28],
                  [0.45, 0.40, 0.25], [0.12, 0.08, 0.05]])


def _noise(rng, size, cells):
    """Smooth value noise in [0, 1] of ``size x size`` from a ``cells x cells`` lattice."""
    g = rng.random((cells, cells)).astype(np.float32)
    n = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
    n -= n.min()
    return n / max(float(n.max()), 1e-6)


def _soft(d, width):
    """Soft inside-mask from a signed distance ``d`` (> 0 inside), ramp of ``width``."""
    return np.clip(d / width + 0.5, 0.0, 1.0)


def _polyline_distance(u, v, poly):
    d = np.full(u.shape, np.inf)
    for a, b in zip(poly[:-1], poly[1:]):
        ab = b - a
        t = np.clip(((u - a[0]) * ab[0] + (v - a[1]) * ab[1]) / (ab @ ab), 0.0, 1.0)
        d = np.minimum(d, np.hypot(u - a[0] - t * ab[0], v - a[1] - t * ab[1]))
    return d


def _layer_alphas(size):
    e = L.TEXTURE_EXTENT
    c = (np.arange(size) + 0.5) / size * 2 * e - e
    u, v = np.meshgrid(c, -c)  # rows go down in v
    texel = 2 * e / size
    rng = np.random.default_rng(7)  # fixed masks: per-sample variety comes from palettes
    a = {}
    a["skin_dark"] = 0.8 * smoothstep((_noise(rng, size, 7) - 0.45) / 0.4)
    a["skin_light"] = 0.7 * smoothstep((_noise(rng, size, 11) - 0.5) / 0.4)
    blush = np.exp(-0.5 * (((np.abs(u) - 0.041) / 0.014) ** 2 + ((v + 0.012) / 0.012) ** 2))
    blush += 0.7 * np.exp(-0.5 * ((u / 0.006) ** 2 + ((v + 0.012) / 0.005) ** 2))
    a["blush"] = 0.6 * np.clip(blush, 0, 1)
    fine = _noise(rng, size, 90)
    lower_face = smoothstep((-0.028 - v) / 0.02)
    lips_zone = np.exp(-0.5 * ((u / 0.026) ** 2 + ((v - MOUTH_V) / 0.011) ** 4))
    upper_lip = np.exp(-0.5 * ((u / 0.02) ** 2 + ((v + 0.033) / 0.006) ** 2))
    a["stubble"] = np.clip((lower_face + upper_lip) * (1 - lips_zone), 0, 1) * (0.35 + 0.65 * fine)
    hairline = np.minimum(0.086 - 0.008 * _noise(rng, size, 9) + 0.012 * (np.abs(u) / 0.07) ** 2, HEAD_RAMP[1] - 0.005)
    a["hair"] = _soft(v - hairline, 2 * texel) * (0.8 + 0.2 * fine)

    eye_open = np.zeros_like(u)
    lids = np.zeros_like(u)
    shadow = np.zeros_like(u)
    iris = np.zeros_like(u)
    pupil = np.zeros_like(u)
    brows = np.zeros_like(u)
    hair_strands = _noise(rng, size, 120)
    for side in (-1.0, 1.0):
        s = L.eye_param(u, side)
        base, up, lo = L.eye_lids(s)
        in_s = (s > 0) & (s < 1)
        d = np.minimum(up - v, v - lo)
        eye_open = np.maximum(eye_open, np.where(in_s, _soft(d, texel), 0.0))
        lid_w = 0.0006 + 0.0008 * np.clip(s, 0, 1)
        lids = np.maximum(lids, np.where((s > -0.03) & (s < 1.08), _soft(lid_w - np.abs(v - up), texel), 0.0))
        lids = np.maximum(lids, 0.5 * np.where(in_s, _soft(0.0004 - np.abs(v - lo), texel), 0.0))
        sh = np.where((s > -0.1) & (s < 1.1), np.exp(-0.5 * ((v - up - 0.003) / 0.003) ** 2), 0.0)
        shadow = np.maximum(shadow, 0.7 * sh * smoothstep((s + 0.1) / 0.3) * smoothstep((1.1 - s) / 0.3))
        cu, cv_ = side * 0.0305, 0.0267
        r = np.hypot(u - cu, v - cv_)
        iris = np.maximum(iris, _soft(0.0056 - r, texel) * (0.85 + 0.15 * fine))
        pupil = np.maximum(pupil, _soft(0.0023 - r, texel))
        b = np.linspace(-0.02, 1.02, 40)
        poly = L.brow_point(b, side)
        dist = _polyline_distance(u, v, poly)
        # Brows are thicker at the inner end; strands from high-frequency noise.
        bb = np.clip((np.abs(u) - 0.013) / 0.043, 0, 1)
        thick = 0.0028 * (1.0 - 0.45 * bb)
        brows = np.maximum(brows, _soft(thick - dist, 1.5 * texel) * (0.55 + 0.45 * hair_strands))
    a["eye_shadow"] = shadow * (1 - eye_open)
    upper, lower = L.lip_outer_upper(u), L.lip_outer_lower(u)
    lips = np.minimum(np.minimum(upper - v, v - lower), 0.025 - np.abs(u))
    a["lips"] = 0.92 * _soft(lips, 1.5 * texel)
    a["brows"] = brows
    nost = np.hypot((np.abs(u) - 0.0055) / 0.0028, (v + 0.0195) / 0.0016)
    a["nostrils"] = 0.9 * _soft(1.0 - nost, 0.3)
    a["sclera"] = eye_open
    a["iris"] = iris * eye_open
    a["pupil"] = pupil * eye_open
    a["lashes"] = lids
    band = L.MOUTH_BAND * L.mouth_lens(u)
    mouth = _soft(band - np.abs(v - MOUTH_V), 0.5 * texel) * (np.abs(u) < L.MOUTH_CORNER_U)
    a["mouth"] = mouth
    teeth = (v > MOUTH_V - 0.15 * band) & (np.abs(u) < 0.016)
    a["teeth"] = mouth * teeth * 0.95
    # Side strips for the head: nothing but the skin-to-hair ramp. The rows below the ramp
    # are plain skin, as a head triangle crossing the back midline samples along a row.
    strip = np.zeros_like(u, dtype=bool)
    strip[:, :_STRIP_TEXELS] = strip[:, -_STRIP_TEXELS:] = True
    plain = strip | (v < HEAD_RAMP[0] + 0.5 * texel)
    for name in a:
        a[name] = np.where(plain, 0.0, a[name])
    ramp = np.clip((v - HEAD_RAMP[0]) / (HEAD_RAMP[1] - HEAD_RAMP[0]), 0.0, 1.0)
    a["hair"] = np.where(strip, ramp, a["hair"])
    a["clothes"] = (v < CLOTHES_ROWS).astype(np.float64)
    return a


@functools.lru_cache(maxsize=4)
def texture_weights(size: int = TEXTURE_SIZE) -> np.ndarray:
    """``(size, size, len(TEXTURE_LAYERS))`` float32 weights: the albedo texture is
    ``weights @ palette``. Built once per process (about 0.3 s)."""
    alphas = _layer_alphas(size)
    stack = [np.ones((size, size))] + [alphas[name] for name in TEXTURE_LAYERS[1:]]
    weights = np.empty((len(stack), size, size))
    remaining = np.ones((size, size))
    for i in range(len(stack) - 1, -1, -1):  # "over" from the top layer down
        weights[i] = stack[i] * remaining
        remaining = remaining * (1.0 - stack[i])
    out = np.ascontiguousarray(weights.transpose(1, 2, 0), dtype=np.float32)
    out.setflags(write=False)
    return out


def face_hair_alpha(model) -> np.ndarray:
    """``(V,)`` opacity of the hair layer at each vertex of the face model's texture."""
    return _hair_alpha_at(model.texcoords.tobytes(), len(model.texcoords))


@functools.lru_cache(maxsize=4)
def _hair_alpha_at(texcoords_bytes: bytes, n: int) -> np.ndarray:
    size = TEXTURE_SIZE
    alpha = _layer_alphas(size)["hair"].astype(np.float32)
    tc = np.frombuffer(texcoords_bytes, dtype=np.float32).reshape(n, 2) * size - 0.5
    return cv2.remap(alpha, tc[:, 0:1].copy(), tc[:, 1:2].copy(), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)[:, 0]


def sample_palette(rng: np.random.Generator) -> np.ndarray:
    """Random ``(len(TEXTURE_LAYERS), 3)`` layer colours of one face."""
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    i = int(tone)
    skin = _SKIN_TONES[i] + (tone - i) * (_SKIN_TONES[min(i + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[i])
    skin = np.clip(skin * rng.uniform(0.93, 1.07, 3) ** 0.5, 0, 1)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    beard = rng.uniform(0.3, 0.9) if rng.random() < 0.25 else rng.uniform(0.0, 0.08)
    makeup = rng.uniform(0.0, 0.35) if rng.random() < 0.3 else 0.0
    lip_colour = skin * np.array([0.85, 0.58, 0.58]) + makeup * np.array([0.25, -0.15, -0.1])
    p = {
        "skin": skin,
        "skin_dark": skin * rng.uniform(0.8, 0.95) * np.array([1.0, 0.95, 0.93]),
        "skin_light": np.clip(skin * rng.uniform(1.02, 1.12), 0, 1),
        "blush": skin * (1 - rng.uniform(0.0, 0.25) * np.array([0.0, 0.6, 0.5])),
        "stubble": (1 - beard) * skin + beard * hair * 0.8,
        "hair": hair,
        "eye_shadow": skin * (rng.uniform(0.72, 0.92) - 0.2 * makeup),
        "lips": lip_colour,
        "brows": skin + rng.uniform(0.55, 0.95) * (hair * 0.7 - skin),
        "nostrils": skin * 0.22,
        "sclera": np.array([0.86, 0.83, 0.78]) * rng.uniform(0.85, 1.0),
        "iris": _IRIS[rng.integers(len(_IRIS))] * rng.uniform(0.8, 1.2),
        "pupil": np.array([0.03, 0.03, 0.03]),
        "lashes": hair * 0.3,
        "mouth": np.array([0.22, 0.07, 0.07]) * rng.uniform(0.6, 1.2),
        "teeth": np.array([0.88, 0.85, 0.76]) * rng.uniform(0.8, 1.0),
        "clothes": rng.random(3) ** 1.5,
    }
    return np.clip(np.stack([p[k] for k in TEXTURE_LAYERS]), 0, 1).astype(np.float32)


def texture_from_palette(palette: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """``(size, size, 3)`` float32 albedo texture for a palette from :func:`sample_palette`."""
    # cv2.transform is a per-texel matrix product, ~10x faster than numpy's matmul here.
    return cv2.transform(texture_weights(size), np.ascontiguousarray(palette.T, dtype=np.float32))
