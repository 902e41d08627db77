"""GPU benchmark of solve_pnp's CUDA kernels against the pure-PyTorch reference solver on the
same GPU and the CPU op, on face-like problems (benchmarks/problems.py, family ``face``).

    python benchmarks/bench_gpu.py                 # default run, ~2-3 min on an H100
    python benchmarks/bench_gpu.py --out DIR        # also writes DIR/bench_gpu.json and .md
    python benchmarks/bench_gpu.py --budget 600 --reference-sizes all
    python benchmarks/bench_gpu.py --smoke          # tiny sizes on the CPU: checks the script

What is measured:
- ours (CUDA): at the target size and the largest, also the forward kernel compiled for 16
  resident problems per SM (128 registers) instead of 8, selected by the environment
  variable PYFACEPNP_CUDA_PNP_WARPS_PER_SM=16.
- ours (CUDA): B in {256, 4096, 65536} x N in {68, 1220} x {float32, float64}, forward and
  forward + backward (autograd: gradients to points3d, points2d and weights from upstream
  gradients on R, t and cost). Median of CUDA-event timings after a warm-up call.
  B = 65536 tiles the 4096 generated problems (same work per problem).
- reference (GPU): ``pyfacepnp.reference.solve_pnp_reference`` on the same GPU, float32, at
  the sizes in --reference-sizes (default: B = 256 and 4096), as long as --budget lasts;
  its backward is autograd through its unrolled iterations. It is slow: one or two timed
  calls, no warm-up call (ours ran before it), the faster kept.
- CPU op: ``solve_pnp`` on CPU tensors (all cores), at B = 256, timed with a wall clock.
Times are reported per problem (the call's time / B) and as ratios between solvers at the
same B, N, dtype and mode; the CPU op's per-problem time comes from its B = 256 runs.

For the largest case it reports the bandwidth achieved on the fewest bytes the call must move
(each input read once, each output written once) against a measured device-to-device copy,
and an arithmetic rate estimated from an operation count of the kernels (per point and pass
over the points, counted from the source: about 280 flops for a Gauss-Newton pass, 450 for
an exact-Hessian pass, 250 for the initialisation's pass, 250 for the backward's; the passes
per problem estimated from the reported iterations) against the card's FP32 and FP64 rates (SMs x lanes x 2 x max clock).
The kernels compute in float64 whatever the storage dtype, so the FP64 fraction is the one
that bounds them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the checkout, not an installed copy

import torch  # noqa: E402

import pyfacepnp  # noqa: E402
from problems import make_problems  # noqa: E402
from pyfacepnp.reference import solve_pnp_reference  # noqa: E402

BATCHES = (256, 4096, 65536)
POINTS = (68, 1220)
DTYPES = (torch.float32, torch.float64)
GENERATED = 4096  # problems generated per N; larger batches tile them
CPU_BATCH = 256
DEVICE = "cuda"
TIGHT_ENV, TIGHT = "PYFACEPNP_CUDA_PNP_WARPS_PER_SM", "-128regs"


def dtype_name(dt):
    return str(dt).replace("torch.", "")


class Deadline:
    def __init__(self, seconds):
        self.end = time.perf_counter() + seconds

    def left(self):
        return self.end - time.perf_counter()


def cuda_time(fn, *, repeats, budget_s, warmup=True):
    """Median seconds of fn() by CUDA events, after a warm-up call; stops early on budget."""
    if DEVICE == "cpu":
        return wall_time(fn, repeats=repeats, budget_s=budget_s, warmup=warmup)
    if warmup:
        fn()
    torch.cuda.synchronize()
    times, t0 = [], time.perf_counter()
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        if time.perf_counter() - t0 > budget_s:
            break
    times.sort()
    return times[len(times) // 2], len(times)


def wall_time(fn, *, repeats, budget_s, warmup=True):
    if warmup:
        fn()
    times, t0 = [], time.perf_counter()
    for _ in range(repeats):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
        if time.perf_counter() - t0 > budget_s:
            break
    times.sort()
    return times[len(times) // 2], len(times)


def make_inputs(n):
    p = make_problems("face", GENERATED, n, seed=1)
    w = torch.ones(GENERATED, n, 2, dtype=torch.float64)
    return p.points3d, p.points2d, p.K, w


def take(arrays, B, device, dtype):
    """The first B problems, tiling the generated ones (on the device) when B is larger."""
    out = []
    for a in arrays:
        a = a.to(device=device, dtype=dtype)
        reps = math.ceil(B / a.shape[0])
        a = a.repeat(reps, *([1] * (a.dim() - 1)))[:B] if reps > 1 else a[:B]
        out.append(a.contiguous())
    return out


def forward_fn(solver, X, x, K, w):
    return lambda: solver(X, x, K, w)


def backward_fn(solver, X, x, K, w):
    """Forward + backward with upstream gradients on R, t and cost (points3d, points2d and
    weights require gradients; K does not)."""
    leaves = [a.detach().clone().requires_grad_() for a in (X, x, w)]
    g = torch.Generator(device=X.device).manual_seed(0)
    B = X.shape[0]
    gR = torch.randn(B, 3, 3, generator=g, device=X.device, dtype=X.dtype)
    gt = torch.randn(B, 3, generator=g, device=X.device, dtype=X.dtype)

    def run():
        for a in leaves:
            a.grad = None
        res = solver(leaves[0], leaves[1], K, leaves[2])
        ((res.R * gR).sum() + (res.t * gt).sum() + res.cost.sum()).backward()

    return run


def ours(X, x, K, w):
    return pyfacepnp.solve_pnp(X, x, K, w)


def reference(X, x, K, w):
    return solve_pnp_reference(X, x, K, w)


def card_info():
    if DEVICE == "cpu":
        return {"name": "cpu (smoke run)", "sms": os.cpu_count(), "fp32_tflops": None, "fp64_tflops": None}
    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "sms": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}", "memory_gb": props.total_memory / 1e9}
    try:
        clk = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout.split()[0]
        info["max_sm_clock_mhz"] = float(clk)
    except Exception:  # no nvidia-smi: rates unknown
        info["max_sm_clock_mhz"] = None
    # FP32 / FP64 lanes per SM (non-tensor): Hopper (9.0) 128 / 64, GA100 (8.0) 64 / 32.
    lanes = {"9.0": (128, 64), "8.0": (64, 32)}.get(info["capability"])
    if lanes and info["max_sm_clock_mhz"]:
        f = info["sms"] * 2 * info["max_sm_clock_mhz"] * 1e6
        info["fp32_tflops"], info["fp64_tflops"] = lanes[0] * f / 1e12, lanes[1] * f / 1e12
    else:
        info["fp32_tflops"] = info["fp64_tflops"] = None
    return info


def copy_bandwidth():
    """Device-to-device copy of 2 GiB: bytes read + written per second."""
    src = torch.empty(1 << (29 if DEVICE == "cuda" else 22), dtype=torch.float32, device=DEVICE).uniform_()
    dst = torch.empty_like(src)
    sec, _ = cuda_time(lambda: dst.copy_(src), repeats=10, budget_s=2.0)
    return 2 * src.numel() * 4 / sec


def min_bytes(B, N, itemsize, backward):
    """Fewest bytes a call moves: inputs read once, outputs written once."""
    fwd = B * N * 7 * itemsize + B * 9 * itemsize + B * (9 + 3 + 1 + 36) * itemsize + B * 8
    if not backward:
        return fwd
    # backward reads points, K, R, t, covariance, status and the upstream gradients, and
    # writes the gradients of the points, pixels, weights and K
    bwd = B * N * 7 * itemsize + B * (9 + 9 + 3 + 36 + 9 + 3 + 1) * itemsize + B * 4
    return fwd + bwd + B * N * 7 * itemsize + B * 9 * itemsize


def estimated_flops(B, N, iterations_mean, backward):
    """Operation-count estimate of the CUDA kernels (see the module docstring)."""
    gn_passes = iterations_mean + 1  # LM proposals, plus the first evaluation of the start
    per_point = 2 * 10 + 250 + gn_passes * 280 + 3 * 450  # checks/centroid, Omega, LM, Newton
    if backward:
        per_point += 250
    return B * N * per_point


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for bench_gpu.json and bench_gpu.md")
    ap.add_argument("--budget", type=float, default=170.0, help="seconds for the whole run")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--reference-sizes", default="256,4096",
                    help="batch sizes for the reference solver ('all' for every size)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script")
    ap.add_argument("--summarise", type=Path, default=None, metavar="JSON",
                    help="only print the tables of an earlier (possibly interrupted) run's JSON")
    args = ap.parse_args()
    if args.summarise:
        saved = json.loads(args.summarise.read_text())
        print(summarise(saved["rows"], saved["card"]))
        return 0
    global BATCHES, POINTS, GENERATED, CPU_BATCH, DEVICE
    if args.smoke:
        BATCHES, POINTS, GENERATED, CPU_BATCH, DEVICE = (4, 16), (68,), 8, 4, "cpu"
        args.reference_sizes = "4"
    elif not torch.cuda.is_available() or not pyfacepnp.build_info()["with_cuda"]:
        print("bench_gpu: needs a CUDA device and pyfacepnp built with its CUDA kernels "
              f"(cuda available: {torch.cuda.is_available()}, build: {pyfacepnp.build_info()})")
        return 2
    deadline = Deadline(args.budget)
    ref_sizes = BATCHES if args.reference_sizes == "all" else tuple(int(b) for b in args.reference_sizes.split(","))
    card = card_info()
    card["copy_gbps"] = copy_bandwidth() / 1e9
    print(f"card: {card}", flush=True)
    rows = []
    data = {}

    def inputs(n):
        if n not in data:
            data[n] = make_inputs(n)
        return data[n]

    def record(**kw):
        rows.append(kw)
        print(json.dumps(kw), flush=True)
        if args.out:  # kept current, so that a run stopped from outside still has its rows
            save_json(args.out, card, rows)

    def run_ours(n, dt, B, variant=""):
        solver = "ours-" + DEVICE + variant
        if deadline.left() < 10:
            for mode in ("forward", "forward+backward"):
                record(solver=solver, B=B, N=n, dtype=dtype_name(dt), mode=mode, skipped="budget")
            return
        X, x, K, w = take(inputs(n), B, DEVICE, dt)
        res = ours(X, x, K, w)
        it_mean = float(res.iterations.double().mean())
        conv = float((res.status == 0).double().mean())
        for mode, make in (("forward", forward_fn), ("forward+backward", backward_fn)):
            sec, reps = cuda_time(make(ours, X, x, K, w), repeats=args.repeats,
                                  budget_s=min(2.0, max(0.3, deadline.left() / 60)))
            record(solver=solver, B=B, N=n, dtype=dtype_name(dt), mode=mode, sec=sec,
                   repeats=reps, iterations_mean=it_mean, converged=conv)
        del X, x, K, w, res
        empty_cache()

    def run_reference(n, B):
        """float32; one timed call (no warm-up: our runs before it initialised the GPU), a
        second when the first was short; the faster is kept."""
        name = "reference-" + DEVICE
        for mode, make in (("forward+backward", backward_fn), ("forward", forward_fn)):
            if deadline.left() < (40 if B * n >= 4096 * 1220 else 25) and not args.smoke:
                record(solver=name, B=B, N=n, dtype="float32", mode=mode, skipped="budget")
                continue
            X, x, K, w = take(inputs(n), B, DEVICE, torch.float32)
            try:
                fn = make(reference, X, x, K, w)
                sec, reps = float("inf"), 0
                while reps < 2:
                    t, _ = cuda_time(fn, repeats=1, budget_s=0.0, warmup=False)
                    sec, reps = min(sec, t), reps + 1
                    if t > 5.0 or deadline.left() < 3 * t + 20:
                        break
                record(solver=name, B=B, N=n, dtype="float32", mode=mode, sec=sec, repeats=reps)
            except torch.cuda.OutOfMemoryError:
                record(solver=name, B=B, N=n, dtype="float32", mode=mode, skipped="out of memory")
            del X, x, K, w
            empty_cache()

    def run_ransac(n, B, ratio=0.5):
        """solve_pnp_ransac, float32, with `ratio` of the pixels replaced by uniform image
        points (threshold 4 px)."""
        solver = "ours-ransac-" + DEVICE
        if deadline.left() < 15:
            record(solver=solver, B=B, N=n, dtype="float32", mode="forward", skipped="budget")
            return
        X, x, K, w = take(inputs(n), B, DEVICE, torch.float32)
        g = torch.Generator().manual_seed(0)
        out = torch.rand(B, n, generator=g) < ratio
        x = x.clone()
        x[out.to(DEVICE)] = (torch.rand(int(out.sum()), 2, generator=g) * 800).to(DEVICE, torch.float32)

        def fn():
            return pyfacepnp.solve_pnp_ransac(X, x, K, w, threshold=4.0)

        res = fn()
        sec, reps = cuda_time(fn, repeats=args.repeats, budget_s=min(3.0, max(0.3, deadline.left() / 40)))
        record(solver=solver, B=B, N=n, dtype="float32", mode="forward", outliers=ratio, sec=sec,
               repeats=reps, converged=float(res.converged.double().mean()),
               trials_mean=float(res.trials.double().mean()),
               inlier_recall=float((res.inliers & ~out.to(DEVICE)).sum() / (~out).sum()))
        del fn, res  # (the inputs go with the frame)

    def run_cpu(n, dt):
        """The CPU op at B = CPU_BATCH, and the agreement of its statuses with the GPU's."""
        if deadline.left() < 15:
            for mode in ("forward", "forward+backward"):
                record(solver="cpu-op", B=CPU_BATCH, N=n, dtype=dtype_name(dt), mode=mode, skipped="budget")
            return
        Xc, xc, Kc, wc = take(inputs(n), CPU_BATCH, "cpu", dt)
        cpu_res = ours(Xc, xc, Kc, wc)
        gpu_res = ours(*(a.to(DEVICE) for a in (Xc, xc, Kc, wc)))
        same_status = bool(torch.equal(cpu_res.status, gpu_res.status.cpu()))
        ok = cpu_res.status == 0
        t_err = float(((gpu_res.t.cpu().double() - cpu_res.t.double()).norm(dim=1)[ok]
                       / cpu_res.t.double().norm(dim=1)[ok]).max()) if ok.any() else float("nan")
        for mode, make in (("forward", forward_fn), ("forward+backward", backward_fn)):
            sec, reps = wall_time(make(ours, Xc, xc, Kc, wc), repeats=3, budget_s=2.0)
            record(solver="cpu-op", B=CPU_BATCH, N=n, dtype=dtype_name(dt), mode=mode, sec=sec,
                   repeats=reps, statuses_equal_gpu=same_status, t_rel_err_vs_gpu=t_err)

    # Most important first, so that a short budget still answers the targets: the target size
    # (B = 4096, N = 1220, float32) for ours and the reference, then every size of ours, the
    # CPU op, and the reference's other sizes.
    big_n, big_b = max(POINTS), BATCHES[len(BATCHES) // 2]
    run_ours(big_n, DTYPES[0], big_b)
    if big_b in ref_sizes:
        run_reference(big_n, big_b)
    run_ransac(big_n, big_b)
    for dt in DTYPES:
        for n in sorted(POINTS, reverse=True):
            for B in BATCHES:
                if (n, dt, B) != (big_n, DTYPES[0], big_b):
                    run_ours(n, dt, B)
    if DEVICE == "cuda":  # the forward kernel's register-capped variant (see pnp_cuda.cpp)
        os.environ[TIGHT_ENV] = "16"
        try:
            for B in (big_b, max(BATCHES)):
                run_ours(big_n, DTYPES[0], B, variant=TIGHT)
        finally:
            del os.environ[TIGHT_ENV]
    for dt in DTYPES:
        for n in sorted(POINTS, reverse=True):
            run_cpu(n, dt)
    for B in sorted(ref_sizes):
        for n in sorted(POINTS):
            if (n, B) != (big_n, big_b):
                run_reference(n, B)

    report = summarise(rows, card)
    print(report, flush=True)
    if args.out:
        save_json(args.out, card, rows)
        (args.out / "bench_gpu.md").write_text(report + "\n")
    return 0


def save_json(folder, card, rows):
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "bench_gpu.json.tmp"
    tmp.write_text(json.dumps({"card": card, "rows": rows}, indent=1))
    tmp.replace(folder / "bench_gpu.json")


def empty_cache():
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()) and "sec" in r:
            return r
    return None


def ratio(r):
    return f"{r:.0f}x" if r >= 10 else f"{r:.2g}x"


def summarise(rows, card):
    lines = [f"GPU benchmark on {card['name']} ({card['sms']} SMs, copy {card['copy_gbps']:.0f} GB/s); "
             "us per problem (call time / B); ratios = their time / ours at the same size.", "",
             f"| B | N | dtype | mode | ours {DEVICE} us/problem | ours ms/call | reference {DEVICE} us/problem "
             f"| x vs reference | CPU op us/problem (B={CPU_BATCH}) | x vs CPU op |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["solver"] != "ours-" + DEVICE:
            continue
        key = dict(N=r["N"], dtype=r["dtype"], mode=r["mode"])
        ref = find(rows, solver="reference-" + DEVICE, B=r["B"], **key)
        cpu = find(rows, solver="cpu-op", **key)
        us = r["sec"] / r["B"] * 1e6
        ref_us = ref["sec"] / ref["B"] * 1e6 if ref else None
        cpu_us = cpu["sec"] / cpu["B"] * 1e6 if cpu else None
        lines.append(
            f"| {r['B']} | {r['N']} | {r['dtype']} | {r['mode']} | {us:.3f} | {r['sec'] * 1e3:.3f} | "
            + (f"{ref_us:.2f} | {ratio(ref_us / us)} |" if ref_us else "- | - |")
            + (f" {cpu_us:.1f} | {ratio(cpu_us / us)} |" if cpu_us else " - | - |"))
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        lines.append("")
        lines.append("Not measured: " + "; ".join(f"{r['solver']} B={r['B']} N={r['N']} {r['mode']} ({r['skipped']})" for r in skipped))
    agree = [r for r in rows if r["solver"] == "cpu-op" and r["mode"] == "forward"]
    if agree:
        lines.append("")
        lines.append(f"{DEVICE} vs CPU op at B={CPU_BATCH}: " + "; ".join(
            f"N={r['N']} {r['dtype']}: statuses equal {r['statuses_equal_gpu']}, max rel |t| diff {r['t_rel_err_vs_gpu']:.1e}"
            for r in agree))
    target = find(rows, solver="ours-cuda", B=4096, N=1220, dtype="float32", mode="forward+backward")
    ref_t = find(rows, solver="reference-cuda", B=4096, N=1220, dtype="float32", mode="forward+backward")
    if target:
        lines.append("")
        lines.append(f"Target B=4096 N=1220 float32 forward+backward: {target['sec'] * 1e3:.3f} ms "
                     f"(target < 1 ms: {'met' if target['sec'] < 1e-3 else 'NOT met'})"
                     + (f"; {ref_t['sec'] / target['sec']:.0f}x the reference (target >= 50x: "
                        f"{'met' if ref_t['sec'] / target['sec'] >= 50 else 'NOT met'})" if ref_t else
                        "; reference not measured at this size"))
    robust = find(rows, solver="ours-ransac-cuda", B=4096, N=1220, dtype="float32", mode="forward")
    if robust and "sec" in robust:
        lines.append("")
        lines.append(f"solve_pnp_ransac B=4096 N=1220 float32, 50 % outliers: {robust['sec'] * 1e3:.3f} ms "
                     f"(target < 5 ms: {'met' if robust['sec'] < 5e-3 else 'NOT met'}); converged "
                     f"{100 * robust['converged']:.1f} %, {robust['trials_mean']:.0f} trials on average, "
                     f"inlier recall {robust['inlier_recall']:.4f}")
    tight = [(r, find(rows, solver="ours-cuda", B=r["B"], N=r["N"], dtype=r["dtype"], mode=r["mode"]))
             for r in rows if r["solver"] == "ours-cuda" + TIGHT and "sec" in r]
    if tight:
        lines.append("Forward kernel capped at 128 registers (16 problems per SM instead of 8), "
                     "ms per call, capped / default: " + "; ".join(
                         f"B={r['B']} N={r['N']} {r['mode']}: {r['sec'] * 1e3:.3f} / "
                         + (f"{d['sec'] * 1e3:.3f}" if d else "-") for r, d in tight))
    big = find(rows, solver="ours-cuda", B=65536, N=1220, dtype="float32", mode="forward+backward")
    if big:
        B, N = big["B"], big["N"]
        gbps = min_bytes(B, N, 4, True) / big["sec"] / 1e9
        gflops = estimated_flops(B, N, big["iterations_mean"], True) / big["sec"] / 1e9
        lines.append(f"Largest case B={B} N={N} float32 forward+backward, {big['sec'] * 1e3:.2f} ms: "
                     f"{gbps:.0f} GB/s on the fewest bytes = {gbps / card['copy_gbps']:.1%} of the measured copy; "
                     f"~{gflops:.0f} GFLOP/s estimated (float64 arithmetic)"
                     + (f" = {gflops / 1e3 / card['fp64_tflops']:.1%} of FP64 and {gflops / 1e3 / card['fp32_tflops']:.1%} "
                        f"of FP32 ({card['fp64_tflops']:.1f} / {card['fp32_tflops']:.1f} TFLOP/s)"
                        if card.get("fp32_tflops") else " (card's rates unknown)")
                     + f"; mean LM iterations {big['iterations_mean']:.1f}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
