"""One optimisation stage: AdamW, warm-up + cosine, clipping, AMP, DDP, logging, checkpoints."""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyfacepnp.config import RunConfig
from pyfacepnp.files import load_checkpoint, save_atomic
from pyfacepnp.train.checkpoint import checkpoint_path
from pyfacepnp.train.data import step_batches
from pyfacepnp.train.distributed import DistInfo, all_reduce_mean
from pyfacepnp.train.logger import MetricsLogger
from pyfacepnp.train.schedule import warmup_cosine

LossFn = Callable[[nn.Module, dict, torch.Generator], "tuple[torch.Tensor, dict]"]


@dataclass
class Stage:
    """What a stage optimises: ``module``'s parameters, for ``steps`` steps of ``loss_fn``.

    ``loss_fn(model, batch, generator)`` returns the scalar loss and a dict of float
    metrics; ``model`` is ``module`` or its DDP wrapper; ``generator`` is seeded by
    (seed, stream, step, rank) for augmentation, so a resumed run draws the same numbers.
    ``seed`` (default ``train.seed``) also fixes the batch order; ``stream`` (default
    ``name``) names the augmentation stream, so two stages with the same ``seed`` and
    ``stream`` (an end-to-end arm and its control) see the same batches and augmentation.
    """

    name: str
    module: nn.Module
    steps: int
    lr: float
    loss_fn: LossFn
    seed: int | None = None
    stream: str | None = None


def step_seed(seed: int, stage: str, step: int, rank: int) -> int:
    """A seed that is a stable function of its arguments (``hash`` of a str is not)."""
    return zlib.crc32(f"{seed}/{stage}/{step}/{rank}".encode())


def full_precision(device: torch.device):
    """Leave the loop's autocast for the geometry (projections, PnP, losses): only the CNNs
    run in reduced precision; a bfloat16 projection would be off by pixels."""
    return torch.autocast(device_type=device.type, enabled=False)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def run_stage(stage: Stage, cfg: RunConfig, source, info: DistInfo, resume: bool = False,
              stop_after: int | None = None) -> dict:
    """Train ``stage.module`` in place; returns a summary dict (steps, seconds, img/s...).

    Checkpoints (model, optimizer, step) are written atomically every
    ``train.checkpoint_every`` steps and at the end to ``<run>/checkpoints/<stage>.pt``.
    With ``resume`` the stage continues from its checkpoint at the exact step it reached.
    A finished stage is skipped when it reached ``stage.steps``; given a larger step count
    it trains on from its last step to the new count (with the learning-rate schedule of
    the new count, so not bit-identical to a run started with that count).
    ``stop_after`` ends the stage early after that many steps in total (used to test
    resuming), writing a checkpoint there.
    """
    tc = cfg.train
    device = info.device
    model = stage.module.to(device)
    # fused: one kernel for the whole update (the same algorithm; on CPU 2.9 ms against 7.6 ms
    # per step of the cpu preset's face network, about 4 % of a training step)
    opt = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=tc.weight_decay, fused=True)
    path = checkpoint_path(cfg.run_dir, stage.name)
    start = 0
    if resume and os.path.exists(path):
        ck = load_checkpoint(path, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = int(ck["step"])
        if ck.get("done", False) and start >= stage.steps:
            return {"stage": stage.name, "steps": start, "resumed": True, "skipped": True}
    wrapped: nn.Module = model
    if info.distributed:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    logger = MetricsLogger(os.path.join(cfg.run_dir, f"{stage.name}_log.csv"), resume_step=start,
                           enabled=info.is_main)
    use_amp = tc.amp and device.type == "cuda"
    end = stage.steps if stop_after is None else min(stage.steps, stop_after)

    def save(step: int, done: bool) -> None:
        if info.is_main:
            save_atomic({"stage": stage.name, "step": step, "done": done, "model": model.state_dict(),
                         "optimizer": opt.state_dict(), "config": cfg.to_dict()}, path)

    from tqdm import tqdm

    bar = tqdm(total=stage.steps, initial=start, desc=stage.name, disable=not info.is_main,
               mininterval=1.0, dynamic_ncols=True)
    t_window, n_window, t_total, n_total, skipped = time.time(), 0, 0.0, 0, 0
    acc: dict[str, float] = {}
    n_acc = 0
    step = start
    seed = tc.seed if stage.seed is None else stage.seed
    stream = stage.name if stage.stream is None else stage.stream
    for step, batch in step_batches(source, tc.batch_size, start, end, seed, info):
        t0 = time.time()
        batch = _to_device(batch, device)
        gen = torch.Generator().manual_seed(step_seed(seed, stream, step, info.rank))
        lr = warmup_cosine(step, stage.steps, tc.warmup_steps, stage.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        with amp:
            loss, metrics = stage.loss_fn(wrapped, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        # Gradients are all-reduced, so every rank takes the same decision here.
        if torch.isfinite(grad_norm):
            opt.step()
        else:
            skipped += 1
        bs = next(v for v in batch.values() if torch.is_tensor(v)).shape[0] * info.world_size
        dt = time.time() - t0
        n_window += bs
        t_total += dt
        n_total += bs
        for k, v in {"loss": float(loss.detach()), **metrics}.items():
            acc[k] = acc.get(k, 0.0) + float(v)
        n_acc += 1
        if (step + 1) % tc.log_every == 0 or step + 1 == end:
            vals = torch.tensor([acc[k] / n_acc for k in acc], dtype=torch.float64)
            vals = all_reduce_mean(vals.to(device), info).cpu()
            row = dict(zip(acc.keys(), vals.tolist()))
            ips = n_window / max(1e-9, time.time() - t_window)
            row.update(lr=lr, grad_norm=float(grad_norm), img_per_s=ips, skipped=skipped)
            logger.log(step + 1, row, prefix=f"{stage.name}/")
            bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{ips:.0f}")
            acc, n_acc, t_window, n_window = {}, 0, time.time(), 0
        bar.update(1)
        if tc.checkpoint_every > 0 and (step + 1) % tc.checkpoint_every == 0 and step + 1 < end:
            save(step + 1, False)
    bar.close()
    logger.close()
    if info.distributed:
        # DDP syncs buffers at the start of each forward, so the last step's batch-norm
        # statistics are still per rank: take rank 0's, the ones its checkpoint holds.
        for buf in model.buffers():
            torch.distributed.broadcast(buf, 0)
    reached = end if end > start else start
    save(reached, reached >= stage.steps)
    return {"stage": stage.name, "steps": reached, "start": start, "seconds": t_total,
            "img_per_s": n_total / max(t_total, 1e-9), "skipped_steps": skipped}
