"""Convergence of solve_pnp from the global start and from far inits: the fraction of each
status and the iterations used, per problem family, float64.

Families: those of benchmarks/problems.py (1 px noise), and random correspondences (object
points and normalised pixels drawn independently, K = I: a network's first outputs). Starts:
the global start (no init), and an init far from the solution (a uniformly random rotation,
the translation at twice the distance and 30 % off-axis).

    python benchmarks/bench_convergence.py [--quick]   # --quick: fewer problems, prints only

The full run rewrites the ``bench_convergence`` section of docs/benchmarks.md and
benchmarks/results/bench_convergence.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import pyfacepnp
from pyfacepnp.geometry.rotation import quaternion_to_matrix
from problems import FAMILIES, make_problems
from report import load_average, markdown_table, publish, run_header

ROOT = Path(__file__).resolve().parents[1]
STATUSES = ("CONVERGED", "MAX_ITERATIONS", "DEGENERATE", "INVALID_INPUT")


def random_correspondences(B, N, seed):
    g = torch.Generator().manual_seed(seed)
    X = 0.1 * torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    x = 0.1 * torch.randn(B, N, 2, generator=g, dtype=torch.float64)
    return X, x, torch.eye(3, dtype=torch.float64).expand(B, 3, 3), None


def far_init(t_true, rng):
    B = len(t_true)
    R = torch.tensor(quaternion_to_matrix(rng.normal(size=(B, 4))))
    t = 2 * t_true + 0.3 * t_true.norm(dim=1, keepdim=True) * torch.tensor(rng.normal(size=(B, 3)))
    return R, t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_convergence.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_start, t_start = load_average(), time.perf_counter()
    B = 64 if args.quick else 512
    rows, records = [], []
    for family in (*FAMILIES, "random correspondences"):
        if family == "outliers":
            continue
        N = 6 if family == "minimal" else 68
        if family == "random correspondences":
            X, x, K, t_true = *random_correspondences(B, N, seed=3)[:3], None
        else:
            p = make_problems(family, B, N, seed=11)
            X, x, K, t_true = p.points3d, p.points2d, p.K, p.t
        starts = [("global", None)]
        if t_true is not None:
            starts.append(("far init", far_init(t_true, np.random.default_rng(5))))
        for start, init in starts:
            res = pyfacepnp.solve_pnp(X, x, K, init=init)
            frac = torch.bincount(res.status.long(), minlength=4).double() / B
            rec = dict(family=family, N=N, start=start, problems=B,
                       **{s.lower(): float(f) for s, f in zip(STATUSES, frac)},
                       mean_iterations=float(res.iterations.double().mean()),
                       max_iterations_used=int(res.iterations.max()))
            records.append(rec)
            rows.append([family, str(N), start] + [f"{100 * float(f):.1f} %" for f in frac[:3]]
                        + [f"{rec['mean_iterations']:.1f}", str(rec["max_iterations_used"]), str(B)])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["family", "N", "start", "CONVERGED", "MAX_ITERATIONS", "DEGENERATE",
                            "mean iterations", "most iterations", "problems"], rows)
    body = (f"{run_header(load_start, t_start)} float64, l2, `max_iterations=100` (the "
            f"default).\n\n{table}\n")
    print(body)
    if not args.quick:
        publish("bench_convergence", body, records, args.json, args.doc)


if __name__ == "__main__":
    main()
