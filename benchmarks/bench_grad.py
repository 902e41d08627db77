"""Gradient benchmark: the op's implicit backward vs autograd through the reference's
unrolled Levenberg-Marquardt iterations (a PnP layer written in plain torch ops).

    .venv/bin/python benchmarks/bench_grad.py           # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/bench_grad.py --quick   # prints only

Same face-like problems, float64, upstream gradients on R, t and cost. Reported: time
of forward + backward and of the backward alone (median over repeats after a warm-up;
backward = forward+backward minus forward), the peak resident memory the call adds
(Linux VmHWM after resetting it through /proc/self/clear_refs), and the relative
difference of the two gradients for each input, ``|g_ours - g_ref| / |g_ref|`` per
problem over the problems both solvers report as converged.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402

import pyfacepnp  # noqa: E402
from problems import make_problems  # noqa: E402
from pyfacepnp.reference import solve_pnp_reference  # noqa: E402
from report import fmt_us, load_average, machine_description, markdown_table, percentile, replace_section  # noqa: E402
from solvers import measure, set_threads  # noqa: E402

INPUTS = ("points3d", "points2d", "K", "weights")


def _status_kib():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def peak_added_mib(fn) -> float:
    """Peak resident memory added while ``fn()`` runs (MiB), or NaN where not measurable."""
    try:
        # Hand freed heap memory back to the system first: otherwise the call reuses pages
        # an earlier call left resident and its peak does not show.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        rss0, _ = _status_kib()
        fn()
        _, hwm = _status_kib()
        return (hwm - rss0) / 1024
    except (OSError, AttributeError):
        return float("nan")


def make_call(solve, p, backward: bool):
    X, x, K = p.points3d, p.points2d, p.K
    w = torch.rand(p.batch, X.shape[1], generator=torch.Generator().manual_seed(2), dtype=X.dtype) + 0.5
    g = torch.Generator().manual_seed(3)
    gR, gt, gc = (torch.randn(*s, generator=g, dtype=X.dtype) for s in ((p.batch, 3, 3), (p.batch, 3), (p.batch,)))

    def call():
        if not backward:
            with torch.no_grad():
                res = solve(X, x, K, w)
            return res, None
        leaves = [a.detach().clone().requires_grad_() for a in (X, x, K, w)]
        res = solve(*leaves)
        loss = (res.R * gR).sum() + (res.t * gt).sum() + (res.cost * gc).sum()
        grads = torch.autograd.grad(loss, leaves)
        return res, grads

    return call


def ours(X, x, K, w):
    return pyfacepnp.solve_pnp(X, x, K, w)


def reference(X, x, K, w):
    return solve_pnp_reference(X, x, K, w)


def rel_diff(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    a, b = a[keep].flatten(1), b[keep].flatten(1)
    return (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-300)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: one core per solver)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    t_start, load_start = time.time(), load_average()
    configs = [(16, 68)] if args.quick else [(64, 68), (64, 1220), (256, 68), (256, 1220)]

    rows, agree_rows = [], []
    for B, N in configs:
        p = make_problems("face", B, N, seed=args.seed)
        out = {}
        solvers = (("ours", ours), ("reference", reference))
        timed = measure({f"{name} {kind}": make_call(solve, p, kind == "fwd+bwd")
                         for name, solve in solvers for kind in ("fwd", "fwd+bwd")}, repeats=5, budget_s=2.0)
        for name, solve in solvers:
            fwd = timed[f"{name} fwd"][0]
            both, reps, (res, grads) = timed[f"{name} fwd+bwd"]
            mem_f = peak_added_mib(make_call(solve, p, False))
            mem_b = peak_added_mib(make_call(solve, p, True))
            out[name] = dict(fwd=fwd, both=both, reps=reps, res=res, grads=grads, mem_f=mem_f, mem_b=mem_b)
            print(f"B={B} N={N} {name:9s} fwd {1e6 * fwd / B:10.1f} us/problem  fwd+bwd {1e6 * both / B:10.1f}  "
                  f"peak +{mem_f:.0f} / +{mem_b:.0f} MiB")
        o, r = out["ours"], out["reference"]
        for name, d in out.items():
            rows.append([
                f"B = {B}, N = {N}", name, fmt_us(1e6 * d["fwd"] / B), fmt_us(1e6 * d["both"] / B),
                fmt_us(1e6 * max(d["both"] - d["fwd"], 0.0) / B), f"{d['both'] / o['both']:.2f}x",
                f"{d['mem_f']:.1f}", f"{d['mem_b']:.1f}", f"{B} x {d['reps']}",
            ])
        keep = (o["res"].status == 0) & (r["res"].status == 0)
        cells = []
        for i, name in enumerate(INPUTS):
            d = rel_diff(o["grads"][i], r["grads"][i], keep)
            cells.append(f"{percentile(d, 50):.1e} / {float(d.max()):.1e}")
        agree_rows.append([f"B = {B}, N = {N}", f"{int(keep.sum())} / {B}", *cells])

    minutes = (time.time() - t_start) / 60
    text = (
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_description()}; load average {load_start} at the start, "
        f"{load_average()} at the end; {minutes:.1f} min.\n\n"
        + markdown_table(
            ["problems", "solver", "fwd us / problem", "fwd+bwd us / problem", "bwd us / problem",
             "fwd+bwd vs ours", "peak MiB fwd", "peak MiB fwd+bwd", "measured on"], rows)
        + "\n\nGradient agreement, relative difference per problem (median / max) over problems both solvers converged on:\n\n"
        + markdown_table(["problems", "converged (both)", *(f"d/d {n}" for n in INPUTS)], agree_rows)
    )
    print("\n" + text)
    if not args.quick:
        replace_section(args.doc, "bench_grad", text)
        print(f"\nwrote {args.doc}")


if __name__ == "__main__":
    main()
