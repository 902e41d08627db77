"""The WCPA track-2 folder format: loader (plus the exporter and submission writer of
:mod:`pyfacepnp.data.wcpa_export`, re-exported here).

Layout (as distributed by the challenge)::

    root/image/{subject}/{action}/{id}_ar.jpg                800x800 RGB photographs
    root/68landmarks/{subject}/{action}/{id}_68landmarks.txt 68 lines "x y" (pixels)
    root/info/{subject}/{action}/{id}_info.npz               verts (1220, 3), R_t (4, 4)
    root/list/*.csv                                          subject_id,facial_action,img_id

``info`` exists for training samples only. Poses in ``R_t`` use the row-vector OpenGL
convention (see :mod:`pyfacepnp.data.conventions`); the loader also yields them in the
OpenCV convention, with the same keys as :class:`~pyfacepnp.data.synthetic.SyntheticFaceDataset`.

Every bad file is a :class:`WCPADataError` naming it (the checks are those of
:mod:`pyfacepnp.data.wcpa_checks`), never another exception or a silently wrong sample.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pyfacepnp.data.camera import crop_intrinsics, wcpa_intrinsics
from pyfacepnp.data.conventions import wcpa_to_opencv
from pyfacepnp.data.crop import crop_affine_from_landmarks
from pyfacepnp.data.wcpa_checks import (
    MAX_IMAGE_BYTES, MAX_LANDMARK_BYTES, MAX_METRES, NUM_VERTICES, WCPADataError,
    check_decoded_jpeg, check_image_size, check_jpeg_structure, check_landmarks, checked_float32,
    list_entry_problem, read_file_bytes, read_npz_arrays,
)
from pyfacepnp.data.wcpa_export import SUBMISSION_COLUMNS, export_synthetic, read_submission, write_submission

__all__ = [
    "WCPADataError",
    "WCPADataset",
    "collate_skip_none",
    "read_image",
    "read_landmarks",
    "read_info",
    "read_list",
    "sample_paths",
    "export_synthetic",
    "write_submission",
    "read_submission",
    "SUBMISSION_COLUMNS",
]

LIST_COLUMNS = ("subject_id", "facial_action", "img_id")
MAX_LIST_BYTES = 256 << 20
PathLike = Union[str, os.PathLike]


def sample_paths(root: PathLike, subject: str, action: str, img_id: str) -> dict:
    """Paths of one sample's ``image``, ``landmarks`` and ``info`` files."""
    root = Path(root)
    return {
        "image": root / "image" / subject / action / f"{img_id}_ar.jpg",
        "landmarks": root / "68landmarks" / subject / action / f"{img_id}_68landmarks.txt",
        "info": root / "info" / subject / action / f"{img_id}_info.npz",
    }


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` float32 RGB in ``[0, 1]``.

    Raises:
        WCPADataError: missing, unreadable, too large, undecodable, or (``.jpg`` / ``.jpeg``)
        a JPEG that is truncated or corrupt (see :mod:`pyfacepnp.data.wcpa_checks`).
    """
    path = Path(path)
    data = read_file_bytes(path, "image", MAX_IMAGE_BYTES)
    is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    declared = check_jpeg_structure(path, data) if is_jpeg else None
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise WCPADataError(path, f"image cannot be decoded ({str(exc).strip().splitlines()[-1]})") from None
    if img is None:
        raise WCPADataError(path, "image cannot be decoded (corrupt or not an image)")
    check_image_size(path, *img.shape[:2])
    if is_jpeg:
        if img.shape[:2] != declared:
            raise WCPADataError(path, f"JPEG is truncated or corrupt: decoded {img.shape[:2]}, declared {declared}")
        check_decoded_jpeg(path, data)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def read_landmarks(path: PathLike) -> np.ndarray:
    """Read a 68-landmark file (68 lines of ``x y`` pixels) as ``(68, 2)`` float64.

    Raises:
        WCPADataError: missing, unreadable, not numeric UTF-8 text, not 68 x 2, not finite,
        out of range (beyond +-1e6 px) or degenerate (spread below a pixel).
    """
    path = Path(path)
    data = read_file_bytes(path, "landmark", MAX_LANDMARK_BYTES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty-file warning: reported below instead
            pts = np.loadtxt(io.StringIO(data.decode("utf-8")), dtype=np.float64, ndmin=2)
    except ValueError as exc:  # UnicodeDecodeError included
        raise WCPADataError(path, f"landmark file is not numeric text: {exc}") from None
    if pts.shape != (68, 2):
        raise WCPADataError(path, f"expected 68 lines of 'x y', got an array of shape {pts.shape}")
    check_landmarks(path, pts)
    return pts


def read_info(path: PathLike) -> tuple:
    """Read an ``info`` npz as ``(verts (1220, 3) float32, R_t (4, 4) float32)``.

    Raises:
        WCPADataError: missing, not an npz, missing keys, wrong shapes or dtypes (checked
        from the headers before reading; real numbers only), non-finite or out-of-range
        values (beyond +-1000 m, also after the float32 cast), or an ``R_t`` that is not a
        rigid pose (rotation block orthonormal, last column ``(0, 0, 0, 1)``).
    """
    path = Path(path)
    arrays = read_npz_arrays(path, {"verts": (NUM_VERTICES, 3), "R_t": (4, 4)})
    verts = checked_float32(path, "verts", arrays["verts"], MAX_METRES)
    R_t = checked_float32(path, "R_t values", arrays["R_t"], MAX_METRES)
    rot = R_t[:3, :3].astype(np.float64)
    if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.abs(R_t[:, 3] - [0, 0, 0, 1]).max() > 1e-6:
        raise WCPADataError(path, "R_t is not a rigid row-vector pose ([R 0; t 1] with R orthonormal)")
    return verts, R_t


def _list_entries(path: Path) -> list:
    """``[(entry, problem or None)]`` of a list CSV; file-level problems raise."""
    data = read_file_bytes(path, "list", MAX_LIST_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise WCPADataError(path, f"list CSV is not UTF-8 text (line {line}, byte {exc.start}: {exc.reason})") from None
    try:
        reader = csv.DictReader(io.StringIO(text[1:] if text.startswith("\ufeff") else text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in LIST_COLUMNS if c not in header]
        if missing:
            raise WCPADataError(path, f"list CSV lacks column(s) {missing}; header is {header}")
        rows = []
        for row in reader:
            vals = tuple((row[c] or "").strip() for c in LIST_COLUMNS)
            problem = list_entry_problem(LIST_COLUMNS, vals)
            rows.append((vals, problem and f"line {reader.line_num}: {problem}"))
    except csv.Error as exc:
        raise WCPADataError(path, f"list CSV cannot be read ({exc})") from None
    return rows


def read_list(path: PathLike) -> list:
    """Read a ``list/*.csv`` file as a list of ``(subject_id, facial_action, img_id)`` strings.

    Raises:
        WCPADataError: naming the list file: missing, not UTF-8, no header with the three
        columns, or an entry that is empty, not a plain name (``..``, a path separator, an
        absolute path: it would read outside the dataset root) or too long.
    """
    path = Path(path)
    rows = []
    for vals, problem in _list_entries(path):
        if problem:
            raise WCPADataError(path, problem)
        rows.append(vals)
    return rows


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
            :func:`~pyfacepnp.data.crop.crop_affine_from_landmarks` on the GT landmarks.
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
                entries = _list_entries(lf)
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
            "landmarks68_crop": f32(lm @ A[:, :2].T + A[:, 2]),
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
