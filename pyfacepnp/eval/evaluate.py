"""Held-out evaluation: the comparison table of the pipeline's variants.

Rows (all on the same detector crops of the same frames):

- ``baseline``: mean shape (the face model's template) at the mean training pose.
- ``(a) stage-1 + cv2.solvePnP``: the network trained by stage 1, pose by OpenCV SQPnP
  + LM refinement on all 1220 predicted points, unweighted (the 1st-place recipe).
- ``(b) stage-1 + solve_pnp``: the same predictions, pose by ``pyfacepnp.solve_pnp``
  with weights 1/sigma^2.
- ``(c) end-to-end + solve_pnp``: the network after stage-2 fine-tuning through the op.

Every row is :func:`pyfacepnp.models.pipeline.run_pipeline`, the function users call, with
the option of the variant (the detector's landmarks reused across rows; OpenCV's solver for
(a); ground-truth landmarks for the oracle crops of the diagnostics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

import pyfacepnp
from pyfacepnp import metrics as M
from pyfacepnp.geometry.camera import project_points
from pyfacepnp.models.pipeline import run_pipeline
from pyfacepnp.train.data import iterate_split

METHODS = {
    "baseline": "trivial baseline (mean shape, mean pose)",
    "a": "(a) stage-1 net + cv2.solvePnP (SQPnP+LM, unweighted)",
    "b": "(b) stage-1 net + pyfacepnp.solve_pnp (1/sigma^2)",
    "c": "(c) end-to-end net + pyfacepnp.solve_pnp (1/sigma^2)",
}
METRIC_NAMES = ("wcpa", "rotation_deg", "translation_mm", "vertex_mm")


def pose_metrics(pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t) -> dict:
    """Per-sample metrics (numpy ``(B,)``) from :mod:`pyfacepnp.metrics`."""
    args = [x.detach().cpu().double() for x in (pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t)]
    pv, pR, pt, gv, gR, gt = args
    out = {
        "wcpa": M.wcpa_score(pv, pR, pt, gv, gR, gt, reduction="none"),
        "rotation_deg": M.rotation_error_deg(pR, gR),
        "translation_mm": M.translation_error_mm(pt, gt),
        "vertex_mm": M.vertex_error_mm(pv, gv),
    }
    return {k: np.asarray(torch.as_tensor(v).detach().cpu().numpy(), dtype=np.float64).reshape(-1)
            for k, v in out.items()}


@dataclass
class EvalResult:
    """Per-sample metrics per method, detector statistics and diagnostics."""

    per_sample: dict = field(default_factory=dict)  # method -> metric -> (n,) array
    failures: dict = field(default_factory=dict)  # method -> count of failed PnP
    detector: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    n: int = 0
    examples: list = field(default_factory=list)  # a few (image, K, pose...) for overlays

    def summary(self) -> dict:
        return {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in self.per_sample.items()}

    def table(self) -> str:
        """Markdown table: one row per method."""
        s = self.summary()
        lines = ["| method | WCPA score | rotation (deg) | translation (mm) | vertex (mm) | PnP failed |",
                 "|---|---:|---:|---:|---:|---:|"]
        for m, label in METHODS.items():
            if m not in s:
                continue
            r = s[m]
            fail = self.failures.get(m, 0)
            lines.append(f"| {label} | {r['wcpa']:.2f} | {r['rotation_deg']:.2f} | "
                         f"{r['translation_mm']:.2f} | {r['vertex_mm']:.3f} | {fail}/{self.n} |")
        return "\n".join(lines)


def _append(store: dict, method: str, metrics: dict) -> None:
    d = store.setdefault(method, {})
    for k, v in metrics.items():
        d.setdefault(k, []).append(v)


def _failed(pose) -> int:
    return int((pose.status != int(pyfacepnp.PnPStatus.CONVERGED)).sum())


@torch.no_grad()
def evaluate(bundle: dict, source, face_model, batch_size: int = 32, pnp_iterations: int = 50,
             cv2_method: str = "sqpnp", num_examples: int = 4, progress: bool = True) -> EvalResult:
    """Evaluate every method of :data:`METHODS` on a split (needs its full ``image``).

    Args:
        bundle: :func:`pyfacepnp.models.bundle.load_bundle` output.
        source: a split from :func:`pyfacepnp.train.data.load_split` with ``keep_image``.
        face_model: the face model (template, triangles).
        cv2_method: ``"sqpnp"`` or ``"iterative"`` for row (a).

    Returns:
        :class:`EvalResult`.
    """
    from tqdm import tqdm

    cfg = bundle["config"]
    det, net1, net2 = bundle["detector"], bundle["stage1"], bundle["stage2"]
    c, margin = cfg.data.crop_size, cfg.data.crop_margin
    template = torch.tensor(np.array(face_model.template), dtype=torch.float32)
    base_R, base_t = bundle["baseline"]["R"].float().cpu(), bundle["baseline"]["t"].float().cpu()
    res = EvalResult()
    store: dict = {}
    oracle: dict = {}
    det_err, inside, diag = [], [], {"a": [], "c": []}
    fails = {"a": 0, "b": 0, "c": 0}
    for batch in tqdm(iterate_split(source, batch_size), desc="evaluate", disable=not progress,
                      total=(len(source) + batch_size - 1) // batch_size, mininterval=1.0):
        if "image" not in batch:
            raise ValueError("evaluation needs full frames: load the split with keep_image=True")
        frames, K, gv, gR, gt = batch["image"], batch["K"], batch["vertices"], batch["R"], batch["t"]
        b = frames.shape[0]

        def pipeline(net, **options):
            return run_pipeline(det, net, frames, K, c, margin, pnp_iterations, **options)

        # (b) stage-1 network: the detector, its crop, weighted PnP; the other rows reuse its landmarks
        out_b = pipeline(net1)
        lm68, A = out_b["landmarks68"], out_b["crop_affine"]
        out_a = pipeline(net1, landmarks68=lm68, solver="opencv", cv2_method=cv2_method)
        out_c = pipeline(net2, landmarks68=lm68)
        # diagnostic: (c) on crops around the ground-truth landmarks (a perfect detector)
        out_o = pipeline(net2, landmarks68=batch["landmarks68"])
        det_err.append((lm68 - batch["landmarks68"]).norm(dim=-1).mean(-1))
        gt_px = project_points(gv, gR, gt, K)
        in_crop = pyfacepnp.warp_points(gt_px, A)
        inside.append(((in_crop >= -0.5) & (in_crop <= c - 0.5)).all(-1).all(-1))
        _append(store, "baseline", pose_metrics(template.expand(b, -1, -1), base_R.expand(b, 3, 3),
                                                base_t.expand(b, 3), gv, gR, gt))
        for key, out in (("a", out_a), ("b", out_b), ("c", out_c)):
            fails[key] += _failed(out["pose"])
            _append(store, key, pose_metrics(out["pred"]["vertices"], out["pose"].R, out["pose"].t, gv, gR, gt))
        _append(oracle, "c", pose_metrics(out_o["pred"]["vertices"], out_o["pose"].R, out_o["pose"].t, gv, gR, gt))
        for key, out in (("a", out_a), ("c", out_c)):
            err = (out["pose"].landmarks_image - gt_px).norm(dim=-1)  # frame px, per vertex
            sigma = torch.exp(0.5 * out["pred"]["log_var"])
            sigma = sigma.mean(-1) if sigma.dim() == 3 else sigma
            diag[key].append(torch.stack([err.mean(-1), sigma.median(-1).values], -1))
        pc, p2 = out_c["pose"], out_c["pred"]
        for i in range(min(b, num_examples - len(res.examples))):
            res.examples.append({"image": batch["image"][i], "K": K[i], "R": pc.R[i], "t": pc.t[i],
                                 "vertices": p2["vertices"][i], "gt_R": gR[i], "gt_t": gt[i],
                                 "gt_vertices": gv[i], "crop_affine": A[i]})
        res.n += b
    res.per_sample = {m: {k: np.concatenate(v) for k, v in d.items()} for m, d in store.items()}
    res.failures = fails
    res.detector = {"landmark68_error_px": float(torch.cat(det_err).mean()),
                    "face_inside_crop": float(torch.cat(inside).float().mean())}
    for key, name in (("a", "stage1"), ("c", "stage2")):
        d = torch.cat(diag[key])
        res.diagnostics[name] = {"dense_landmark_error_px": float(d[:, 0].mean()),
                                 "median_sigma_crop_px": float(d[:, 1].mean())}
    res.diagnostics["c_with_gt_crops"] = {k: float(np.mean(np.concatenate(v))) for k, v in oracle["c"].items()}
    return res
