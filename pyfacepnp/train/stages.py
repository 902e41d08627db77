"""The pipeline's training stages, run in order by :func:`run_training` (orchestration only:
the networks come from :mod:`pyfacepnp.models.bundle`, the objectives from
:mod:`pyfacepnp.train.losses`, the optimisation from :mod:`pyfacepnp.train.loop`).

1. ``detector``: coarse 68-landmark detector on the downscaled frame (L1 + heatmaps).
2. ``stage1``: the two branches on their own: vertex L1 + Gaussian NLL of every vertex's
   crop pixel + edge-length L1; then the mesh head's identity readout is fit in closed form
   (:func:`pyfacepnp.train.readout.fit_identity_readout`).
3. ``stage2``: end to end through ``solve_pnp`` (weights 1/sigma^2): the WCPA
   camera-space distances, averaged over the samples whose PnP converged, plus the
   stage-1 terms at a small weight so sigma stays a calibrated uncertainty. It starts
   from stage 1's weights.

The end-to-end experiment adds further stage-2 runs from the same stage-1 weights
(:func:`stage2_arms`): one end-to-end arm (c) per seed of ``train.stage2_seeds`` and, with
``train.stage2_control``, its control arm (c0): the same run (steps, schedule, seed, batches,
augmentation draws) with the loss terms that flow through the PnP switched off
(:func:`pyfacepnp.train.losses.make_stage2_loss` with ``pnp_terms=False``).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from pyfacepnp.config import RunConfig, Stage2Arm, stage2_arms
from pyfacepnp.files import atomic_write, remove_temporaries
from pyfacepnp.geometry.mesh import edges_from_triangles
from pyfacepnp.models.bundle import build_models, default_face_model, save_bundle
from pyfacepnp.train.checkpoint import check_resume_config, checkpoint_path
from pyfacepnp.train.data import load_split
from pyfacepnp.train.distributed import DistInfo, barrier, init_distributed, shutdown
from pyfacepnp.train.losses import make_detector_loss, make_stage1_loss, make_stage2_loss
from pyfacepnp.train.loop import Stage, run_stage
from pyfacepnp.train.readout import fit_identity_readout
from pyfacepnp.train.statistics import train_statistics

__all__ = ["STAGES", "StageSpec", "Stage2Arm", "stage2_arms", "run_training"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline: its name, the ``train`` fields of its step count and
    learning rate, its objective factory ``make_loss(cfg, edges, scale_basis=None)``, the network it trains
    (``"detector"`` or ``"face"``) and, for a fine-tuning stage, the stage whose trained
    network it starts from (a copy)."""

    name: str
    steps_field: str
    lr_field: str
    make_loss: Callable
    network: str
    starts_from: Optional[str] = None

    def steps(self, cfg: RunConfig) -> int:
        return getattr(cfg.train, self.steps_field)


STAGES = (
    StageSpec("detector", "detector_steps", "detector_lr", make_detector_loss, "detector"),
    StageSpec("stage1", "stage1_steps", "lr", make_stage1_loss, "face"),
    StageSpec("stage2", "stage2_steps", "stage2_lr", make_stage2_loss, "face", starts_from="stage1"),
)


def _trained_now(summary: dict) -> bool:
    """Whether this call trained steps of a stage (not skipped as finished)."""
    return summary["steps"] > summary.get("start", summary["steps"])


def run_training(cfg: RunConfig, resume: bool = False, face_model=None, stop_after: dict | None = None,
                 info: DistInfo | None = None) -> dict:
    """Train detector, stage 1 and stage 2; write ``<run>/model.pt`` and ``train_summary.json``.

    Works in a single process or under ``torchrun`` (DDP; gloo on CPU, NCCL on GPU).
    ``stop_after`` maps a stage name to a step count at which to stop (resume tests).

    With ``resume`` each stage continues from its checkpoint (an interrupted one from its
    last step, a finished one only up to a raised step count; when stage 1 trains on,
    stage 2 is trained again from its new weights); a configuration that differs from a
    checkpoint's in more than the step counts is refused
    (:func:`~pyfacepnp.train.checkpoint.check_resume_config`). Leftover checkpoint
    temporaries of the run folder are deleted on every start.

    Returns:
        dict with each stage's summary (``stages``) and, when every stage finished, the
        path of the model bundle (``model``) and the trained networks by stage name;
        ``stopped: True`` instead when a stage stopped before its step count.
    """
    own_group = info is None
    info = info or init_distributed(cfg.device)
    try:
        return _run_training(cfg, resume, face_model, stop_after or {}, info)
    finally:
        if own_group:
            shutdown(info)


def _run_training(cfg, resume, face_model, stop_after, info):
    arms = stage2_arms(cfg)
    if resume:
        names = [spec.name for spec in STAGES] + [a.name for a in arms if a.name != "stage2"]
        check_resume_config(cfg, [checkpoint_path(cfg.run_dir, n) for n in names])
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if info.is_main:
        os.makedirs(cfg.run_dir, exist_ok=True)
        for folder in (cfg.run_dir, os.path.dirname(checkpoint_path(cfg.run_dir, STAGES[0].name))):
            remove_temporaries(folder)
        cfg.save(os.path.join(cfg.run_dir, "config.json"))
    face_model = face_model or default_face_model()
    train = load_split(cfg.data, "train", info)
    train.tensors["frame_size"] = torch.full((len(train),), float(cfg.data.image_size))  # detector's scale
    stats = train_statistics(train)
    # Seed just before initialising: rendering the cache (or not, when it exists) must not
    # change the initial weights.
    torch.manual_seed(cfg.train.seed)
    det, net = build_models(cfg, face_model)
    net.landmark_head.set_mean_landmarks(stats["mean_crop_landmarks"])
    fresh = {"detector": det, "face": net}
    edges = edges_from_triangles(face_model.triangles)
    scale_basis = None
    if cfg.train.scale_free:
        if tuple(getattr(face_model, "id_names", ()))[:1] != ("scale",):
            raise ValueError("train.scale_free needs a face model whose first identity component is 'scale'")
        scale_basis = torch.tensor(face_model.id_basis[0], dtype=torch.float32)

    trained, summaries = {}, {}
    runs = []  # (name, spec, stage keywords): the three stages, then the further stage-2 arms
    for spec in STAGES:
        if spec.name != "stage2":
            runs.append((spec.name, spec, {}, None))
    for arm in arms:
        # Every arm: the stage-2 stream at seed train.seed + arm.seed, so (c, s) and (c0, s)
        # see the same batches and augmentation draws.
        runs.append((arm.name, STAGES[2], {"seed": cfg.train.seed + arm.seed, "stream": "stage2"}, arm))
    for name, spec, keywords, arm in runs:
        module = fresh[spec.network] if spec.starts_from is None else copy.deepcopy(trained[spec.starts_from])
        # A fine-tuning stage's checkpoint predates steps its starting stage trained now.
        stage_resume = resume and not (spec.starts_from and _trained_now(summaries[spec.starts_from]))
        loss = (spec.make_loss(cfg, edges, scale_basis=scale_basis) if arm is None else
                make_stage2_loss(cfg, edges, pnp_terms=arm.arm == "c", scale_basis=scale_basis))
        stage = Stage(name, module, spec.steps(cfg), getattr(cfg.train, spec.lr_field), loss, **keywords)
        # (A stage skipped on resume loads its finished weights inside run_stage.)
        summaries[name] = run_stage(stage, cfg, train, info, stage_resume, stop_after.get(name))
        finished = summaries[name]["steps"] >= spec.steps(cfg)
        if name == "stage1" and finished and module.mesh_head.readout is not None and "id_coeffs" in train.tensors:
            # every rank fits the same map from the same weights and split (deterministic)
            summaries[name]["identity_readout"] = fit_identity_readout(module, train, cfg.train.readout_ridge)
        if arm is not None:
            summaries[name].update(arm=arm.arm, seed=arm.seed)
        trained[name] = module
        if not finished:
            return {"stages": summaries, "stopped": True}

    bundle = os.path.join(cfg.run_dir, "model.pt")
    if info.is_main:
        save_bundle(bundle, cfg, trained["detector"], trained["stage1"], trained["stage2"],
                    {"R": stats["mean_R"], "t": stats["mean_t"]},
                    arms={a.name: trained[a.name] for a in arms if a.name != "stage2"})
        atomic_write(os.path.join(cfg.run_dir, "train_summary.json"),
                     lambda f: f.write(json.dumps(summaries, indent=2).encode()))
    barrier(info)
    return {"stages": summaries, "model": bundle, **trained}
