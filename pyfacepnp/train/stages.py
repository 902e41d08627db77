"""The pipeline's training stages and the entry point that runs them in order.

1. ``detector``: coarse 68-landmark detector on the downscaled frame (L1).
2. ``stage1``: the two branches on their own: vertex L1 + Gaussian NLL of every vertex's
   crop pixel + edge-length L1.
3. ``stage2``: end to end through ``solve_pnp`` (weights 1/sigma^2): the WCPA
   camera-space distances, averaged over the samples whose PnP converged, plus the
   stage-1 terms at a small weight so sigma stays a calibrated uncertainty.
"""

from __future__ import annotations

import copy
import json
import os

import torch
from torch import nn

import pyfacepnp
from pyfacepnp.config import RunConfig
from pyfacepnp.metrics import wcpa_terms
from pyfacepnp.models.coords import pixels_to_normalized, warp_image
from pyfacepnp.models.detector import LandmarkDetector, heatmap_cross_entropy
from pyfacepnp.models.face_net import FaceNet
from pyfacepnp.models.pose import project_points, solve_pose
from pyfacepnp.train import losses as L
from pyfacepnp.train.checkpoint import check_resume_config, load_checkpoint, remove_temporaries, save_atomic
from pyfacepnp.train.data import load_split, to_uint8
from pyfacepnp.train.distributed import DistInfo, barrier, init_distributed, shutdown
from pyfacepnp.train.loop import Stage, checkpoint_path, run_stage

STAGES = ("detector", "stage1", "stage2")


def build_models(cfg: RunConfig, face_model) -> tuple[LandmarkDetector, FaceNet]:
    """The detector and the two-branch network sized by ``cfg.model`` / ``cfg.data``."""
    m = cfg.model
    det = LandmarkDetector(cfg.data.detector_size, m.detector_widths, m.detector_depths,
                           m.detector_widths[0])
    net = FaceNet(face_model, cfg.data.crop_size, m.widths, m.depths, m.stem_width,
                  m.head_hidden, m.sigma, m.strides, m.pool_grid)
    return det, net


def default_face_model():
    from pyfacepnp.data.face_model import get_face_model

    return get_face_model()


def photometric(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 images -> float [0, 1] with random per-sample gain, bias and colour cast."""
    x = images.float() / 255.0
    b = x.shape[0]
    gain = 1.0 + 0.25 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    bias = 0.08 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    cast = 1.0 + 0.08 * (2 * torch.rand(b, 3, 1, 1, generator=gen) - 1)
    gain, bias, cast = (v.to(x.device) for v in (gain, bias, cast))
    return (x * gain * cast + bias).clamp(0, 1)


def full_precision(device: torch.device):
    """Leave autocast for the geometry (projections, PnP, losses): only the CNNs run in
    reduced precision; a bfloat16 projection would be off by pixels."""
    return torch.autocast(device_type=device.type, enabled=False)


def geometric_jitter(batch: dict, gen: torch.Generator, rotate: float = 0.12, scale: float = 0.08,
                     shift: float = 0.05) -> dict:
    """Random similarity re-crop of each sample (uniform rotation in +-``rotate`` rad, scale
    in +-``scale``, shift in +-``shift`` of the side about the crop centre).

    The crop is resampled and ``crop_affine`` composed with the same similarity, so every
    target derived from it (landmark pixels, PnP) stays exact. It multiplies the effective
    training set and covers the misalignment of detector crops.
    """
    with full_precision(batch["crop"].device):
        return _geometric_jitter(batch, gen, rotate, scale, shift)


def _geometric_jitter(batch, gen, rotate, scale, shift):
    crop = batch["crop"]
    b, c = crop.shape[0], crop.shape[-1]
    u = lambda: 2 * torch.rand(b, generator=gen) - 1  # noqa: E731
    ang, s = rotate * u(), 1.0 + scale * u()
    tx, ty = shift * c * u(), shift * c * u()
    centre = (c - 1) / 2.0
    cos, sin = s * torch.cos(ang), s * torch.sin(ang)
    S = torch.zeros(b, 3, 3)
    S[:, 0, 0], S[:, 0, 1], S[:, 1, 0], S[:, 1, 1] = cos, -sin, sin, cos
    S[:, 0, 2] = centre + tx - (cos * centre - sin * centre)
    S[:, 1, 2] = centre + ty - (sin * centre + cos * centre)
    S[:, 2, 2] = 1.0
    S = S.to(batch["crop_affine"])
    out = dict(batch)
    out["crop"] = to_uint8(warp_image(crop.float() / 255.0, S[:, :2], c))
    A3 = torch.cat([batch["crop_affine"], S.new_tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)], 1)
    out["crop_affine"] = (S @ A3)[:, :2]
    return out


def gt_crop_landmarks(batch: dict) -> torch.Tensor:
    """Crop pixels ``(B, N, 2)`` of every GT vertex (the landmark branch's target)."""
    img = project_points(batch["vertices"], batch["R"], batch["t"], batch["K"])
    return pyfacepnp.warp_points(img, batch["crop_affine"])


def detector_loss(model: nn.Module, batch: dict, gen: torch.Generator, heatmap_weight: float = 0.1):
    """L1 of the detector's normalised landmarks + heatmap cross-entropy; metric: mean
    error in frame pixels."""
    small = photometric(batch["small"], gen)
    pixels, logits = model(small, return_logits=True)
    with full_precision(small.device):
        pred = pixels_to_normalized(pixels.float(), small.shape[-1])  # it answers in input pixels
        size = batch["frame_size"].reshape(-1, 1, 1)
        target = pixels_to_normalized(batch["landmarks68"], size)
        loss = (pred - target).abs().mean() + heatmap_weight * heatmap_cross_entropy(logits.float(), target)
    with torch.no_grad():
        px = ((pred - target).norm(dim=-1) * size[..., 0] / 2.0).mean()
    return loss, {"lm68_px": float(px)}


def branch_losses(cfg: RunConfig, pred: dict, batch: dict, edges: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Per-sample stage-1 loss ``(B,)`` and its metrics."""
    tc = cfg.train
    target = gt_crop_landmarks(batch)
    l_vert = L.vertex_l1(pred["vertices"], batch["vertices"])
    l_nll = L.gaussian_nll(pred["landmarks"], pred["log_var"], target, beta=tc.nll_beta)
    l_edge = L.edge_length_l1(pred["vertices"], batch["vertices"], edges)
    per_sample = tc.vertex_weight * l_vert + tc.nll_weight * l_nll + tc.edge_weight * l_edge
    if tc.coeff_weight > 0 and "id_coeffs" in batch:
        # Coefficients are ~unit scale, so each component gets a well-conditioned gradient;
        # the vertex L1 alone favours the few components with large displacements.
        gt_coeffs = torch.cat([batch["id_coeffs"], batch["exp_coeffs"]], -1)
        per_sample = per_sample + tc.coeff_weight * ((pred["coeffs"] - gt_coeffs) ** 2).mean(-1)
    with torch.no_grad():
        lm_px = (pred["landmarks"] - target).norm(dim=-1).mean()
        sigma = torch.exp(0.5 * pred["log_var"]).median()
    return per_sample, {"vertex_l1_mm": float(l_vert.detach().mean()), "nll": float(l_nll.detach().mean()),
                        "edge_mm": float(l_edge.detach().mean()), "lm_px": float(lm_px),
                        "sigma_px": float(sigma)}


def make_stage1_loss(cfg: RunConfig, edges: torch.Tensor):
    def loss_fn(model, batch, gen):
        batch = geometric_jitter(batch, gen)
        pred = model(photometric(batch["crop"], gen))
        with full_precision(batch["crop"].device):
            per_sample, metrics = branch_losses(cfg, pred, batch, edges.to(batch["crop"].device))
        return per_sample.mean(), metrics

    return loss_fn


def make_stage2_loss(cfg: RunConfig, edges: torch.Tensor):
    tc = cfg.train

    def loss_fn(model, batch, gen):
        batch = geometric_jitter(batch, gen)
        pred = model(photometric(batch["crop"], gen))
        with full_precision(batch["crop"].device):
            return _stage2_terms(pred, batch)

    def _stage2_terms(pred, batch):
        pose = solve_pose(pred["vertices"], pred["landmarks"], pred["log_var"], batch["crop_affine"],
                          batch["K"], max_iterations=tc.pnp_max_iterations)
        ok = pose.status == int(pyfacepnp.PnPStatus.CONVERGED)
        # Failed problems get the GT pose (detached) in place of theirs: their terms are masked
        # out anyway, and this keeps a bad pose from putting NaN/inf into any backward pass.
        R = torch.where(ok[:, None, None], pose.R, batch["R"].detach())
        t = torch.where(ok[:, None], pose.t, batch["t"].detach())
        terms = wcpa_terms(pred["vertices"], R, t, batch["vertices"], batch["R"], batch["t"])
        cam = tc.camera_weight * terms.d12 + tc.gt_shape_pose_weight * terms.d13 + tc.shape_weight * terms.d14
        branch, metrics = branch_losses(cfg, pred, batch, edges.to(batch["crop"].device))
        loss = L.masked_mean(cam, ok) + tc.stage2_branch_weight * branch.mean()
        with torch.no_grad():
            metrics.update(wcpa=float(L.masked_mean(terms.score, ok)),
                           camera_mm=float(L.masked_mean(terms.d12, ok)),
                           pnp_failed=float((~ok).float().mean()))
        return loss, metrics

    return loss_fn


def train_statistics(train) -> dict:
    """Means used to initialise the heads and the trivial baseline (from the train split)."""
    t = train.tensors
    lm_crop = gt_crop_landmarks({k: t[k] for k in ("vertices", "R", "t", "K", "crop_affine")})
    R_mean = t["R"].mean(0)
    U, _, Vh = torch.linalg.svd(R_mean)
    R_proj = U @ torch.diag(torch.tensor([1.0, 1.0, float(torch.linalg.det(U @ Vh))])) @ Vh
    return {"mean_crop_landmarks": lm_crop.mean(0), "mean_R": R_proj, "mean_t": t["t"].mean(0),
            "mean_vertices": t["vertices"].mean(0)}


def _with_frame_size(batch_source, size: int):
    """Attach the frame size to each batch of an in-memory split (the detector's target scale)."""
    batch_source.tensors["frame_size"] = torch.full((len(batch_source),), float(size))
    return batch_source


def run_training(cfg: RunConfig, resume: bool = False, face_model=None, stop_after: dict | None = None,
                 info: DistInfo | None = None) -> dict:
    """Train detector, stage 1 and stage 2; write ``<run>/model.pt`` and ``train_summary.json``.

    Works in a single process or under ``torchrun`` (DDP; gloo on CPU, NCCL on GPU).
    ``stop_after`` maps a stage name to a step count at which to stop (resume tests).

    With ``resume`` each stage continues from its checkpoint (an interrupted one from its
    last step, a finished one only up to a raised step count; when stage 1 trains on,
    stage 2 is trained again from its new weights); a configuration that differs from a
    checkpoint's in more than the step counts is refused (:func:`check_resume_config`).
    Leftover checkpoint temporaries of the run folder are deleted on every start.

    Returns:
        dict with each stage's summary and the path of the model bundle.
    """
    own_group = info is None
    info = info or init_distributed(cfg.device)
    try:
        return _run_training(cfg, resume, face_model, stop_after or {}, info)
    finally:
        if own_group:
            shutdown(info)


def _run_training(cfg, resume, face_model, stop_after, info):
    if resume:
        check_resume_config(cfg, [checkpoint_path(cfg.run_dir, stage) for stage in STAGES])
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if info.is_main:
        os.makedirs(cfg.run_dir, exist_ok=True)
        for folder in (cfg.run_dir, os.path.dirname(checkpoint_path(cfg.run_dir, STAGES[0]))):
            remove_temporaries(folder)
        cfg.save(os.path.join(cfg.run_dir, "config.json"))
    face_model = face_model or default_face_model()
    train = load_split(cfg.data, "train", info)
    _with_frame_size(train, cfg.data.image_size)
    stats = train_statistics(train)
    # Seed just before initialising: rendering the cache (or not, when it exists) must not
    # change the initial weights.
    torch.manual_seed(cfg.train.seed)
    det, net = build_models(cfg, face_model)
    net.landmark_head.set_mean_landmarks(stats["mean_crop_landmarks"])
    edges = L.edges_from_triangles(face_model.triangles)

    summaries = {}
    summaries["detector"] = run_stage(Stage("detector", det, cfg.train.detector_steps,
                                            cfg.train.detector_lr, detector_loss),
                                      cfg, train, info, resume, stop_after.get("detector"))
    if summaries["detector"]["steps"] < cfg.train.detector_steps:
        return {"stages": summaries, "stopped": True}
    summaries["stage1"] = run_stage(Stage("stage1", net, cfg.train.stage1_steps, cfg.train.lr,
                                          make_stage1_loss(cfg, edges)),
                                    cfg, train, info, resume, stop_after.get("stage1"))
    if any(s["steps"] < _steps(cfg, s["stage"]) for s in summaries.values()):
        return {"stages": summaries, "stopped": True}
    net2 = copy.deepcopy(net)
    # Stage 2 fine-tunes stage 1's weights: a checkpoint of it predates stage-1 steps trained now.
    stage1_trained = summaries["stage1"]["steps"] > summaries["stage1"].get("start", summaries["stage1"]["steps"])
    summaries["stage2"] = run_stage(Stage("stage2", net2, cfg.train.stage2_steps, cfg.train.stage2_lr,
                                          make_stage2_loss(cfg, edges)),
                                    cfg, train, info, resume and not stage1_trained, stop_after.get("stage2"))
    if summaries["stage2"]["steps"] < cfg.train.stage2_steps:
        return {"stages": summaries, "stopped": True}
    # (A stage skipped on resume loaded its finished weights inside run_stage.)
    bundle = os.path.join(cfg.run_dir, "model.pt")
    if info.is_main:
        save_atomic({"config": cfg.to_dict(), "detector": det.state_dict(), "stage1": net.state_dict(),
                     "stage2": net2.state_dict(),
                     "baseline": {"R": stats["mean_R"], "t": stats["mean_t"]}}, bundle)
        with open(os.path.join(cfg.run_dir, "train_summary.json"), "w") as f:
            json.dump(summaries, f, indent=2)
    barrier(info)
    return {"stages": summaries, "model": bundle, "detector": det, "stage1": net, "stage2": net2}


def _steps(cfg: RunConfig, stage: str) -> int:
    return {"detector": cfg.train.detector_steps, "stage1": cfg.train.stage1_steps,
            "stage2": cfg.train.stage2_steps}[stage]


def load_bundle(path: str, face_model=None, device="cpu") -> dict:
    """Models of a finished run from its ``model.pt`` (loaded with ``weights_only=True``).

    Returns:
        dict with ``config`` (RunConfig), ``detector``, ``stage1``, ``stage2`` (eval mode)
        and ``baseline`` (mean pose).
    """
    ck = load_checkpoint(path, map_location=device)
    for key in ("config", "detector", "stage1", "stage2"):
        if key not in ck:
            raise ValueError(f"checkpoint {path!r} is not a model bundle: missing {key!r} "
                             "(pass <run>/model.pt written at the end of training)")
    cfg = RunConfig.from_dict(ck["config"])
    face_model = face_model or default_face_model()
    det, net1 = build_models(cfg, face_model)
    _, net2 = build_models(cfg, face_model)
    det.load_state_dict(ck["detector"])
    net1.load_state_dict(ck["stage1"])
    net2.load_state_dict(ck["stage2"])
    out = {"config": cfg, "baseline": ck.get("baseline")}
    for k, m in (("detector", det), ("stage1", net1), ("stage2", net2)):
        out[k] = m.to(device).eval()
    return out
