"""The WCPA track-2 dataset: a folder (real challenge data or
:func:`~pyfacepnp.data.wcpa.export.export_synthetic` output) as a torch ``Dataset``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pyfacepnp.data.wcpa.checks import WCPADataError, check_landmarks
from pyfacepnp.data.wcpa.files import list_entries, read_image, read_info, read_landmarks, read_list, sample_paths
from pyfacepnp.geometry.camera import crop_intrinsics, wcpa_intrinsics
from pyfacepnp.geometry.conventions import wcpa_to_opencv
from pyfacepnp.geometry.crop import apply_affine, crop_affine_from_landmarks

__all__ = ["WCPADataset", "collate_skip_none"]

PathLike = Union[str, os.PathLike]


def _scan_images(root: Path) -> list:
    base = root / "image"
    if not base.is_dir():
        raise WCPADataError(base, "no image/ folder under the dataset root")
    rows = []
    for p in sorted(base.glob("*/*/*_ar.jpg")):
        rows.append((p.parent.parent.name, p.parent.name, p.name[: -len("_ar.jpg")]))
    return rows


def collate_skip_none(batch: Sequence):
    """``collate_fn`` for ``WCPADataset(on_error="skip")``: drops skipped (None) samples and
    reports their number as ``num_skipped`` in the batch (``None`` if all were skipped)."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return None
    out = torch.utils.data.default_collate(kept)
    out["num_skipped"] = torch.tensor(len(batch) - len(kept))
    return out


class WCPADataset(Dataset):
    """A WCPA track-2 folder (real challenge data or :func:`export_synthetic` output).

    Args:
        root: dataset root (holding ``image/``, ``68landmarks/``, ``info/``, ``list/``).
        list_file: CSV of samples, absolute or relative to ``root`` (e.g.
            ``"list/WCPA_track2_train.csv"``); None lists every ``image/*/*/*_ar.jpg``.
        crop_size: side of the face crop, cut with ``cv2.warpAffine`` from the affine of
            :func:`~pyfacepnp.geometry.crop.crop_affine_from_landmarks` on the GT landmarks.
        crop_margin: its margin.
        return_image: include the full frame (``image`` key).
        require_info: ``True``: a missing ``info`` file is an error; ``False``: never
            read it (test sets); ``None``: read it when present.
        on_error: ``"raise"`` (a :class:`WCPADataError` naming the file) or ``"skip"``:
            the item is ``None`` (use :func:`collate_skip_none`), a warning names the file
            and ``num_skipped`` counts them in this process. A bad list entry (empty field,
            not a plain name, too long) raises when the dataset is built under ``"raise"``
            and is a skipped item under ``"skip"``; a list file that cannot be read at all
            always raises.

    Items carry the keys of :class:`~pyfacepnp.data.synthetic.SyntheticFaceDataset`
    (``vertices``, ``R``, ``t``, ``R_t`` only with info) plus ``name``
    (``"subject/action/id"``).

    Example:
        >>> ds = WCPADataset("/data/wcpa", "list/WCPA_track2_train.csv")  # doctest: +SKIP
        >>> ds[0]["crop"].shape  # doctest: +SKIP
        torch.Size([3, 256, 256])
    """

    def __init__(self, root: PathLike, list_file: Optional[PathLike] = None, crop_size: int = 256,
                 crop_margin: float = 0.25, return_image: bool = True, require_info: Optional[bool] = None,
                 on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise WCPADataError(self.root, "dataset root is not a directory")
        self._bad: dict = {}  # index -> problem of a bad list entry (on_error="skip")
        if list_file is None:
            self.samples = _scan_images(self.root)
        else:
            lf = Path(list_file)
            lf = lf if lf.is_absolute() else self.root / lf
            if on_error == "raise":
                self.samples = read_list(lf)
            else:
                entries = list_entries(lf)
                self.samples = [vals for vals, _ in entries]
                self._list_file, self._bad = lf, {i: p for i, (_, p) in enumerate(entries) if p}
        self.crop_size, self.crop_margin = int(crop_size), crop_margin
        self.return_image, self.require_info, self.on_error = return_image, require_info, on_error
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    def paths(self, index: int) -> dict:
        if index in self._bad:
            raise WCPADataError(self._list_file, self._bad[index])
        return sample_paths(self.root, *self.samples[index])

    def __getitem__(self, index: int):
        if isinstance(index, torch.Tensor):
            index = int(index)
        try:
            return self._load(index)
        except WCPADataError as exc:
            if self.on_error == "raise":
                raise
            self.num_skipped += 1
            warnings.warn(f"skipping sample {index} ({'/'.join(self.samples[index])[:300]}): {exc}", stacklevel=2)
            return None

    def _load(self, index: int) -> dict:
        paths = self.paths(index)
        image = read_image(paths["image"])
        lm = read_landmarks(paths["landmarks"])
        h, w = image.shape[:2]
        check_landmarks(paths["landmarks"], lm, (w, h))
        K = wcpa_intrinsics((w, h))
        A = crop_affine_from_landmarks(lm, self.crop_size, margin=self.crop_margin)
        crop = cv2.warpAffine(image, A, (self.crop_size, self.crop_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        item = {
            "crop": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "crop_affine": f32(A),
            "K": f32(K),
            "K_crop": f32(crop_intrinsics(K, A)),
            "landmarks68": f32(lm),
            "landmarks68_crop": f32(apply_affine(lm, A)),
            "index": torch.tensor(index, dtype=torch.int64),
            "name": "/".join(self.samples[index]),
        }
        if self.return_image:
            item["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        load_info = self.require_info or (self.require_info is None and _exists(paths["info"]))
        if load_info:
            verts, R_t = read_info(paths["info"])
            R, t = wcpa_to_opencv(R_t.astype(np.float64))
            item.update(vertices=torch.from_numpy(verts), R=f32(R), t=f32(t), R_t=torch.from_numpy(R_t))
        for key, value in item.items():  # last guard: never a silent non-finite sample
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise WCPADataError(paths[_SOURCE.get(key, "landmarks")], f"sample's {key!r} is not finite")
        return item


# The file each item key is computed from (what the final finiteness guard names).
_SOURCE = {"crop": "image", "image": "image", "K": "image", "vertices": "info", "R": "info", "t": "info",
           "R_t": "info"}


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:
        raise WCPADataError(path, f"info file cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None
