"""CPU benchmark of pyfacepnp.solve_pnp against its peers on the same generated problems.

    .venv/bin/python benchmarks/bench_pnp.py            # a few minutes on 2 cores; writes docs/
    .venv/bin/python benchmarks/bench_pnp.py --quick    # a small smoke run, prints only

For every table: microseconds per problem (median over repeats after one warm-up call,
divided by the problems in the call), the ratio to our float64 forward, the excess of the
reprojection cost over the best optimum any solver found for that problem (relative;
median and 95th percentile over problems; ``inf`` counts failures), and the success rate
(rotation within 5 degrees and translation within 5 % of the ground truth). Per-sample
loops (OpenCV) run on the first ``--cap`` problems of a batch; their time per problem is
what was measured on those, nothing is extrapolated. The call-overhead table is in
microseconds per call instead: solve_pnp against the op it wraps, on single small problems.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the checkout, not an installed copy

import torch  # noqa: E402

import pyfacepnp  # noqa: E402
from problems import IMAGE_SIZE, make_problems  # noqa: E402
from report import (  # noqa: E402
    excess,
    fmt_excess,
    fmt_ratio,
    fmt_us,
    load_average,
    machine_description,
    markdown_table,
    percentile,
    replace_section,
    score,
)
from solvers import (  # noqa: E402
    OURS,
    Solver,
    _cv_per_problem,
    cv2,
    measure,
    ours_solvers,
    peer_solvers,
    robust_solvers,
    set_threads,
)

try:
    import poselib
except ImportError:
    poselib = None

HEADER = ["solver", "us / problem", "ratio to ours", "excess cost median", "excess cost p95", "success", "measured on"]
HUBER_DELTA = 2.0


def _poselib_refine(X, x, K):
    """cv2's SQPnP start refined by PoseLib's least-squares bundle adjustment (its default
    loss is Cauchy: TRIVIAL minimises the objective every other row is scored with)."""
    ok, rv, tv = cv2.solvePnP(X, x, K, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return ok, rv, tv
    pose = poselib.CameraPose()
    pose.R, pose.t = cv2.Rodrigues(rv)[0], tv.ravel()
    cam = {"model": "PINHOLE", "width": IMAGE_SIZE, "height": IMAGE_SIZE,
           "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}
    pose, _ = poselib.refine_absolute_pose(x, X, pose, cam, {"loss_type": "TRIVIAL"})
    return True, cv2.Rodrigues(pose.R)[0], pose.t.reshape(3, 1)


def poselib_solvers() -> list[Solver]:
    if poselib is None or cv2 is None:
        return []
    return [Solver("cv2 SQPNP+PoseLib refine", lambda p: _cv_per_problem(p, _poselib_refine), per_sample=True)]


def run_table(p, solvers, *, baseline, cap, repeats, budget_s, loss="l2", log=print):
    """Time (interleaved) and score every solver on the problems ``p``; returns (rows, records)."""
    results, runs, subsets = {}, {}, {}
    for s in solvers:
        subsets[s.name] = p.subset(cap) if s.per_sample and p.batch > cap else p
        try:
            run = s.prepare(subsets[s.name])
            run()  # a peer that cannot solve this family (e.g. DLT on planar) fails here
            runs[s.name] = run
        except Exception as exc:
            results[s.name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:70]}"}
            log(f"    {s.name:28s} failed: {results[s.name]['error']}")
    timed = measure(runs, repeats=repeats, budget_s=budget_s)
    for s in solvers:
        if s.name not in timed:
            continue
        sec, reps, (R, t, ok) = timed[s.name]
        sub = subsets[s.name]
        cost, success = score(sub, R, t, ok, loss, HUBER_DELTA)
        results[s.name] = {"us": 1e6 * sec / sub.batch, "B": sub.batch, "reps": reps, "cost": cost, "success": success}
        log(f"    {s.name:28s} {1e6 * sec / sub.batch:12.1f} us/problem  ({sub.batch} problems, {reps} repeats)")
    results = {s.name: results[s.name] for s in solvers}
    costs = torch.full((len(results), p.batch), math.inf, dtype=torch.float64)
    for i, r in enumerate(results.values()):
        if "cost" in r:
            costs[i, : r["B"]] = r["cost"]
    best = costs.min(0).values
    base_us = results.get(baseline, {}).get("us", math.nan)
    rows, records = [], []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, "-", "-", "-", "-", "-", r["error"]])
            records.append({"solver": name, "error": r["error"]})
            continue
        ex = excess(r["cost"], best[: r["B"]])
        rec = {
            "solver": name, "us": r["us"], "ratio": r["us"] / base_us, "excess_median": percentile(ex, 50),
            "excess_p95": percentile(ex, 95), "success": float(r["success"].double().mean()), "B": r["B"], "repeats": r["reps"],
        }
        records.append(rec)
        rows.append([
            name, fmt_us(rec["us"]), fmt_ratio(rec["ratio"]), fmt_excess(rec["excess_median"]), fmt_excess(rec["excess_p95"]),
            f"{100 * rec['success']:.0f} %", f"{r['B']} x {r['reps']}",
        ])
    return rows, records


def headline(seed, log=print):
    """B = 256 face-like problems, N = 1220, float64: ours vs loops of cv2, and precision."""
    p = make_problems("face", 256, 1220, seed=seed)
    Xd, xd, Kd = p.points3d, p.points2d, p.K
    by_name = {s.name: s for s in ours_solvers() + peer_solvers()}
    names = [n for n in (OURS, "ours f64 fwd+bwd", "cv2 ITERATIVE", "cv2 SQPNP") if n in by_name]
    times = measure({n: by_name[n].prepare(p) for n in names}, repeats=9, budget_s=3.0)
    for name in names:
        log(f"    {name:28s} {1e6 * times[name][0] / p.batch:12.1f} us/problem")
    rows = []
    base = times[OURS][0]
    for name, (sec, reps, (R, t, ok)) in times.items():
        cost, _ = score(p, R, t, ok)
        rows.append((name, sec, reps, cost))
    best = torch.stack([r[3] for r in rows]).min(0).values
    table = [
        [name, fmt_us(1e6 * sec / p.batch), fmt_ratio(sec / base), fmt_excess(percentile(excess(c, best), 50)),
         fmt_excess(percentile(excess(c, best), 95)), f"{p.batch} x {reps}"]
        for name, sec, reps, c in rows
    ]
    r64 = pyfacepnp.solve_pnp(Xd, xd, Kd)
    r32 = pyfacepnp.solve_pnp(Xd.float(), xd.float(), Kd.float())
    from pyfacepnp.reference import rotation_angle

    dR = rotation_angle(r32.R.double(), r64.R)
    dt = (r32.t.double() - r64.t).norm(dim=1) / r64.t.norm(dim=1)
    fb = times["ours f64 fwd+bwd"][0] / base
    text = markdown_table(["solver", "us / problem", "ratio to ours", "excess cost median", "excess cost p95", "measured on"], table)
    text += (
        f"\n\nForward + backward / forward (float64): **{fb:.2f}x**. "
        f"float32 vs float64 solutions on the same problems: rotation differs by "
        f"{percentile(dR, 50):.1e} rad median, {float(dR.max()):.1e} rad max; translation by "
        f"{percentile(dt, 50):.1e} median, {float(dt.max()):.1e} max (relative to |t|)."
    )
    return text


OVERHEAD_CALLS = 100  # calls per timing: one small call is too short to time alone


def overhead(seed, log=print):
    """Microseconds per call of small calls, float64: :func:`pyfacepnp.solve_pnp` and the
    op it wraps (``torch.ops.pyfacepnp.solve_pnp`` on inputs already flat), forward, and
    forward + backward (``torch.autograd.grad`` of R and t to points3d and points2d)."""
    ops = torch.ops.pyfacepnp
    p = make_problems("face", 1, 68, seed=seed)
    cases = [("B = 0 (empty; K (3, 3) shared)", p.points3d[:0], p.points2d[:0], p.K[0])]
    for N in (4, 68, 1220):
        p = make_problems("face", 1, N, seed=seed)
        cases.append((f"B = 1, N = {N}", p.points3d, p.points2d, p.K))
        cases.append((f"one problem unbatched, N = {N}", p.points3d[0], p.points2d[0], p.K[0]))

    def timed(call):
        def run():
            for _ in range(OVERHEAD_CALLS):
                call()
        return run

    rows = []
    for name, X, x, K in cases:
        flat = [a.reshape(-1, *a.shape[-2:]).contiguous() for a in (X, x, K.expand(*X.shape[:-2], 3, 3))]
        gR, gt = torch.randn(*X.shape[:-2], 3, 3, dtype=X.dtype), torch.randn(*X.shape[:-2], 3, dtype=X.dtype)
        Xg, xg = X.clone().requires_grad_(), x.clone().requires_grad_()
        Xf, xf = (a.clone().requires_grad_() for a in flat[:2])
        bare = lambda X, x: ops.solve_pnp(X, x, flat[2], None, None, None, "l2", 1.0, 100, 1e-10)  # noqa: E731
        runs = {
            "solve_pnp forward": timed(lambda: pyfacepnp.solve_pnp(X, x, K)),
            "solve_pnp forward + backward": timed(lambda: torch.autograd.grad(
                pyfacepnp.solve_pnp(Xg, xg, K)[:2], (Xg, xg), (gR, gt))),
            "op forward": timed(lambda: bare(*flat[:2])),
            "op forward + backward": timed(lambda: torch.autograd.grad(
                bare(Xf, xf)[:2], (Xf, xf), (gR.reshape(-1, 3, 3), gt.reshape(-1, 3)))),
        }
        times = measure(runs, repeats=15, budget_s=2.0)
        us = {k: 1e6 * v[0] / OVERHEAD_CALLS for k, v in times.items()}
        log(f"    {name:36s} " + "  ".join(f"{k} {v:.1f}" for k, v in us.items()) + " us")
        rows.append([name] + [fmt_us(v) for v in us.values()])
    header = ["call", "solve_pnp forward", "solve_pnp fwd + bwd", "bare op forward", "bare op fwd + bwd"]
    return (markdown_table(header, rows) + f"\n\nMicroseconds per call, median of up to 15 timings of "
            f"{OVERHEAD_CALLS} calls each, the four columns timed in turns.")


def plot(grid_records, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Bs = sorted({r["B_grid"] for r in grid_records})
    fig, axes = plt.subplots(1, len(Bs), figsize=(5 * len(Bs), 4.2), sharey=True)
    for ax, B in zip(axes, Bs):
        names = [r["solver"] for r in grid_records if r["B_grid"] == B and "us" in r]
        for name in dict.fromkeys(names):
            pts = sorted((r["N"], r["us"]) for r in grid_records if r["B_grid"] == B and r["solver"] == name and "us" in r)
            style = "-o" if name.startswith("ours") else "--s" if "reference" in name or "kornia" in name else ":^"
            ax.plot([n for n, _ in pts], [u for _, u in pts], style, label=name, ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (points per problem)")
        ax.set_title(f"B = {B} face-like problems")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("microseconds per problem")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small grid, print only (no files written)")
    ap.add_argument("--cap", type=int, default=256, help="problems per call for per-sample loops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch (hence our op's OpenMP loop) and OpenCV threads; 1 gives every solver one core")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "bench_time_vs_n.png")
    args = ap.parse_args(argv)

    set_threads(args.threads)
    t_start, load_start = time.time(), load_average()
    grid_B, grid_N = ((1, 16), (6, 68)) if args.quick else ((1, 64, 1024), (6, 68, 1220))
    cap = min(args.cap, 8) if args.quick else args.cap
    fam_B = 16 if args.quick else 256
    solvers = ours_solvers() + peer_solvers() + poselib_solvers()
    print("call overhead")
    sections = [("bench_pnp_overhead", overhead(args.seed))]

    grid_records = []
    grid_text = []
    for B in grid_B:
        for N in grid_N:
            print(f"face-like B={B} N={N}")
            p = make_problems("face", B, N, seed=args.seed)
            rows, recs = run_table(p, solvers, baseline=OURS, cap=cap, repeats=9, budget_s=3.0)
            grid_records += [dict(r, B_grid=B, N=N) for r in recs]
            grid_text.append(f"#### B = {B}, N = {N}\n\n" + markdown_table(HEADER, rows))
    sections.append(("bench_pnp_grid", "\n\n".join(grid_text)))

    fam_text = []
    for family, N in (("planar", 68), ("minimal", 4), ("minimal", 5), ("minimal", 6), ("wide", 68)):
        print(f"{family} B={fam_B} N={N}")
        p = make_problems(family, fam_B, N, seed=args.seed)
        rows, _ = run_table(p, ours_solvers(backward=False) + peer_solvers() + poselib_solvers(), baseline=OURS,
                            cap=cap, repeats=9, budget_s=3.0)
        fam_text.append(f"#### {family}, B = {fam_B}, N = {N}\n\n" + markdown_table(HEADER, rows))
    print(f"outliers B={fam_B} N=68")
    p = make_problems("outliers", fam_B, 68, seed=args.seed)
    rows, _ = run_table(p, robust_solvers(HUBER_DELTA), baseline="ours f64 huber", cap=cap, repeats=9, budget_s=3.0,
                        loss="huber")
    fam_text.append(
        f"#### 20 % outliers (face-like), B = {fam_B}, N = 68 — robust solvers; cost is the Huber objective "
        f"(delta = {HUBER_DELTA} px); ratio to ours f64 huber\n\n" + markdown_table(HEADER, rows)
    )
    sections.append(("bench_pnp_families", "\n\n".join(fam_text)))

    if not args.quick:
        print("headline B=256 N=1220 float64")
        sections.insert(0, ("bench_pnp_headline", headline(args.seed)))

    minutes = (time.time() - t_start) / 60
    env = (
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_description()}"
        f"{'' if poselib is None else f', poselib {poselib.__version__}'}. "
        f"Load average (1/5/15 min) {load_start} at the start, {load_average()} at the end; "
        f"the whole run took {minutes:.1f} min."
    )
    sections.insert(0, ("bench_pnp_machine", env))
    for name, body in sections:
        print(f"\n## {name}\n\n{body}")
    if not args.quick:
        for name, body in sections:
            replace_section(args.doc, name, body)
        plot(grid_records, args.plot)
        out = ROOT / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_pnp.json").write_text(json.dumps({"machine": env, "grid": grid_records}, indent=1))
        print(f"\nwrote {args.doc}, {args.plot} and {out / 'bench_pnp.json'}")


if __name__ == "__main__":
    main()
