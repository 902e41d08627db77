"""The solvers the benchmarks compare, behind one interface, and the timing rule.

A solver is prepared once per problem batch (inputs converted and laid out outside the
timed region) and returns a ``run`` callable; ``run()`` solves every problem it was given
and returns ``(R (B, 3, 3), t (B, 3), ok (B,))`` as float64 tensors and a bool mask of the
problems the solver reported as solved. Per-sample peers (OpenCV) loop in Python over
the problems, as a user of them would.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import pyfacepnp
from pyfacepnp.reference import solve_pnp_reference

try:
    import cv2
except ImportError:  # pragma: no cover - cv2 is in the dev environment
    cv2 = None
try:
    from kornia.geometry import solve_pnp_dlt
except ImportError:
    solve_pnp_dlt = None

Run = Callable[[], tuple]


@dataclass(frozen=True)
class Solver:
    """A named way of solving a batch: ``prepare(problems) -> run``."""

    name: str
    prepare: Callable
    per_sample: bool = False  # a Python loop over problems: measured on a capped batch
    note: str = ""


def measure(runs: dict[str, Run], *, repeats: int, budget_s: float) -> dict[str, tuple[float, int, tuple]]:
    """Median wall time of each ``run()`` after one warm-up call, the runs interleaved.

    Round ``r`` times every run once, so a change in the machine's load during the
    measurement falls on all of them alike. A run stops repeating once its timings add up
    to ``budget_s`` seconds (it always gets one). Returns, per name, ``(median seconds,
    timings taken, output of the last call)``.
    """
    outs = {name: run() for name, run in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if times[name] and sum(times[name]) >= budget_s:
                continue
            t0 = time.perf_counter()
            outs[name] = run()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), len(times[name]), outs[name]) for name in runs}


def set_threads(n: int) -> None:
    """Threads for torch's intra-op pool (and so our op's OpenMP loop) and for OpenCV."""
    torch.set_num_threads(n)
    if cv2 is not None:
        cv2.setNumThreads(n)


# --- ours and the plain-torch reference ---------------------------------------------


def _ours(dtype: torch.dtype, backward: bool, **kwargs) -> Callable:
    def prepare(p) -> Run:
        X, x, K = (a.to(dtype) for a in (p.points3d, p.points2d, p.K))
        gR = torch.randn(p.batch, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
        gt = torch.randn(p.batch, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))

        def run():
            if not backward:
                with torch.no_grad():
                    res = pyfacepnp.solve_pnp(X, x, K, **kwargs)
            else:
                Xg, xg = X.detach().requires_grad_(), x.detach().requires_grad_()
                res = pyfacepnp.solve_pnp(Xg, xg, K, **kwargs)
                ((res.R * gR).sum() + (res.t * gt).sum()).backward()
            return res.R.detach().double(), res.t.detach().double(), res.status == 0

        return run

    return prepare


def _reference(dtype: torch.dtype, **kwargs) -> Callable:
    def prepare(p) -> Run:
        X, x, K = (a.to(dtype) for a in (p.points3d, p.points2d, p.K))

        def run():
            with torch.no_grad():
                res = solve_pnp_reference(X, x, K, **kwargs)
            return res.R.double(), res.t.double(), res.status == 0

        return run

    return prepare


# --- kornia ------------------------------------------------------------------------


def _kornia_dlt(p) -> Run:
    X, x, K = p.points3d, p.points2d, p.K

    def run():
        with torch.no_grad():
            Rt = solve_pnp_dlt(X, x, K)
        return Rt[:, :, :3].double(), Rt[:, :, 3].double(), torch.isfinite(Rt).flatten(1).all(1)

    return run


# --- OpenCV ------------------------------------------------------------------------


def _as_numpy(p):
    return (
        [np.ascontiguousarray(a) for a in p.points3d.numpy()],
        [np.ascontiguousarray(a) for a in p.points2d.numpy()],
        [np.ascontiguousarray(a) for a in p.K.numpy()],
    )


def _cv_outputs(rvecs, tvecs, oks):
    B = len(oks)
    R = np.tile(np.eye(3), (B, 1, 1))
    t = np.zeros((B, 3))
    for i, (rv, tv, ok) in enumerate(zip(rvecs, tvecs, oks)):
        if ok:
            R[i] = cv2.Rodrigues(rv)[0]
            t[i] = tv.ravel()
    return torch.from_numpy(R), torch.from_numpy(t), torch.tensor(oks, dtype=torch.bool)


def _cv_per_problem(p, solve) -> Run:
    """A run of ``solve(X, x, K) -> (ok, rvec, tvec)`` over the problems, one OpenCV call
    each (an OpenCV error is a failed problem)."""
    Xs, xs, Ks = _as_numpy(p)

    def run():
        rvecs, tvecs, oks = [], [], []
        for X, x, K in zip(Xs, xs, Ks):
            try:
                ok, rv, tv = solve(X, x, K)
            except cv2.error:
                ok, rv, tv = False, None, None
            rvecs.append(rv)
            tvecs.append(tv)
            oks.append(bool(ok))
        return _cv_outputs(rvecs, tvecs, oks)

    return run


def _cv_loop(flag: int, refine: bool = False) -> Callable:
    def solve(X, x, K):
        ok, rv, tv = cv2.solvePnP(X, x, K, None, flags=flag)
        if ok and refine:
            rv, tv = cv2.solvePnPRefineLM(X, x, K, None, rv, tv)
        return ok, rv, tv

    return lambda p: _cv_per_problem(p, solve)


def _cv_ransac(p) -> Run:
    return _cv_per_problem(p, lambda X, x, K: cv2.solvePnPRansac(X, x, K, None)[:3])


# --- the rosters ---------------------------------------------------------------------

OURS = "ours f64"


def ours_solvers(backward: bool = True) -> list[Solver]:
    rows = [Solver(OURS, _ours(torch.float64, False)), Solver("ours f32", _ours(torch.float32, False))]
    if backward:
        rows += [
            Solver("ours f64 fwd+bwd", _ours(torch.float64, True)),
            Solver("ours f32 fwd+bwd", _ours(torch.float32, True)),
        ]
    return rows


def peer_solvers() -> list[Solver]:
    rows = [Solver("reference (torch) f64", _reference(torch.float64))]
    if solve_pnp_dlt is not None:
        rows.append(Solver("kornia solve_pnp_dlt f64", _kornia_dlt))
    if cv2 is not None:
        rows += [
            Solver("cv2 ITERATIVE", _cv_loop(cv2.SOLVEPNP_ITERATIVE), per_sample=True),
            Solver("cv2 SQPNP", _cv_loop(cv2.SOLVEPNP_SQPNP), per_sample=True),
            Solver("cv2 EPNP", _cv_loop(cv2.SOLVEPNP_EPNP), per_sample=True),
            Solver("cv2 SQPNP+RefineLM", _cv_loop(cv2.SOLVEPNP_SQPNP, refine=True), per_sample=True),
        ]
    return rows


def robust_solvers(huber_delta: float) -> list[Solver]:
    rows = [
        Solver("ours f64 huber", _ours(torch.float64, False, loss="huber", loss_scale=huber_delta)),
        Solver("ours f32 huber", _ours(torch.float32, False, loss="huber", loss_scale=huber_delta)),
        Solver("reference (torch) f64 huber", _reference(torch.float64, loss="huber", huber_delta=huber_delta)),
    ]
    if cv2 is not None:
        rows.append(Solver("cv2 solvePnPRansac", _cv_ransac, per_sample=True))
    return rows
