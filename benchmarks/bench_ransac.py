"""Robust PnP with gross outliers: solve_pnp_ransac against cv2.solvePnPRansac (+ LM refine)
and PoseLib's LO-RANSAC, one thread each, same run, same problems, same threshold.

Problems: the ``face`` family of benchmarks/problems.py (1 px noise) with a fraction of the
pixels replaced by uniform points in the 800x800 image. Success: the RMSE over the true
inliers within 0.01 px of the inlier optimum (solve_pnp on the true inliers alone). Inlier
precision and recall are over all problems of a row.

    python benchmarks/bench_ransac.py [--quick]   # --quick: fewer problems, prints only

The full run rewrites the ``bench_ransac`` section of docs/benchmarks.md and
benchmarks/results/bench_ransac.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import pyfacepnp
from problems import IMAGE_SIZE, make_problems
from report import load_average, markdown_table, replace_section, run_header

ROOT = Path(__file__).resolve().parents[1]

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None
try:
    import poselib
except ImportError:  # pragma: no cover
    poselib = None

THRESHOLD = 4.0  # px: 4 sigma of the pixel noise
CONFIDENCE = 0.9999


def outlier_problems(B, N, ratio, seed):
    p = make_problems("face", B, N, seed=seed)
    rng = np.random.default_rng(seed + 7)
    x = p.points2d.clone()
    out = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        idx = rng.choice(N, int(round(ratio * N)), replace=False)
        x[b, idx] = torch.tensor(rng.uniform(0, IMAGE_SIZE, (len(idx), 2)))
        out[b, idx] = True
    return p.points3d, x, p.K, out


def rmse(R, t, X, x, K, mask):
    Xc = X @ R.transpose(-1, -2) + t[:, None]
    u = (Xc @ K.transpose(-1, -2))[..., :2] / Xc[..., 2:]
    e = ((u - x) ** 2).sum(-1)
    return torch.sqrt((e * mask).sum(-1) / mask.sum(-1))


def ours(dtype):
    def run(X, x, K):
        r = pyfacepnp.solve_pnp_ransac(X.to(dtype), x.to(dtype), K.to(dtype), threshold=THRESHOLD,
                                       confidence=CONFIDENCE)
        return r.R.double(), r.t.double(), r.inliers
    return run


def cv2_ransac(X, x, K):
    Rs, ts, inl = [], [], torch.zeros(X.shape[:2], dtype=torch.bool)
    for b, (Xb, xb, Kb) in enumerate(zip(X.numpy(), x.numpy(), K.numpy())):
        ok, rv, tv, idx = cv2.solvePnPRansac(Xb, xb, Kb, None, iterationsCount=10000,
                                             reprojectionError=THRESHOLD, confidence=CONFIDENCE)
        if ok and idx is not None and len(idx) >= 4:
            sel = idx[:, 0]
            rv, tv = cv2.solvePnPRefineLM(Xb[sel], xb[sel], Kb, None, rv, tv)
            inl[b, sel] = True
            R = cv2.Rodrigues(rv)[0]
        else:
            R, tv = np.eye(3), np.zeros((3, 1))
        Rs.append(R)
        ts.append(tv[:, 0])
    return torch.tensor(np.stack(Rs)), torch.tensor(np.stack(ts)), inl


def poselib_ransac(min_iterations):
    def run(X, x, K):
        Rs, ts, inl = [], [], torch.zeros(X.shape[:2], dtype=torch.bool)
        for b, (Xb, xb, Kb) in enumerate(zip(X.numpy(), x.numpy(), K.numpy())):
            cam = {"model": "PINHOLE", "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                   "params": [Kb[0, 0], Kb[1, 1], Kb[0, 2], Kb[1, 2]]}
            pose, info = poselib.estimate_absolute_pose(
                xb, Xb, cam, {"max_reproj_error": THRESHOLD, "success_prob": CONFIDENCE,
                              "min_iterations": min_iterations}, {})
            Rs.append(pose.R)
            ts.append(pose.t)
            inl[b] = torch.tensor(np.asarray(info["inliers"], dtype=bool))
        return torch.tensor(np.stack(Rs)), torch.tensor(np.stack(ts)), inl
    return run


def solvers():
    rows = [("ours solve_pnp_ransac f64", ours(torch.float64)),
            ("ours solve_pnp_ransac f32", ours(torch.float32))]
    if cv2 is not None:
        rows.append(("cv2 solvePnPRansac + RefineLM", cv2_ransac))
    if poselib is not None:
        rows.append(("PoseLib estimate_absolute_pose (default, min 1000 trials)", poselib_ransac(1000)))
        rows.append(("PoseLib estimate_absolute_pose (min_iterations=0)", poselib_ransac(0)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer problems; print only")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_ransac.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if cv2 is not None:
        cv2.setNumThreads(1)
    load_start, t_start = load_average(), time.perf_counter()
    records, rows = [], []
    for N in (68, 1220):
        for ratio in (0.0, 0.2, 0.5, 0.7):
            B = (100 if N == 68 else 40) // (4 if args.quick else 1)
            X, x, K, out = outlier_problems(B, N, ratio, seed=N + int(ratio * 100))
            inl_true = (~out).double()
            ref = pyfacepnp.solve_pnp(X, x, K, inl_true)
            e_ref = rmse(ref.R, ref.t, X, x, K, inl_true)
            for name, fn in solvers():
                best = float("inf")
                for _ in range(2):
                    t0 = time.perf_counter()
                    R, t, inl = fn(X, x, K)
                    best = min(best, time.perf_counter() - t0)
                e = rmse(R, t, X, x, K, inl_true)
                success = float(((e - e_ref).abs() < 0.01).double().mean())
                tp = float((inl & ~out).sum())
                rec = dict(N=N, outliers=ratio, solver=name, success=success,
                           precision=tp / max(float(inl.sum()), 1.0), recall=tp / float((~out).sum()),
                           us_per_problem=best / B * 1e6, problems=B)
                records.append(rec)
                rows.append([str(N), f"{int(ratio * 100)} %", name, f"{100 * success:.1f} %",
                             f"{rec['precision']:.4f}", f"{rec['recall']:.4f}",
                             f"{rec['us_per_problem']:,.0f}", str(B)])
                print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["N", "outliers", "solver", "success", "inlier precision", "inlier recall",
                            "us / problem", "problems"], rows)
    body = (f"{run_header(load_start, t_start)} Threshold {THRESHOLD} px, confidence {CONFIDENCE}, one thread "
            f"per solver; time per problem is the faster of two calls on the whole batch.\n\n"
            + table)
    print(body)
    if args.quick:
        return
    replace_section(args.doc, "bench_ransac", body)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(torch=torch.__version__, cv2=getattr(cv2, "__version__", None),
                poselib=getattr(poselib, "__version__", None), threshold=THRESHOLD,
                confidence=CONFIDENCE, threads=1, load_start=load_start, load_end=load_average())
    args.json.write_text(json.dumps(dict(meta=meta, rows=records), indent=1))


if __name__ == "__main__":
    main()
