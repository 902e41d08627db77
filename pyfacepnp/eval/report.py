"""The run report: comparison table, loss curves and overlay images in ``<run>/report.md``."""

from __future__ import annotations

import json
import os
import warnings

from pyfacepnp.draw import draw_mesh
from pyfacepnp.eval.evaluate import EvalResult
from pyfacepnp.eval.experiment import gain_lines, metrics_dict
from pyfacepnp.geometry.camera import project_points
from pyfacepnp.train.logger import read_csv

CURVES = {"detector": ["loss", "lm68_px"], "stage1": ["loss", "vertex_l1_mm", "lm_px"],
          "stage2": ["loss", "wcpa", "lm_px"]}


def plot_curves(run_dir: str, path: str) -> bool:
    """One row of panels per stage from ``<stage>_log.csv``; False when there is nothing to
    plot or matplotlib (the ``plots`` extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        warnings.warn("loss curves not drawn: matplotlib is not installed "
                      "(pip install 'pyfacepnp[plots]' or pip install matplotlib)", stacklevel=2)
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {s: read_csv(os.path.join(run_dir, f"{s}_log.csv")) for s in CURVES}
    logs = {s: c for s, c in logs.items() if c.get("step")}
    if not logs:
        return False
    ncol = max(len(v) for v in CURVES.values())
    fig, axes = plt.subplots(len(logs), ncol, figsize=(4 * ncol, 2.8 * len(logs)), squeeze=False)
    for row, (stage, cols) in enumerate(logs.items()):
        for j in range(ncol):
            ax = axes[row][j]
            if j >= len(CURVES[stage]) or CURVES[stage][j] not in cols:
                ax.axis("off")
                continue
            key = CURVES[stage][j]
            ax.plot(cols["step"][: len(cols[key])], cols[key])
            ax.set_title(f"{stage}: {key}")
            ax.set_xlabel("step")
            if key == "loss" and min(cols[key]) > 0:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_overlays(result: EvalResult, triangles, folder: str) -> list[str]:
    """PNG per example: GT mesh (green) and end-to-end prediction (red) over the frame."""
    import cv2

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, ex in enumerate(result.examples):
        img = ex["image"].permute(1, 2, 0).cpu().numpy().copy()
        gt_px = project_points(ex["gt_vertices"][None], ex["gt_R"][None], ex["gt_t"][None], ex["K"][None])[0]
        px = project_points(ex["vertices"][None], ex["R"][None], ex["t"][None], ex["K"][None])[0]
        img = draw_mesh(img, gt_px, triangles, color=(40, 220, 40), alpha=0.5)
        img = draw_mesh(img, px, triangles, color=(255, 40, 40), alpha=0.7)
        path = os.path.join(folder, f"overlay_{i}.png")
        cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def write_report(run_dir: str, result: EvalResult, triangles, extra: dict | None = None) -> str:
    """Write ``<run_dir>/report.md`` (+ ``loss_curves.png``, ``overlays/``, ``eval.json``,
    ``metrics.json``: :func:`pyfacepnp.eval.experiment.metrics_dict`)."""
    extra = extra or {}
    has_curves = plot_curves(run_dir, os.path.join(run_dir, "loss_curves.png"))
    overlays = write_overlays(result, triangles, os.path.join(run_dir, "overlays"))
    summary = {"n": result.n, "methods": result.summary(), "failures": result.failures,
               "detector": result.detector, "diagnostics": result.diagnostics, **extra}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(summary, f, indent=2)
    metrics = metrics_dict(result)
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    s = result.summary()
    n_ids = metrics.get("trivial", {}).get("n_identities", result.n)
    lines = [f"# Run report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    lines += [f"Held-out split: {result.n} samples of {n_ids} identities. Lower is better everywhere. "
              "WCPA score = 1000 * mean(d(X1,X2) + d(X1,X3) + 10 d(X1,X4)) in mm. (c) and (c0) are "
              "means over the stage-2 seeds; the oracle rows need no network (PnP on the exact "
              "projections of the ground-truth vertices).", "", result.table(), ""]
    gl = gain_lines(metrics)
    if gl:
        lines += ["## The end-to-end experiment", "",
                  "Paired per-sample differences (negative: (c) better), pooled over the stage-2 seeds, "
                  "95 % percentile bootstrap over identities (`metrics.json`, `e2e_gain`).", ""] + gl + [""]
    if "baseline" in s and "c" in s and "a" in s:
        ratio = s["baseline"]["wcpa"] / max(s["c"]["wcpa"], 1e-9)
        lines += [f"- (c) vs trivial baseline: {ratio:.2f}x lower WCPA score.",
                  f"- (c) vs (a): {s['a']['wcpa'] - s['c']['wcpa']:+.2f} WCPA points "
                  f"({'better' if s['c']['wcpa'] < s['a']['wcpa'] else 'not better'}).", ""]
    lines += ["## Coarse detector", "",
              f"- 68-landmark error: {result.detector['landmark68_error_px']:.2f} px (frame pixels)",
              f"- crops containing the whole face (every GT vertex): "
              f"{100 * result.detector['face_inside_crop']:.1f}%", ""]
    lines += ["## Dense landmarks", "", "| network | dense landmark error (frame px) | median sigma (crop px) |",
              "|---|---:|---:|"]
    for name, d in result.diagnostics.items():
        if "dense_landmark_error_px" in d:
            lines.append(f"| {name} | {d['dense_landmark_error_px']:.2f} | {d['median_sigma_crop_px']:.2f} |")
    lines.append("")
    if "c_with_gt_crops" in result.diagnostics:
        o = result.diagnostics["c_with_gt_crops"]
        lines += [f"- (c) on crops around the ground-truth landmarks (a perfect detector): WCPA "
                  f"{o['wcpa']:.2f}, rotation {o['rotation_deg']:.2f} deg, translation "
                  f"{o['translation_mm']:.2f} mm, vertex {o['vertex_mm']:.3f} mm.", ""]
    if "training" in extra:
        lines += ["## Training", "", "| stage | steps | seconds | images/s |", "|---|---:|---:|---:|"]
        for name, st in extra["training"].items():
            if "seconds" in st:
                lines.append(f"| {name} | {st['steps']} | {st['seconds']:.1f} | {st['img_per_s']:.1f} |")
        lines.append("")
    for key in ("data_seconds", "total_seconds"):
        if key in extra:
            lines.append(f"- {key.replace('_', ' ')}: {extra[key]:.1f}")
    lines.append("")
    if has_curves:
        lines += ["## Loss curves", "", "![loss curves](loss_curves.png)", ""]
    if overlays:
        lines += ["## Overlays (green: ground truth, red: end-to-end prediction)", ""]
        lines += [f"![overlay]({os.path.relpath(p, run_dir)})" for p in overlays]
        lines.append("")
    path = os.path.join(run_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


__all__ = ["plot_curves", "write_overlays", "write_report"]
