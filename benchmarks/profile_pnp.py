"""Where a solve_pnp call spends its time: a sampling profile (Linux `perf`) of the forward
and the forward + backward on face-like problems, grouped into the solver's stages.

    python benchmarks/profile_pnp.py [--n 68 1220] [--batch 1024] [--seconds 6]

The shipped library is stripped, so this builds an unstripped copy (RelWithDebInfo: the
same -O3 code with symbols) into build/profile first. One thread; the table gives each
stage's share of the samples and its time per problem (share x the measured time per
problem). Stages are told apart by the functions the samples fall in; what the compiler
inlined counts for its caller (the Omega pass and the input check are inlined into the
start's and the call's functions).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "profile"

# (stage, regular expression on the symbol), first match wins; unmatched symbols of the
# library are "other (library)", samples outside it (the wrapper, autograd, torch's tensor
# work: the backward's gradient buffers are filled there) "call overhead (Python, torch)".
STAGES = [
    ("global start: descents on S^3", r"start_minimum|trust_region_step|quartic_descent|sphere_|quartic_eval|descend_start|lanes_|_starts\b"),
    ("global start: Omega, quartic form, candidates", r"object_space_minima|quartic_form|omega|centroid|matvec3|rot_distance"),
    ("point passes (Gauss-Newton, exact)", r"_gn\b|_exact\b|normal_eq|pinhole_normal_eq|add_point_normal_eq"),
    ("backward", r"backward"),
    ("6x6 algebra (solves, covariance)", r"spd_|cholesky|inverse|solve6"),
    ("LM and finish", r"lm_refine|newton_polish|finish_candidate|apply_step|refine_starts|move_in_front"),
    ("input check, copies, outputs", r"solve_pnp_cpu|check|store|contiguous|fill_assign|ForwardCall|BackwardCall"),
]


def build() -> Path:
    pkg = BUILD / "pkg"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--upgrade", "-t", str(pkg), "--config-settings=cmake.build-type=RelWithDebInfo",
                    f"--config-settings=build-dir={BUILD / 'cmake'}", str(ROOT)], check=True)
    so = next((BUILD / "cmake").glob("_C*.so"))  # pybind11 strips the installed copy
    shutil.copy(so, pkg / "pyfacepnp" / so.name)
    return pkg


def driver(n: int, batch: int, seconds: float, backward: bool, data: str) -> None:
    """The profiled loop: repeated calls on one batch while `perf` samples this process (it
    is attached after the imports and the problems are made, so they do not count); prints
    the time per problem of the loop."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pyfacepnp
    from problems import make_problems

    torch.set_num_threads(1)
    p = make_problems("face", batch, n)
    X, x, K = p.points3d, p.points2d, p.K

    def call():
        if backward:
            Xg, xg = X.clone().requires_grad_(), x.clone().requires_grad_()
            res = pyfacepnp.solve_pnp(Xg, xg, K)
            torch.autograd.grad((res.R.sum(), res.t.sum()), (Xg, xg))
        else:
            pyfacepnp.solve_pnp(X, x, K)

    call()  # warm-up
    perf = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-o", data, "-p", str(os.getpid()),
                             "--", "sleep", str(seconds)])
    time.sleep(0.5)  # perf attaches
    calls, t0 = 0, time.perf_counter()
    while perf.poll() is None:
        call()
        calls += 1
    print(f"{(time.perf_counter() - t0) / max(calls, 1) / batch * 1e6:.2f}")


def shares(data: Path) -> dict[str, float]:
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                          "--sort", "dso,symbol"], capture_output=True, text=True, check=True).stdout
    line = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)$")
    acc = defaultdict(float)
    for row in out.splitlines():
        m = line.match(row)
        if not m:
            continue
        pct, dso, sym = float(m[1]), m[2], m[3]
        if not dso.startswith("_C"):
            acc["call overhead (Python, torch)"] += pct
            continue
        stage = next((name for name, pat in STAGES if re.search(pat, sym)), "other (library)")
        acc[stage] += pct
    return acc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[68, 1220])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--driver", nargs=4, metavar=("N", "BATCH", "BACKWARD", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.driver:
        n, batch, backward, data = args.driver
        return driver(int(n), int(batch), args.seconds, backward == "1", data)
    if shutil.which("perf") is None:
        sys.exit("needs Linux perf")
    env = dict(os.environ, PYTHONPATH=str(build()), OMP_NUM_THREADS="1")
    for n in args.n:
        cols = {}
        for backward in (False, True):
            data = BUILD / f"n{n}_{int(backward)}.data"
            res = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--driver",
                                  str(n), str(args.batch), str(int(backward)), str(data)],
                                 env=env, capture_output=True, text=True, check=True)
            cols[backward] = (float(res.stdout.split()[-1]), shares(data))
        print(f"\nN = {n}, B = {args.batch}, float64, one thread: forward {cols[False][0]:.1f} µs, "
              f"forward + backward {cols[True][0]:.1f} µs per problem\n")
        print("| stage | forward: share | µs | forward + backward: share | µs |")
        print("|---|---:|---:|---:|---:|")
        names = [s for s, _ in STAGES] + ["other (library)", "call overhead (Python, torch)"]
        for name in names:
            (tf, sf), (tb, sb) = cols[False], cols[True]
            print(f"| {name} | {sf.get(name, 0):.1f} % | {sf.get(name, 0) / 100 * tf:.1f} "
                  f"| {sb.get(name, 0):.1f} % | {sb.get(name, 0) / 100 * tb:.1f} |")


if __name__ == "__main__":
    main()
