"""Held-out evaluation: the comparison table of the pipeline's variants.

Rows (all on the same detector crops of the same frames):

- ``baseline``: mean shape (the face model's template) at the mean training pose.
- ``(a) stage-1 + cv2.solvePnP``: the network trained by stage 1, pose by OpenCV SQPnP
  + LM refinement on all 1220 predicted points, unweighted (the 1st-place recipe).
- ``(b) stage-1 + solve_pnp``: the same predictions, pose by ``pyfacepnp.solve_pnp``
  with weights 1/sigma^2.
- ``(c) end-to-end + solve_pnp``: the network after stage-2 fine-tuning through the op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

import pyfacepnp
from pyfacepnp.eval.posthoc import cv2_solve_pnp
from pyfacepnp.models.coords import warp_image
from pyfacepnp.models.pipeline import crop_affine
from pyfacepnp.models.pose import project_points, solve_pose
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
    from pyfacepnp import metrics as M

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


@torch.no_grad()
def evaluate(bundle: dict, source, face_model, batch_size: int = 32, pnp_iterations: int = 50,
             cv2_method: str = "sqpnp", num_examples: int = 4, progress: bool = True) -> EvalResult:
    """Evaluate every method of :data:`METHODS` on a split (needs its full ``image``).

    Args:
        bundle: :func:`pyfacepnp.train.load_bundle` output.
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
        frames = batch["image"].float() / 255.0
        K, gv, gR, gt = batch["K"], batch["vertices"], batch["R"], batch["t"]
        b = frames.shape[0]
        # detector and crop
        lm68 = det(frames)
        A = crop_affine(lm68, c, margin)
        det_err.append((lm68 - batch["landmarks68"]).norm(dim=-1).mean(-1))
        gt_px = project_points(gv, gR, gt, K)
        in_crop = pyfacepnp.warp_points(gt_px, A)
        inside.append(((in_crop >= -0.5) & (in_crop <= c - 0.5)).all(-1).all(-1))
        crop = warp_image(frames, A, c)
        # baseline
        _append(store, "baseline", pose_metrics(template.expand(b, -1, -1), base_R.expand(b, 3, 3),
                                                base_t.expand(b, 3), gv, gR, gt))
        # (a), (b): stage-1 network
        p1 = net1(crop)
        lm_img1 = pyfacepnp.warp_points(p1["landmarks"], pyfacepnp.invert_affine(A))
        Ra, ta, oka = cv2_solve_pnp(p1["vertices"], lm_img1, K, cv2_method)
        fails["a"] += int((~oka).sum())
        _append(store, "a", pose_metrics(p1["vertices"], Ra, ta, gv, gR, gt))
        pb = solve_pose(p1["vertices"], p1["landmarks"], p1["log_var"], A, K, max_iterations=pnp_iterations)
        fails["b"] += int((pb.status != int(pyfacepnp.PnPStatus.CONVERGED)).sum())
        _append(store, "b", pose_metrics(p1["vertices"], pb.R, pb.t, gv, gR, gt))
        # (c): end-to-end network
        p2 = net2(crop)
        pc = solve_pose(p2["vertices"], p2["landmarks"], p2["log_var"], A, K, max_iterations=pnp_iterations)
        fails["c"] += int((pc.status != int(pyfacepnp.PnPStatus.CONVERGED)).sum())
        _append(store, "c", pose_metrics(p2["vertices"], pc.R, pc.t, gv, gR, gt))
        # diagnostic: (c) on crops around the ground-truth landmarks (a perfect detector)
        A_gt = crop_affine(batch["landmarks68"], c, margin)
        p2o = net2(warp_image(frames, A_gt, c))
        po = solve_pose(p2o["vertices"], p2o["landmarks"], p2o["log_var"], A_gt, K, max_iterations=pnp_iterations)
        _append(oracle, "c", pose_metrics(p2o["vertices"], po.R, po.t, gv, gR, gt))
        for key, p, lm_img in (("a", p1, lm_img1), ("c", p2, pc.landmarks_image)):
            err = (lm_img - gt_px).norm(dim=-1)  # frame px, per vertex
            sigma = torch.exp(0.5 * p["log_var"])
            sigma = sigma.mean(-1) if sigma.dim() == 3 else sigma
            diag[key].append(torch.stack([err.mean(-1), sigma.median(-1).values], -1))
        if len(res.examples) < num_examples:
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
