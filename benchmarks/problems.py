"""Generated PnP problems shared by the benchmarks: camera, object points, poses, noise.

Families (all with 1 px Gaussian pixel noise, K with fx = fy = 629.8, cx = cy = 400 on an
800x800 image, as in the WCPA face data):

- ``face``: points on a face-sized surface (1220 vertices, ~0.15 m across, nose ~3 cm)
  at t_z ~ 0.53 +- 0.065 m with yaw/pitch std 0.3 rad and roll std 0.08 rad; N points
  are a random subset of the 1220 per problem.
- ``planar``: points on a 0.2 m square (z = 0), tilted up to 60 degrees, at 0.5-0.8 m.
- ``minimal``: N (4..6) points in a 0.2 m box under any rotation, at 0.5-0.8 m.
- ``wide``: points in a 0.3 m box under uniformly random rotations, t_z in 0.6-1.5 m.
- ``outliers``: ``face`` with 20 % of the pixels replaced by uniform points in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pyfacepnp.geometry.camera import project_points
from pyfacepnp.geometry.rotation import rotation_from_euler

FACE_VERTICES = 1220
FX = 629.8
CX = CY = 400.0
IMAGE_SIZE = 800
FAMILIES = ("face", "planar", "minimal", "wide", "outliers")


@dataclass
class Problems:
    """A batch of PnP problems (float64 torch tensors) with the poses that generated them."""

    family: str
    points3d: torch.Tensor  # (B, N, 3)
    points2d: torch.Tensor  # (B, N, 2), noisy
    K: torch.Tensor  # (B, 3, 3)
    R: torch.Tensor  # (B, 3, 3) ground truth
    t: torch.Tensor  # (B, 3)
    outliers: torch.Tensor  # (B, N) bool

    @property
    def batch(self) -> int:
        return self.points3d.shape[0]

    def subset(self, count: int) -> "Problems":
        """The first ``count`` problems."""
        return Problems(self.family, *(a[:count] for a in (self.points3d, self.points2d, self.K, self.R, self.t, self.outliers)))


def face_surface(count: int = FACE_VERTICES) -> np.ndarray:
    """A smooth face-like surface ``(count, 3)`` in metres, facing -z (toward the camera).

    Sunflower-sampled ellipse 0.15 m wide and 0.20 m tall, lifted onto a half-ellipsoid
    6 cm deep with a 3 cm Gaussian nose, centred at the origin.
    """
    k = np.arange(count) + 0.5
    rad = np.sqrt(k / count)
    ang = k * np.pi * (3 - np.sqrt(5))
    x, y = 0.075 * rad * np.cos(ang), 0.10 * rad * np.sin(ang)
    depth = 0.06 * np.sqrt(np.clip(1 - rad**2, 0, 1)) + 0.03 * np.exp(-(x**2 + (y - 0.01) ** 2) / (2 * 0.015**2))
    pts = np.stack([x, y, -depth], 1)
    return pts - pts.mean(0)


def _euler(yaw, pitch, roll):
    """R = Rz(roll) Ry(yaw) Rx(pitch), batched numpy."""
    return rotation_from_euler("zyx", roll, yaw, pitch).reshape(-1, 3, 3)


def _random_rotations(rng, B):
    """Uniform rotations from normalised quaternions."""
    q = rng.normal(size=(B, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
         2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
         2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1
    ).reshape(B, 3, 3)


def camera(B: int) -> np.ndarray:
    K = np.array([[FX, 0, CX], [0, FX, CY], [0, 0, 1.0]])
    return np.broadcast_to(K, (B, 3, 3)).copy()


def make_problems(family: str, B: int, N: int, seed: int = 0, noise_px: float = 1.0) -> Problems:
    """Generate ``B`` problems of ``N`` points of one family (deterministic in ``seed``).

    Example:
        >>> p = make_problems("face", 8, 68)
        >>> tuple(p.points3d.shape), tuple(p.points2d.shape)
        ((8, 68, 3), (8, 68, 2))
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    rng = np.random.default_rng([seed, FAMILIES.index(family), B, N])
    if family in ("face", "outliers"):
        if N > FACE_VERTICES:
            raise ValueError(f"face problems have at most {FACE_VERTICES} points, got N={N}")
        surf = face_surface()
        idx = np.stack([rng.permutation(FACE_VERTICES)[:N] for _ in range(B)])
        X = surf[idx] * rng.uniform(0.9, 1.1, size=(B, 1, 1))
        R = _euler(rng.normal(0, 0.3, B), rng.normal(0, 0.3, B), rng.normal(0, 0.08, B))
        t = np.stack([rng.normal(0, 0.03, B), rng.normal(0, 0.03, B), 0.53 + rng.normal(0, 0.065, B)], 1)
    elif family == "planar":
        X = np.concatenate([rng.uniform(-0.1, 0.1, (B, N, 2)), np.zeros((B, N, 1))], 2)
        R = _euler(rng.uniform(-1.05, 1.05, B), rng.uniform(-1.05, 1.05, B), rng.uniform(-np.pi, np.pi, B))
        t = np.stack([rng.uniform(-0.05, 0.05, B), rng.uniform(-0.05, 0.05, B), rng.uniform(0.5, 0.8, B)], 1)
    elif family == "minimal":
        X = rng.uniform(-0.1, 0.1, (B, N, 3))
        R = _random_rotations(rng, B)
        t = np.stack([rng.uniform(-0.05, 0.05, B), rng.uniform(-0.05, 0.05, B), rng.uniform(0.5, 0.8, B)], 1)
    else:  # wide
        X = rng.uniform(-0.15, 0.15, (B, N, 3))
        R = _random_rotations(rng, B)
        t = np.stack([rng.uniform(-0.1, 0.1, B), rng.uniform(-0.1, 0.1, B), rng.uniform(0.6, 1.5, B)], 1)
    K = camera(B)
    x = project_points(X, R, t, K) + rng.normal(0, noise_px, (B, N, 2))
    out = np.zeros((B, N), bool)
    if family == "outliers":
        out = rng.random((B, N)) < 0.2
        x = np.where(out[..., None], rng.uniform(0, IMAGE_SIZE - 1, (B, N, 2)), x)
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    return Problems(family, f(X), f(x), f(K), f(R), f(t), torch.from_numpy(out))
