"""Training data: the synthetic set rendered once into an in-memory cache, or a WCPA folder.

Every sample is reduced to what the networks see, with the crop resampled from the full
frame by the same :func:`~pyfacepnp.geometry.crop.warp_image` used at inference, so
training and inference crops come from one code path:

``crop`` uint8 ``(3, c, c)`` (frame warped by ``crop_affine``), ``small`` uint8
``(3, d, d)`` (frame downscaled for the detector), optionally ``image`` uint8
``(3, S, S)``, and float32 ``crop_affine (2, 3)``, ``K (3, 3)``, ``landmarks68 (68, 2)``,
``vertices (N, 3)``, ``R (3, 3)``, ``t (3,)`` (+ ``id_coeffs``, ``exp_coeffs`` when the
data set has them, and int64 ``identity`` for the bootstrap over identities).

The crop is cut around the ground-truth landmarks with ``data.crop_margin`` (the margin
evaluation and ``predict`` use) and without jitter: the one crop jitter of training is the
random similarity re-crop of :func:`pyfacepnp.train.augment.geometric_jitter`, drawn anew
every step. The synthetic data set renders only the full frame (the crop is cut from it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyfacepnp.config import DataConfig
from pyfacepnp.files import load_checkpoint, save_atomic
from pyfacepnp.geometry.crop import resize_image, warp_image
from pyfacepnp.train.distributed import DistInfo, barrier

FLOAT_KEYS = ("crop_affine", "K", "landmarks68", "vertices", "R", "t")
OPTIONAL_KEYS = ("id_coeffs", "exp_coeffs")  # synthetic data only (the coefficient loss)
INT_KEYS = ("identity",)  # kept as int64 when the data set has it
SPLITS = ("train", "val", "test")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def prepare_batch(batch: dict, crop_size: int, detector_size: int, keep_image: bool) -> dict:
    """Dataset items (collated) -> the compact training/eval form described above."""
    image = batch["image"]
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    missing = [k for k in FLOAT_KEYS + ("image",) if k not in batch]
    if missing:
        raise ValueError(f"samples lack {missing}: training and evaluation need ground truth "
                         "(for WCPA folders, the info/*.npz files)")
    out = {k: batch[k].float() for k in FLOAT_KEYS + OPTIONAL_KEYS if k in batch}
    out.update({k: batch[k].long() for k in INT_KEYS if k in batch})
    out["crop"] = to_uint8(warp_image(image.float(), out["crop_affine"], crop_size))
    out["small"] = to_uint8(resize_image(image.float(), detector_size))
    if keep_image:
        out["image"] = to_uint8(image)
    return out


class PreparedDataset(Dataset):
    """Wraps a dataset of raw items (e.g. ``WCPADataset``) and prepares each on the fly."""

    def __init__(self, base, crop_size: int, detector_size: int, keep_image: bool) -> None:
        self.base, self.crop_size, self.detector_size, self.keep_image = base, crop_size, detector_size, keep_image

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = {k: v.unsqueeze(0) for k, v in self.base[i].items() if torch.is_tensor(v)}
        out = prepare_batch(item, self.crop_size, self.detector_size, self.keep_image)
        return {k: v[0] for k, v in out.items()}


class TensorSplit:
    """An in-memory split: a dict of equally long tensors, indexed by batches of indices."""

    def __init__(self, tensors: dict) -> None:
        lengths = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"split tensors differ in length: {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def batch(self, idx) -> dict:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


def _synthetic_dataset(cfg: DataConfig, split: str, keep_image: bool):
    from pyfacepnp.data.synthetic import SyntheticFaceDataset

    n = {"train": cfg.train_samples, "val": cfg.val_samples, "test": cfg.test_samples}[split]
    # Only the frame is rendered: prepare_batch cuts the crop from it (one code path with
    # inference), around the GT landmarks with the configured margin and no jitter (the
    # training jitter is the per-step re-crop of train.augment).
    return SyntheticFaceDataset(split=split, num_samples=n, seed=cfg.seed,
                                image_size=cfg.image_size, crop_size=cfg.crop_size,
                                render_image=True, render_crop=False, jitter=False,
                                crop_margin=cfg.crop_margin, num_identities=cfg.identity_pool)


def _wcpa_dataset(cfg: DataConfig, split: str):
    from pyfacepnp.data.wcpa import WCPADataset

    if not cfg.root:
        raise ValueError("data.source='wcpa' needs data.root (the WCPA track-2 folder)")
    lst = {"train": cfg.train_list, "val": cfg.val_list, "test": cfg.test_list}[split]
    return WCPADataset(cfg.root, list_file=lst or None, crop_size=cfg.crop_size, crop_margin=cfg.crop_margin)


# The sources a rendered synthetic split depends on, relative to the package folder.
_DATA_SOURCES = ("data", "geometry", "ops/render.py")


def _data_code_digest() -> str:
    """Digest of the data layer's sources (face model, renderer wrapper, geometry): a
    changed one re-renders."""
    import pyfacepnp as pkg

    h = hashlib.sha1()
    root = os.path.dirname(pkg.__file__)
    files = []
    for entry in _DATA_SOURCES:
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            files.append(path)
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    for path in files:
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, root).encode() + f.read())
    return h.hexdigest()[:12]


def cache_key(cfg: DataConfig, split: str, keep_image: bool) -> dict:
    """Everything that shapes a rendered synthetic split (sizes, seed, data-layer sources)."""
    return {"code": _data_code_digest(), "split": split,
            "n": {"train": cfg.train_samples, "val": cfg.val_samples, "test": cfg.test_samples}[split],
            "seed": cfg.seed, "image": cfg.image_size, "crop": cfg.crop_size,
            "det": cfg.detector_size, "keep": keep_image, "margin": cfg.crop_margin,
            "identities": cfg.identity_pool, "v": 3}


def cache_path(cfg: DataConfig, split: str, keep_image: bool) -> str:
    """File of a rendered synthetic split, named by the digest of its :func:`cache_key`."""
    key = cache_key(cfg, split, keep_image)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cfg.cache_dir, f"synthetic-{split}-{digest}.pt")


def _remove_stale(folder: str) -> None:
    """Delete caches rendered by another version of the data layer: they can never be hit."""
    code = _data_code_digest()
    for name in os.listdir(folder):
        if not (name.startswith("synthetic-") and name.endswith(".pt")):
            continue
        try:
            key = torch.load(os.path.join(folder, name), weights_only=True, mmap=True).get("key", {})
        except Exception:
            continue
        if key.get("code", code) != code:
            os.unlink(os.path.join(folder, name))


def render_split(cfg: DataConfig, split: str, keep_image: bool, progress: bool = True) -> dict:
    """Render a synthetic split through a DataLoader (``render_workers`` processes)."""
    from tqdm import tqdm

    ds = _synthetic_dataset(cfg, split, keep_image)
    loader = DataLoader(ds, batch_size=16, num_workers=cfg.render_workers,
                        persistent_workers=False)
    parts: dict[str, list] = {}
    for batch in tqdm(loader, desc=f"render {split}", disable=not progress, mininterval=1.0):
        out = prepare_batch(batch, cfg.crop_size, cfg.detector_size, keep_image)
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def load_split(cfg: DataConfig, split: str, info: DistInfo | None = None, keep_image: bool | None = None,
               progress: bool = True):
    """A split ready for training/eval: a :class:`TensorSplit` (synthetic, cached on disk)
    or a :class:`PreparedDataset` (WCPA folder, prepared per item).

    With several processes, rank 0 renders and writes the cache; the others wait and read it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    info = info or DistInfo()
    keep = (split != "train") if keep_image is None else keep_image
    if cfg.source == "wcpa":
        return PreparedDataset(_wcpa_dataset(cfg, split), cfg.crop_size, cfg.detector_size, keep)
    if cfg.source != "synthetic":
        raise ValueError(f"data.source must be 'synthetic' or 'wcpa', got {cfg.source!r}")
    path = cache_path(cfg, split, keep)
    if info.is_main and not os.path.exists(path):
        t0 = time.time()
        tensors = render_split(cfg, split, keep, progress)
        save_atomic({"tensors": tensors, "seconds": time.time() - t0,
                     "key": cache_key(cfg, split, keep)}, path)
        _remove_stale(cfg.cache_dir)
    barrier(info)
    return TensorSplit(load_checkpoint(path)["tensors"])


def steps_per_epoch(n: int, batch_size: int, info: DistInfo) -> int:
    per_rank = n // info.world_size
    steps = per_rank // batch_size
    if steps == 0:
        raise ValueError(f"train.batch_size={batch_size} is larger than the {per_rank} samples "
                         f"each of {info.world_size} process(es) gets from a split of {n}")
    return steps


def step_batches(source, batch_size: int, start_step: int, total_steps: int, seed: int,
                 info: DistInfo, workers: int = 0) -> Iterator[tuple[int, dict]]:
    """Yield ``(step, batch)`` for steps ``start_step .. total_steps - 1``.

    The order is a pure function of (seed, epoch, rank): epoch ``e`` is a
    ``DistributedSampler`` permutation with ``set_epoch(e)``, so resuming at any step
    replays exactly the batches an uninterrupted run would have seen.
    """
    n = len(source)
    spe = steps_per_epoch(n, batch_size, info)
    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed, drop_last=True)
    step = start_step
    while step < total_steps:
        epoch, offset = divmod(step, spe)
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(offset, spe)]
        batches = batches[: total_steps - step]
        if isinstance(source, TensorSplit):
            for idx in batches:
                yield step, source.batch(idx)
                step += 1
        else:
            loader = DataLoader(source, batch_sampler=batches, num_workers=workers)
            for batch in loader:
                yield step, batch
                step += 1


def iterate_split(source, batch_size: int) -> Iterator[dict]:
    """All samples of a split in order, in batches (evaluation)."""
    n = len(source)
    if isinstance(source, TensorSplit):
        for i in range(0, n, batch_size):
            yield source.batch(range(i, min(n, i + batch_size)))
    else:
        yield from DataLoader(source, batch_size=batch_size, shuffle=False)
