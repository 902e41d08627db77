"""Held-out evaluation: the comparison table of the pipeline's variants.

Rows (all on the same detector crops of the same frames):

- ``baseline``: mean shape (the face model's template) at the mean training pose.
- ``(a) stage-1 + cv2.solvePnP``: the network trained by stage 1, pose by OpenCV SQPnP
  + LM refinement on all 1220 predicted points, unweighted (the 1st-place recipe).
- ``(b) stage-1 + solve_pnp``: the same predictions, pose by ``pyfacepnp.solve_pnp``
  with weights 1/sigma^2.
- ``(c) end-to-end + solve_pnp``: the network after stage-2 fine-tuning through the op,
  one run per stage-2 seed (the row: the mean over seeds).
- ``(c0) control``: the same stage-2 runs with the loss terms that flow through the PnP
  switched off (the end-to-end experiment's control arm; the row: the mean over seeds).

Beside them, two oracle floors that need no network: the template shape posed by PnP on
the exact projections of the ground-truth vertices, and the ground-truth shape without its
scale component (the one thing no image can show) posed the same way.

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
from pyfacepnp.models.pose import solve_pose
from pyfacepnp.train.data import iterate_split

METHODS = {
    "baseline": "trivial baseline (mean shape, mean pose)",
    "a": "(a) stage-1 net + cv2.solvePnP (SQPnP+LM, unweighted)",
    "b": "(b) stage-1 net + pyfacepnp.solve_pnp (1/sigma^2)",
    "c": "(c) end-to-end net + pyfacepnp.solve_pnp (1/sigma^2)",
    "c0": "(c0) control: stage 2 without the PnP terms + solve_pnp",
}
ORACLES = {
    "template_exact_landmarks": "oracle: template shape, exact landmarks",
    "all_but_scale": "oracle: everything known but the identity scale",
}
METRIC_NAMES = ("wcpa", "d12", "d13", "d14", "rotation_deg", "translation_mm", "vertex_mm")


def pose_metrics(pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t) -> dict:
    """Per-sample metrics (numpy ``(B,)``) from :mod:`pyfacepnp.metrics`."""
    args = [x.detach().cpu().double() for x in (pred_vertices, pred_R, pred_t, gt_vertices, gt_R, gt_t)]
    pv, pR, pt, gv, gR, gt = args
    terms = M.wcpa_terms(pv, pR, pt, gv, gR, gt)
    out = {
        "wcpa": terms.score, "d12": terms.d12, "d13": terms.d13, "d14": terms.d14,
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
    # the stage-2 runs: "c@<seed>" / "c0@<seed>" -> metric -> (n,) array ("c" and "c0" in
    # per_sample are their per-sample means over seeds)
    per_run: dict = field(default_factory=dict)
    run_failures: dict = field(default_factory=dict)
    identities: np.ndarray | None = None  # (n,) identity of every sample
    oracles: dict = field(default_factory=dict)  # oracle -> metric -> mean
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
            runs = self.seeds(m)
            if runs:
                label += f", mean of {len(runs)} seed{'s' if len(runs) > 1 else ''}"
            total = self.n * max(1, len(runs))
            lines.append(f"| {label} | {r['wcpa']:.2f} | {r['rotation_deg']:.2f} | "
                         f"{r['translation_mm']:.2f} | {r['vertex_mm']:.3f} | {fail}/{total} |")
        for m, label in ORACLES.items():
            if m in self.oracles:
                r = self.oracles[m]
                lines.append(f"| {label} | {r['wcpa']:.2f} | {r['rotation_deg']:.2f} | "
                             f"{r['translation_mm']:.2f} | {r['vertex_mm']:.3f} | - |")
        return "\n".join(lines)

    def seeds(self, arm: str) -> list[int]:
        """The stage-2 seeds evaluated for ``arm`` (``"c"`` or ``"c0"``)."""
        return sorted(int(k.split("@")[1]) for k in self.per_run if k.split("@")[0] == arm)


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
    arms = bundle.get("arms") or [{"name": "stage2", "arm": "c", "seed": 0, "net": net2}]
    run_keys = [f"{a['arm']}@{a['seed']}" for a in arms]
    c, margin = cfg.data.crop_size, cfg.data.crop_margin
    template = torch.tensor(np.array(face_model.template), dtype=torch.float32)
    base_R, base_t = bundle["baseline"]["R"].float().cpu(), bundle["baseline"]["t"].float().cpu()
    res = EvalResult()
    store: dict = {}
    runs: dict = {}
    oracle: dict = {}
    floors: dict = {}
    identities = []
    det_err, inside, diag = [], [], {"a": [], "c": []}
    fails = {"a": 0, "b": 0}
    run_fails = dict.fromkeys(run_keys, 0)
    scale_basis = None
    if getattr(face_model, "id_names", ())[:1] == ("scale",):
        scale_basis = torch.tensor(np.array(face_model.id_basis[0]), dtype=torch.float32)
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
        outs = {key: pipeline(a["net"], landmarks68=lm68) for key, a in zip(run_keys, arms)}
        out_c = outs[run_keys[0]]  # the first end-to-end run (stage2): diagnostics, overlays
        # diagnostic: (c) on crops around the ground-truth landmarks (a perfect detector)
        out_o = pipeline(net2, landmarks68=batch["landmarks68"])
        det_err.append((lm68 - batch["landmarks68"]).norm(dim=-1).mean(-1))
        gt_px = project_points(gv, gR, gt, K)
        in_crop = pyfacepnp.warp_points(gt_px, A)
        inside.append(((in_crop >= -0.5) & (in_crop <= c - 0.5)).all(-1).all(-1))
        _append(store, "baseline", pose_metrics(template.expand(b, -1, -1), base_R.expand(b, 3, 3),
                                                base_t.expand(b, 3), gv, gR, gt))
        for key, out in (("a", out_a), ("b", out_b)):
            fails[key] += _failed(out["pose"])
            _append(store, key, pose_metrics(out["pred"]["vertices"], out["pose"].R, out["pose"].t, gv, gR, gt))
        for key, out in outs.items():
            run_fails[key] += _failed(out["pose"])
            _append(runs, key, pose_metrics(out["pred"]["vertices"], out["pose"].R, out["pose"].t, gv, gR, gt))
        identities.append(batch["identity"].long() if "identity" in batch
                          else torch.arange(res.n, res.n + b))  # no identities: every sample its own
        # oracle floors: PnP (uniform weights) on the exact projections of the GT vertices
        eye = torch.eye(3)[:2].expand(b, 2, 3)
        shapes = {"template_exact_landmarks": template.expand(b, -1, -1)}
        if scale_basis is not None and "id_coeffs" in batch:
            shapes["all_but_scale"] = gv - batch["id_coeffs"][:, :1, None] * scale_basis
        for key, shape in shapes.items():
            pose = solve_pose(shape, gt_px, None, eye, K, max_iterations=pnp_iterations)
            _append(floors, key, pose_metrics(shape, pose.R, pose.t, gv, gR, gt))
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
    res.per_run = {m: {k: np.concatenate(v) for k, v in d.items()} for m, d in runs.items()}
    for arm in ("c", "c0"):
        keys = [k for k in run_keys if k.split("@")[0] == arm]
        if keys:
            res.per_sample[arm] = {m: np.mean([res.per_run[k][m] for k in keys], axis=0)
                                   for m in res.per_run[keys[0]]}
            fails[arm] = sum(run_fails[k] for k in keys)
    res.failures = fails
    res.run_failures = run_fails
    res.identities = torch.cat(identities).numpy()
    res.oracles = {m: {k: float(np.mean(np.concatenate(v))) for k, v in d.items()} for m, d in floors.items()}
    res.detector = {"landmark68_error_px": float(torch.cat(det_err).mean()),
                    "face_inside_crop": float(torch.cat(inside).float().mean())}
    for key, name in (("a", "stage1"), ("c", "stage2")):
        d = torch.cat(diag[key])
        res.diagnostics[name] = {"dense_landmark_error_px": float(d[:, 0].mean()),
                                 "median_sigma_crop_px": float(d[:, 1].mean())}
    res.diagnostics["c_with_gt_crops"] = {k: float(np.mean(np.concatenate(v))) for k, v in oracle["c"].items()}
    return res
