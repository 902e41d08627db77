"""Random PnP problem families shared by the op tests (float64 ground truth)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pyfacepnp.geometry.camera import project_points
from pyfacepnp.geometry.rotation import rotation_from_euler
from pyfacepnp.geometry.transforms import transform_points

FAMILIES = ("random", "planar", "minimal", "face", "wide")


def random_rotation(rng: np.random.Generator, max_angle: float = math.pi) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0, max_angle)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx


def intrinsics(rng: np.random.Generator, skew: bool = False) -> np.ndarray:
    """Random intrinsics; OpenCV's projection ignores skew, so comparisons with it use none."""
    f = rng.uniform(500, 900)
    return np.array([[f, rng.uniform(-1, 1) if skew else 0.0, rng.uniform(300, 340)],
                     [0, f * rng.uniform(0.95, 1.05), rng.uniform(220, 260)],
                     [0, 0, 1.0]])


@dataclass
class Problem:
    X: np.ndarray  # (N,3)
    x: np.ndarray  # (N,2) observed (noisy) pixels
    K: np.ndarray  # (3,3)
    R: np.ndarray  # ground-truth rotation
    t: np.ndarray  # ground-truth translation


def project(X: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    return project_points(X, R, t, K)


# Box families: (range of N when not given, range of the depth). "wide": a wide field of
# view, strong perspective.
_BOX_FAMILIES = {"random": ((7, 60), (4, 10)), "minimal": ((4, 7), (4, 10)), "wide": ((8, 80), (2.5, 4))}


def make_problem(family: str, rng: np.random.Generator, n: int | None = None,
                 noise: float = 1.0, skew: bool = False) -> Problem:
    """One problem of a family; all points in front of the camera, inside a 640x480 view."""
    K = intrinsics(rng, skew)
    if family in _BOX_FAMILIES:  # points in the [-1, 1] box under any rotation
        (n_lo, n_hi), (d_lo, d_hi) = _BOX_FAMILIES[family]
        n = n or int(rng.integers(n_lo, n_hi))
        X = rng.uniform(-1, 1, size=(n, 3))
        R = random_rotation(rng)
        depth = rng.uniform(d_lo, d_hi)
    elif family == "planar":
        n = n or int(rng.integers(4, 60))
        X = np.c_[rng.uniform(-1, 1, size=(n, 2)), np.zeros(n)]
        R0 = random_rotation(rng)  # the plane in a random orientation, seen from the front
        X = X @ R0.T
        R = random_rotation(rng, max_angle=1.0) @ R0.T
        depth = rng.uniform(4, 10)
    elif family == "face":
        n = n or 1220
        # A face-sized curved surface (metres): ellipsoid cap ~ 0.15 m across, 0.53 m away.
        th = rng.uniform(-1.1, 1.1, n)
        ph = rng.uniform(-1.0, 1.0, n)
        X = np.c_[0.075 * np.sin(th) * np.cos(ph), 0.1 * np.sin(ph), 0.06 * np.cos(th) * np.cos(ph)]
        yaw, pitch, roll = rng.normal(0, 0.3), rng.normal(0, 0.3), rng.normal(0, 0.08)
        R = (random_rotation_xyz(pitch, yaw, roll) @ np.diag([1.0, -1.0, -1.0]))
        depth = rng.normal(0.53, 0.065)
        K = np.array([[629.8, 0, 400], [0, 629.8, 400], [0, 0, 1.0]])
    else:
        raise ValueError(family)
    c = X.mean(0)
    off = rng.uniform(-0.1, 0.1, 2) * depth
    t = np.array([off[0], off[1], depth]) - R @ c
    x = project(X, R, t, K) + noise * rng.normal(size=(n, 2))
    return Problem(X, x, K, R, t)


def random_rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rz(rz) Ry(ry) Rx(rx)."""
    return rotation_from_euler("zyx", rz, ry, rx)


def batch(problems, dtype=torch.float64):
    """Stack same-N problems into tensors (X, x, K)."""
    X = torch.tensor(np.stack([p.X for p in problems]), dtype=dtype)
    x = torch.tensor(np.stack([p.x for p in problems]), dtype=dtype)
    K = torch.tensor(np.stack([p.K for p in problems]), dtype=dtype)
    return X, x, K


def cost_np(X, x, K, R, t, w=None) -> float:
    """The op's objective (l2): 1/2 sum_i sum_a w_ia r_ia^2."""
    r = project(X, R, t, K) - x
    w = np.ones_like(r) if w is None else (w if w.ndim == 2 else np.repeat(w[:, None], 2, 1))
    return 0.5 * float((w * r * r).sum())


def opencv_best(p: Problem) -> float:
    """OpenCV's best reprojection optimum: SQPnP (and ITERATIVE) refined by solvePnPRefineLM."""
    import cv2

    X = np.ascontiguousarray(p.X, dtype=np.float64)
    x = np.ascontiguousarray(p.x, dtype=np.float64)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 200, 1e-15)
    best = math.inf
    for flag in (cv2.SOLVEPNP_SQPNP, cv2.SOLVEPNP_ITERATIVE):
        try:
            ok, rv, tv = cv2.solvePnP(X, x, p.K, None, flags=flag)
        except cv2.error:
            continue
        if not ok:
            continue
        rv, tv = cv2.solvePnPRefineLM(X, x, p.K, None, rv, tv, criteria=crit)
        R, _ = cv2.Rodrigues(rv)
        if np.any(transform_points(X, R, tv.ravel())[:, 2] <= 0):
            continue
        best = min(best, cost_np(X, x, p.K, R, tv.ravel()))
    return best


def torch_cost(R, t, X, x, K, w, loss: str = "l2", delta: float = 1.0):
    """The op's objective in plain torch (differentiable, batched): the test's own copy."""
    Xc = X @ R.transpose(-1, -2) + t.unsqueeze(-2)
    u = (Xc @ K.transpose(-1, -2))[..., :2] / Xc[..., 2:]
    s = (w * (u - x) ** 2).sum(-1)
    if loss == "huber":
        rho = torch.where(s <= delta**2, s, 2 * delta * torch.sqrt(s.clamp_min(1e-300)) - delta**2)
    else:
        rho = s
    return 0.5 * rho.sum(-1)


def so3_exp_second_order(w):
    """I + [w]x + [w]x^2 / 2: exp([w]x) up to second order, exact for derivatives at w = 0."""
    z = torch.zeros_like(w[..., 0])
    W = torch.stack([z, -w[..., 2], w[..., 1], w[..., 2], z, -w[..., 0], -w[..., 1], w[..., 0], z], -1)
    W = W.reshape(*w.shape[:-1], 3, 3)
    return torch.eye(3, dtype=w.dtype) + W + 0.5 * (W @ W)


def solve_batch(problems, dtype=torch.float64, **kw):
    import pyfacepnp

    X, x, K = batch(problems, dtype)
    return pyfacepnp.solve_pnp(X, x, K, **kw)
