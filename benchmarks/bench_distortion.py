"""Distorted cameras: solve_pnp with a lens against the pinhole op on the same problems and
against OpenCV's best for a distorted camera, one thread each, same run, interleaved rounds.

Problems: the ``face`` family of benchmarks/problems.py, their pixels re-projected through a
lens by ``cv2.projectPoints`` / ``cv2.fisheye.projectPoints`` plus 1 px noise (the pinhole row
solves the same problems' undistorted pixels). OpenCV's best: ``cv2.undistortPoints`` +
SQPnP + ``solvePnPRefineLM`` with the coefficients (timed together); for the fisheye,
``cv2.fisheye.solvePnP`` (SQPnP on undistorted points; OpenCV has no fisheye refiner).
**at or below OpenCV**: the fraction of problems whose cost is at most OpenCV's x (1 + 1e-6).

    python benchmarks/bench_distortion.py [--quick]   # --quick: fewer problems, prints only

The full run rewrites the ``bench_distortion`` section of docs/benchmarks.md and
benchmarks/results/bench_distortion.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import pyfacepnp
from problems import make_problems
from report import load_average, markdown_table, publish, run_header

ROOT = Path(__file__).resolve().parents[1]
LENSES = {  # name: (camera_model, coefficients)
    "OpenCV 5 (k1 k2 p1 p2 k3)": ("pinhole", [-0.28, 0.07, 1e-3, -5e-4, -0.01]),
    "OpenCV 8 (rational)": ("pinhole", [-0.28, 0.07, 1e-3, -5e-4, -0.01, 0.02, 0.003, 0.001]),
    "OpenCV 12 (thin prism)": ("pinhole", [-0.28, 0.07, 1e-3, -5e-4, -0.01, 0.02, 0.003, 0.001,
                                           1e-3, -1e-3, 5e-4, 2e-4]),
    "fisheye (k1..k4)": ("fisheye", [-0.01, 0.02, -0.005, 0.001]),
}


def lens_problems(B, N, model, D, seed):
    p = make_problems("face", B, N, seed=seed, noise_px=0.0)
    rng = np.random.default_rng(seed + 11)
    x = np.empty((B, N, 2))
    for b in range(B):
        rv = cv2.Rodrigues(p.R[b].numpy())[0]
        X, t, K = p.points3d[b].numpy(), p.t[b].numpy(), p.K[b].numpy()
        if model == "fisheye":
            u, _ = cv2.fisheye.projectPoints(X[:, None], rv, t, K, D)
        else:
            u, _ = cv2.projectPoints(X, rv, t, K, D)
        x[b] = u.reshape(-1, 2) + rng.normal(size=(N, 2))
    return p.points3d, torch.tensor(x), p.K, p.points2d + torch.tensor(rng.normal(size=(B, N, 2)))


def cv2_best(X, x, K, model, D):
    """Poses from OpenCV's best pipeline for the lens, one problem at a time."""
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 200, 1e-15)
    out = []
    for Xb, xb, Kb in zip(X, x, K):
        if model == "fisheye":
            _, rv, tv = cv2.fisheye.solvePnP(Xb[:, None], xb[:, None], Kb, D, flags=cv2.SOLVEPNP_SQPNP)
        else:
            xu = cv2.undistortPoints(xb[:, None], Kb, D, P=Kb).reshape(-1, 2)
            _, rv, tv = cv2.solvePnP(Xb, xu, Kb, None, flags=cv2.SOLVEPNP_SQPNP)
            rv, tv = cv2.solvePnPRefineLM(Xb, xb, Kb, D, rv, tv, criteria=crit)
        out.append((rv, tv))
    return out


def cv2_costs(X, x, K, model, D, poses):
    c = []
    for Xb, xb, Kb, (rv, tv) in zip(X, x, K, poses):
        if model == "fisheye":
            u, _ = cv2.fisheye.projectPoints(Xb[:, None], rv, tv, Kb, D)
        else:
            u, _ = cv2.projectPoints(Xb, rv, tv, Kb, D)
        c.append(0.5 * float(((u.reshape(-1, 2) - xb) ** 2).sum()))
    return np.array(c)


def timed(fn, rounds):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer problems; print only")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_distortion.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_start, t_start = load_average(), time.perf_counter()
    records, rows = [], []
    rounds = 2 if args.quick else 5
    for N in (68, 1220):
        B = (256 if N == 68 else 64) // (4 if args.quick else 1)
        for name, (model, coeffs) in LENSES.items():
            D = np.array(coeffs)
            X, x, K, x_pin = lens_problems(B, N, model, D, seed=N)
            Dt = torch.tensor(D)
            t_pin = t_ours = t_cv = float("inf")
            for _ in range(rounds):  # interleaved: pinhole, lens, OpenCV
                t_pin = min(t_pin, timed(lambda: pyfacepnp.solve_pnp(X, x_pin, K), 1)[0])
                t, res = timed(lambda: pyfacepnp.solve_pnp(X, x, K, distortion=Dt, camera_model=model), 1)
                t_ours = min(t_ours, t)
                t, poses = timed(lambda: cv2_best(X.numpy(), x.numpy(), K.numpy(), model, D), 1)
                t_cv = min(t_cv, t)
            ref = cv2_costs(X.numpy(), x.numpy(), K.numpy(), model, D, poses)
            ours = res.cost.numpy()
            conv = float(res.converged.double().mean())
            at_or_below = float(np.mean(ours <= ref * (1 + 1e-6)))
            rec = dict(N=N, lens=name, problems=B, us_pinhole=t_pin / B * 1e6, us_lens=t_ours / B * 1e6,
                       us_opencv=t_cv / B * 1e6, converged=conv, at_or_below_opencv=at_or_below,
                       median_rel_cost_vs_opencv=float(np.median((ours - ref) / ref)))
            records.append(rec)
            rows.append([str(N), name, f"{rec['us_pinhole']:,.0f}", f"{rec['us_lens']:,.0f}",
                         f"{rec['us_lens'] / rec['us_pinhole']:.2f}x", f"{rec['us_opencv']:,.0f}",
                         f"{rec['us_opencv'] / rec['us_lens']:.2f}x", f"{100 * conv:.0f} %",
                         f"{100 * at_or_below:.0f} %", str(B)])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["N", "lens", "ours pinhole us", "ours with lens us", "lens / pinhole",
                            "OpenCV best us", "OpenCV / ours", "converged", "at or below OpenCV",
                            "problems"], rows)
    body = (f"{run_header(load_start, t_start)} One thread per solver, float64, best of "
            f"{rounds} interleaved rounds, microseconds per problem (forward).\n\n{table}\n")
    print(body)
    if not args.quick:
        publish("bench_distortion", body, records, args.json, args.doc)


if __name__ == "__main__":
    main()
