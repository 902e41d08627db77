"""Scoring solver outputs on the shared objective, and writing tables and sections."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from pyfacepnp.reference import project, reprojection_cost, rotation_angle
from pyfacepnp.reference.init import nearest_rotation

SUCCESS_DEG = 5.0  # rotation error vs ground truth
SUCCESS_T = 0.05  # translation error relative to |t|


def score(p, R, t, ok, loss="l2", huber_delta=1.0):
    """Per-problem cost on the op's objective (float64, unit weights, R projected onto the
    rotations; ``inf`` where the solver failed or put a point behind the camera) and
    success against ground truth."""
    R, t = R.double(), t.double()
    finite = torch.isfinite(R).flatten(1).all(1) & torch.isfinite(t).all(1)
    R = torch.where(finite[:, None, None], R, torch.eye(3, dtype=R.dtype))
    # Score rotations: a float32 or linear (DLT) R is orthonormal only approximately, and
    # the slack of a slightly scaled R would lower its cost below the true optimum.
    R = nearest_rotation(R)
    t = torch.where(finite[:, None], t, torch.tensor([0.0, 0.0, 1.0], dtype=t.dtype))
    cost = reprojection_cost(R, t, p.points3d, p.points2d, p.K, None, loss, huber_delta)
    _, z = project(R, t, p.points3d, p.K)
    valid = ok & finite & (z > 0).all(1) & torch.isfinite(cost)
    cost = torch.where(valid, cost, torch.inf)
    rot = rotation_angle(R, p.R) * 180 / math.pi
    terr = (t - p.t).norm(dim=1) / p.t.norm(dim=1)
    return cost, valid & (rot < SUCCESS_DEG) & (terr < SUCCESS_T)


def excess(cost: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Relative excess cost over the best optimum any solver found for each problem."""
    return (cost - best) / best.clamp_min(1e-300)


def fmt_us(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}" if us >= 1 else f"{us:.2f}"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def fmt_excess(e: float) -> str:
    if math.isinf(e):
        return "inf"
    if e < 1e-12:
        return "0"
    return f"{e:.1e}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model and count, memory, torch/cv2/kornia versions, threads, load."""
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(re.findall(r"^([^:\n]+):\s*(.+)$", out, flags=re.M))
        cpu = f"{fields.get('Model name', cpu)}, {fields.get('CPU(s)', '?')} CPUs ({fields.get('Flags', '').count('avx512f') and 'AVX-512' or 'AVX2'})"
    except (OSError, subprocess.CalledProcessError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = [f"torch {torch.__version__} (threads: {torch.get_num_threads()})"]
    try:
        import cv2

        versions.append(f"opencv {cv2.__version__} (threads: {cv2.getNumThreads()})")
    except ImportError:
        pass
    try:
        import kornia

        versions.append(f"kornia {kornia.__version__}")
    except ImportError:
        versions.append("kornia not installed")
    return f"{cpu}, {mem:.0f} GiB RAM; {', '.join(versions)}; Python {platform.python_version()}"


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run_header(load_start: str, t_start: float) -> str:
    """The sentence that opens a benchmark section: date, machine, load at both ends, duration
    (``load_start`` from :func:`load_average` and ``t_start`` from ``time.perf_counter`` at the
    start of the run)."""
    minutes = (time.perf_counter() - t_start) / 60
    return (f"Measured {time.strftime('%Y-%m-%d')} on {machine_description()}. Load average "
            f"(1/5/15 min) {load_start} at the start, {load_average()} at the end; the run took "
            f"{minutes:.1f} min.")


def publish(section: str, body: str, records, json_path: Path, doc: Path) -> None:
    """Write a full run's records to ``json_path`` and its ``body`` into ``doc``'s section."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(records, indent=1) + "\n")
    replace_section(doc, section, body)


def replace_section(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (append
    the section if the markers are missing), writing the file atomically."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def percentile(x: torch.Tensor, q: float) -> float:
    x = x[~torch.isnan(x)]
    return float(np.percentile(x.numpy(), q, method="nearest")) if x.numel() else float("nan")
