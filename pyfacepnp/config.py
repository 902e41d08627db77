"""Run configuration of the face pipeline: one dataclass tree, presets, dotted overrides.

Every run saves its resolved configuration as ``config.json`` beside its outputs, and a
checkpoint carries the same dictionary, so a run can be reproduced or resumed from it.
Any field can be set as ``{"section.field": value}`` (:func:`set_dotted`, values may be
strings); the command line (:mod:`pyfacepnp.cli`) offers each as ``--section.field VALUE``
(e.g. ``--train.batch_size 64 --model.widths 32,64,128,256``).

(A little over 300 lines on purpose: the dataclasses are the documentation of every setting,
one docstring line each, and the presets and the override parser read them as one tree.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from pyfacepnp.files import atomic_write


@dataclass
class DataConfig:
    """Where samples come from and how they are sized.

    ``source="synthetic"`` renders the embedded synthetic set (``*_samples`` per split,
    deterministic by ``seed``) once and caches it under ``cache_dir``;
    ``source="wcpa"`` reads a WCPA track-2 folder at ``root`` (``*_list`` name its csv lists).
    ``identity_pool``: 0 (default) draws a new identity for every synthetic sample; N > 0
    draws each split's identities from a pool of N. ``crop_margin`` shapes the crops of
    training (the cache), evaluation and ``predict`` alike.
    """

    source: str = "synthetic"
    root: str = ""
    train_list: str = ""
    val_list: str = ""
    test_list: str = ""
    train_samples: int = 4000
    val_samples: int = 100
    test_samples: int = 1000
    identity_pool: int = 0
    image_size: int = 400
    crop_size: int = 128
    detector_size: int = 128
    crop_margin: float = 0.25
    seed: int = 0
    cache_dir: str = "runs/cache"
    render_workers: int = 2


@dataclass
class ModelConfig:
    """Network sizes. ``widths``/``depths`` give the ResNet stages of the shared backbone."""

    widths: tuple = (16, 32, 64, 128)
    depths: tuple = (1, 1, 1, 1)
    stem_width: int = 16
    strides: tuple = (2, 2, 2, 1)  # per stage; a last stride of 1 keeps a finer map for the heads
    pool_grid: int = 8  # the heads read a pool_grid x pool_grid pooled map
    # backbone stages (0 = finest) the landmark refiner samples at each landmark; () = no refiner
    refine_maps: tuple = ()
    # the mesh head's identity readout of both heads' hidden features, fit in closed form
    # after stage 1 (train.readout_ridge) on data sets with face-model coefficients
    identity_readout: bool = False
    head_hidden: int = 256
    sigma: str = "per_axis"  # "per_axis": (N, 2) log-variances, "per_point": (N,)
    detector_widths: tuple = (16, 32, 48, 64)
    detector_depths: tuple = (1, 1, 1, 1)


@dataclass
class TrainConfig:
    """Optimisation of the three stages: detector, branches (stage 1), end to end (stage 2)."""

    batch_size: int = 32
    detector_steps: int = 1500
    stage1_steps: int = 2400
    stage2_steps: int = 400
    lr: float = 2e-3
    detector_lr: float = 2e-3
    stage2_lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 5.0
    amp: bool = True  # bfloat16 autocast of the CNN on CUDA; ignored on CPU
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    # stage 1 loss weights
    vertex_weight: float = 1.0
    nll_weight: float = 1.0
    nll_beta: float = 0.5  # beta-NLL weighting of the landmark NLL (0: plain Gaussian NLL)
    edge_weight: float = 0.5
    coeff_weight: float = 1.0  # MSE on the face model coefficients (synthetic data only)
    readout_ridge: float = 0.03  # relative ridge penalty of the identity readout's fit
    # The identity's global scale cannot be seen in an image (a larger face farther away looks
    # the same): with scale_free, the branch terms' shape targets (vertices, edges, the scale
    # coefficient) are the ground truth without its scale component, i.e. at the mean scale
    # (synthetic data, face models whose first identity component is "scale"). The camera-space
    # terms and the metric keep the true shape.
    scale_free: bool = False
    # stage 2 loss weights (camera-space terms in mm, as in the WCPA score) + stage-1 terms kept
    camera_weight: float = 1.0
    gt_shape_pose_weight: float = 1.0
    shape_weight: float = 10.0
    stage2_branch_weight: float = 0.1
    pnp_max_iterations: int = 30
    # what flows through the PnP in the end-to-end arm: "wcpa" (d12 + d13 of the solved pose)
    # or "pose_nll" (the Laplace negative log-likelihood of the GT pose, pyfacepnp.pose_nll,
    # at pose_nll_weight, in place of d12 and d13)
    stage2_pnp_loss: str = "wcpa"
    pose_nll_weight: float = 0.01
    # the end-to-end experiment: one stage-2 run per seed (stage 1 shared), each with its
    # control arm (c0: the same run with the loss terms that flow through the PnP, d12 and
    # d13, switched off) when stage2_control is on
    stage2_seeds: tuple = (0, 1, 2)
    stage2_control: bool = True


@dataclass
class RunConfig:
    """A whole run: name, output folder, device, and the three sections."""

    name: str = "demo"
    out_dir: str = "runs"
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    threads: int = 0  # torch intra-op threads on CPU (0: torch's default)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> str:
        return os.path.join(self.out_dir, self.name)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        cfg = cls()
        for key, value in d.items():
            if key in ("data", "model", "train"):
                section = getattr(cfg, key)
                for k, v in value.items():
                    _set_field(section, k, v, f"{key}.{k}")
            else:
                _set_field(cfg, key, value, key)
        return cfg

    def save(self, path: str) -> None:
        """Write the configuration as JSON (atomically)."""
        atomic_write(path, lambda f: f.write(json.dumps(self.to_dict(), indent=2).encode()))

    @classmethod
    def load(cls, path: str) -> "RunConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))


# Presets: "cpu" fits the demo's budget on 2 cores, "gpu" is a ResNet-18-sized network on
# 256 px crops, "quick" is a smoke test that exercises every stage in well under 2 minutes.
PRESETS: dict[str, dict] = {
    "cpu": {},
    "gpu": {
        "data": {"train_samples": 20000, "val_samples": 500, "test_samples": 1000,
                 "image_size": 800, "crop_size": 256, "detector_size": 192,
                 "render_workers": 8},
        "model": {"widths": (64, 128, 256, 512), "depths": (2, 2, 2, 2), "stem_width": 64,
                  "strides": (2, 2, 2, 2), "pool_grid": 8,
                  "head_hidden": 512, "detector_widths": (32, 64, 128, 256)},
        "train": {"batch_size": 128, "detector_steps": 3000, "stage1_steps": 20000,
                  "stage2_steps": 5000, "checkpoint_every": 1000, "log_every": 50},
    },
    "quick": {
        "data": {"train_samples": 96, "val_samples": 16, "test_samples": 24,
                 "image_size": 192, "crop_size": 64, "detector_size": 64},
        "model": {"widths": (8, 16, 32, 32), "stem_width": 8, "head_hidden": 64, "pool_grid": 4,
                  "detector_widths": (8, 16, 16, 32)},
        "train": {"batch_size": 16, "detector_steps": 20, "stage1_steps": 40,
                  "stage2_steps": 10, "warmup_steps": 5, "checkpoint_every": 20,
                  "log_every": 5, "stage2_seeds": (0, 1)},
    },
}


def make_config(preset: str = "cpu", overrides: dict | None = None, **top) -> RunConfig:
    """Build a configuration from a preset plus ``{"section.field": value}`` overrides.

    Example:
        >>> cfg = make_config("quick", {"train.batch_size": 8}, name="smoke")
        >>> cfg.train.batch_size, cfg.name
        (8, 'smoke')
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    cfg = RunConfig.from_dict(PRESETS[preset])
    for key, value in top.items():
        _set_field(cfg, key, value, key)
    for dotted, value in (overrides or {}).items():
        set_dotted(cfg, dotted, value)
    return cfg


@dataclass(frozen=True)
class Stage2Arm:
    """One stage-2 run of the experiment: ``arm`` ``"c"`` (end to end) or ``"c0"``
    (control), its seed offset ``seed`` (the run's seed is ``train.seed + seed``) and its
    stage name (checkpoint, log). The first end-to-end arm is ``stage2`` itself."""

    name: str
    arm: str
    seed: int


def stage2_arms(cfg: RunConfig) -> list[Stage2Arm]:
    """Every stage-2 run of ``cfg``: ``(c, seed)`` for each of ``train.stage2_seeds`` (the
    first named ``stage2``) and, with ``train.stage2_control``, ``(c0, seed)`` after it.

    Example:
        >>> [a.name for a in stage2_arms(make_config("quick"))]
        ['stage2', 'stage2_c0_s0', 'stage2_c_s1', 'stage2_c0_s1']
    """
    seeds = tuple(cfg.train.stage2_seeds) or (0,)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"train.stage2_seeds must be distinct, got {seeds}")
    arms = []
    for i, seed in enumerate(seeds):
        arms.append(Stage2Arm("stage2" if i == 0 else f"stage2_c_s{seed}", "c", int(seed)))
        if cfg.train.stage2_control:
            arms.append(Stage2Arm(f"stage2_c0_s{seed}", "c0", int(seed)))
    return arms


# Fields a resumed run may change: the stages' step counts (a finished stage trains on to a
# larger count) and bookkeeping that changes nothing that is computed (where the run and
# the data cache live, threads, logging and checkpoint intervals).
RESUME_MAY_DIFFER = frozenset({
    "train.detector_steps", "train.stage1_steps", "train.stage2_steps",
    "name", "out_dir", "threads", "data.cache_dir", "data.render_workers", "train.log_every",
    "train.checkpoint_every",
})


def config_differences(old: dict, new: dict, ignore=frozenset()) -> list[tuple[str, Any, Any]]:
    """``(dotted field, old value, new value)`` for every field where two
    :meth:`RunConfig.to_dict` dictionaries differ, except the fields in ``ignore``.

    Both are resolved through :meth:`RunConfig.from_dict` first, so a field missing from
    an older dictionary counts as its default and values compare after coercion.

    Example:
        >>> a, b = make_config("quick"), make_config("quick", {"train.lr": 1e-3})
        >>> config_differences(a.to_dict(), b.to_dict())
        [('train.lr', 0.002, 0.001)]
    """
    flat = [_flatten(RunConfig.from_dict(d).to_dict()) for d in (old, new)]
    return [(k, flat[0].get(k), flat[1].get(k)) for k in sorted(set(flat[0]) | set(flat[1]))
            if k not in ignore and flat[0].get(k) != flat[1].get(k)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_dotted(cfg: RunConfig, dotted: str, value: Any) -> None:
    """Set ``cfg.<section>.<field>`` (or a top-level field) from a value or its string."""
    parts = dotted.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise ValueError(f"unknown configuration section {p!r} in {dotted!r}")
        obj = getattr(obj, p)
    _set_field(obj, parts[-1], value, dotted)


def _set_field(obj: Any, name: str, value: Any, label: str) -> None:
    if not any(f.name == name for f in dataclasses.fields(obj)):
        raise ValueError(f"unknown configuration field {label!r}")
    current = getattr(obj, name)
    setattr(obj, name, _coerce(current, value, label))


def _coerce(current: Any, value: Any, label: str) -> Any:
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(current, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            kind = type(current[0]) if current else int
            return tuple(kind(v) for v in items)
        if isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(current, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"configuration field {label!r} expects {type(current).__name__}, got {value!r}"
        ) from None


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x
