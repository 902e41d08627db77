"""Imaging conditions of a synthetic sample: lighting, backgrounds, occluders, blur and noise.

Backgrounds and occluders are defined in full-frame pixel coordinates, so a full frame and
a crop rendered with ``K_crop`` show the same scene.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from pyfacepnp.geometry.crop import apply_affine
from pyfacepnp.geometry.transforms import transform_points

__all__ = ["sample_lighting", "sample_background", "warp_background", "Occluder", "sample_occluders",
           "draw_occluders", "degrade"]


def sample_lighting(rng: np.random.Generator):
    """Random ``(lights (2, 6), material (5,))`` for :func:`pyfacepnp.ops.render.render_mesh`:
    a key light from a random direction in front of the face, a weaker fill light, a
    tinted ambient term and a random amount of specular reflection."""
    def direction(spread):
        d = np.array([rng.normal(0, spread), rng.normal(-0.3, spread), -1.0])
        return d / np.linalg.norm(d)

    warmth = rng.uniform(-0.1, 0.1)
    tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth])
    key = rng.uniform(0.45, 0.9) * tint
    fill = rng.uniform(0.0, 0.3) * tint
    lights = np.stack([np.concatenate([direction(0.9), key]), np.concatenate([direction(1.2), fill])])
    ambient = rng.uniform(0.2, 0.5) * tint * rng.uniform(0.95, 1.05, 3)
    material = np.concatenate([ambient, [rng.uniform(0.0, 0.15), rng.uniform(8.0, 40.0)]])
    return lights.astype(np.float32), material.astype(np.float32)


def sample_background(rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """A random ``(size, size, 3)`` float32 background pattern covering the whole frame:
    a colour gradient, smooth noise and a few random shapes."""
    c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    t = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + np.float32(np.cos(angle)) * t[None, :] + np.float32(np.sin(angle)) * t[:, None], 0, 1)
    img = c0 + ramp[..., None] * (c1 - c0)
    cells = int(rng.integers(3, 24))
    noise = cv2.resize(rng.random((cells, cells, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img += np.float32(rng.uniform(0.0, 0.35)) * (noise - 0.5)
    # Shapes are drawn in 8 bits: OpenCV anti-aliases only there.
    img = np.ascontiguousarray(np.clip(img, 0, 1) * 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 7))):
        colour = tuple(float(x) * 255 for x in rng.random(3))
        centre = tuple(int(x) for x in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            axes = tuple(int(x) for x in rng.integers(2, size // 3, 2))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            pts = (rng.random((4, 2)) * size).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def warp_background(pattern: np.ndarray, frame_to_out: np.ndarray, frame_size: int, out_size: int) -> np.ndarray:
    """Place a background pattern spanning a ``frame_size`` frame into an output image.

    Args:
        pattern: ``(S, S, 3)`` from :func:`sample_background`.
        frame_to_out: ``(2, 3)`` affine from full-frame pixels to output pixels.

    Returns:
        ``(out_size, out_size, 3)`` float32.
    """
    s = pattern.shape[0] / frame_size
    pattern_to_frame = np.array([[1 / s, 0, 0.5 / s - 0.5], [0, 1 / s, 0.5 / s - 0.5], [0, 0, 1]])
    M = np.vstack([frame_to_out, [0, 0, 1]]) @ pattern_to_frame
    return cv2.warpAffine(pattern, M[:2], (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


class Occluder(NamedTuple):
    polygon: np.ndarray  #: ``(P, 2)`` full-frame pixel coordinates
    colour: np.ndarray  #: ``(3,)``


def sample_occluders(rng: np.random.Generator, landmarks: np.ndarray, probability: float = 0.3,
                     max_count: int = 2) -> list:
    """Random occluders (hand-sized blobs, bars) over the face in full-frame pixels.

    Args:
        landmarks: ``(68, 2)`` full-frame landmarks, to place and size the occluders.
        probability: chance that a sample has any occluder.
    """
    if rng.random() >= probability:
        return []
    lo, hi = landmarks.min(0), landmarks.max(0)
    size = float(max(hi - lo))
    out = []
    for _ in range(int(rng.integers(1, max_count + 1))):
        centre = landmarks[rng.integers(len(landmarks))] + rng.normal(0, 0.15 * size, 2)
        if rng.random() < 0.6:  # blob
            n = 14
            ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
            radius = size * rng.uniform(0.12, 0.3) * (1 + 0.25 * rng.standard_normal(n)).clip(0.5, 1.5)
            axis = rng.uniform(0.5, 1.0)
            rot = rng.uniform(0, np.pi)
            p = np.stack([radius * np.cos(ang), axis * radius * np.sin(ang)], -1)
        else:  # bar
            w, h = size * rng.uniform(0.6, 1.4), size * rng.uniform(0.06, 0.18)
            p = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
            rot = rng.uniform(0, np.pi)
        R = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        out.append(Occluder(transform_points(p, R, centre), rng.random(3).astype(np.float32)))
    return out


def draw_occluders(image: np.ndarray, occluders: list, frame_to_out: np.ndarray) -> None:
    """Fill the occluders (in full-frame pixels) into ``image (H, W, 3)`` in place."""
    shift = 4  # sub-pixel vertices for cv2.fillPoly
    for occ in occluders:
        pts = apply_affine(occ.polygon, frame_to_out)
        pts = np.round(pts * (1 << shift)).astype(np.int32)
        cv2.fillPoly(image, [pts], tuple(float(c) for c in occ.colour), cv2.LINE_AA, shift)


def degrade(image: np.ndarray, noise_seed: int, blur_sigma: float, noise_sigma: float,
            scale: float = 1.0) -> np.ndarray:
    """Gaussian blur (``blur_sigma`` in full-frame pixels, times ``scale`` = output pixels per
    full-frame pixel) and additive Gaussian noise (``noise_sigma`` per pixel), clipped.

    The noise comes from OpenCV's generator seeded with ``noise_seed`` (5x faster than
    numpy's for a full frame), so it is reproducible."""
    sigma = blur_sigma * scale
    if sigma > 0.05:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if noise_sigma > 0:
        noise = np.empty(image.shape, dtype=np.float32)
        cv2.setRNGSeed(int(noise_seed) & 0x7FFFFFFF)
        cv2.randn(noise.reshape(image.shape[0], -1), 0.0, float(noise_sigma))
        image = image + noise
    return np.clip(image, 0.0, 1.0, out=image)
