"""The WCPA track-2 folder format: loader, synthetic exporter and submission writer.

Layout (as distributed by the challenge)::

    root/image/{subject}/{action}/{id}_ar.jpg                800x800 RGB photographs
    root/68landmarks/{subject}/{action}/{id}_68landmarks.txt 68 lines "x y" (pixels)
    root/info/{subject}/{action}/{id}_info.npz               verts (1220, 3), R_t (4, 4)
    root/list/*.csv                                          subject_id,facial_action,img_id

``info`` exists for training samples only. Poses in ``R_t`` use the row-vector OpenGL
convention (see :mod:`pyfacepnp.data.conventions`); the loader also yields them in the
OpenCV convention, with the same keys as :class:`~pyfacepnp.data.synthetic.SyntheticFaceDataset`.

The submission is an ``(N, 3672)`` float32 ``.npy``: per row the 1220 x 3 vertices (metres,
canonical frame), then ``R_t[:3, :3]`` row-major (9), then ``R_t[3, :3]`` (3), i.e. the
rotation and translation *in the WCPA convention*, as the challenge's reference
submission script writes them.
"""

from __future__ import annotations

import csv
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pyfacepnp.data.camera import WCPA_IMAGE_SIZE, crop_intrinsics, wcpa_intrinsics
from pyfacepnp.data.conventions import opencv_to_wcpa, wcpa_to_opencv
from pyfacepnp.data.crop import crop_affine_from_landmarks

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

NUM_VERTICES = 1220
SUBMISSION_COLUMNS = NUM_VERTICES * 3 + 9 + 3  # 3672
LIST_COLUMNS = ("subject_id", "facial_action", "img_id")
PathLike = Union[str, os.PathLike]


class WCPADataError(ValueError):
    """A file of a WCPA-format dataset is missing or malformed; ``path`` names it."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


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
        WCPADataError: missing, undecodable, or a JPEG cut short (no end-of-image marker).
    """
    path = Path(path)
    if not path.is_file():
        raise WCPADataError(path, "image file is missing")
    data = path.read_bytes()
    if path.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise WCPADataError(path, "JPEG is truncated or corrupt (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise WCPADataError(path, "image cannot be decoded (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def read_landmarks(path: PathLike) -> np.ndarray:
    """Read a 68-landmark file (68 lines of ``x y`` pixels) as ``(68, 2)`` float64.

    Raises:
        WCPADataError: missing, not numeric, not 68 x 2, or not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise WCPADataError(path, "landmark file is missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty-file warning: reported below instead
            pts = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise WCPADataError(path, f"landmark file is not numeric text: {exc}") from None
    if pts.shape != (68, 2):
        raise WCPADataError(path, f"expected 68 lines of 'x y', got an array of shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise WCPADataError(path, "landmarks contain NaN or infinite values")
    return pts


def read_info(path: PathLike) -> tuple:
    """Read an ``info`` npz as ``(verts (1220, 3) float32, R_t (4, 4) float32)``.

    Raises:
        WCPADataError: missing, not an npz, missing keys, wrong shapes, non-finite values,
        or an ``R_t`` that is not a rigid pose (rotation block orthonormal, last column
        ``(0, 0, 0, 1)``).
    """
    path = Path(path)
    if not path.is_file():
        raise WCPADataError(path, "info file is missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"verts", "R_t"} - keys
            if missing:
                raise WCPADataError(path, f"missing key(s) {sorted(missing)}; found {sorted(keys)}")
            verts, R_t = np.asarray(z["verts"]), np.asarray(z["R_t"])
    except WCPADataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise WCPADataError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if verts.shape != (NUM_VERTICES, 3):
        raise WCPADataError(path, f"verts must have shape ({NUM_VERTICES}, 3), got {verts.shape}")
    if R_t.shape != (4, 4):
        raise WCPADataError(path, f"R_t must have shape (4, 4), got {R_t.shape}")
    if not (np.isfinite(verts).all() and np.isfinite(R_t).all()):
        raise WCPADataError(path, "verts or R_t contain NaN or infinite values")
    rot = R_t[:3, :3].astype(np.float64)
    if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.abs(R_t[:, 3] - [0, 0, 0, 1]).max() > 1e-6:
        raise WCPADataError(path, "R_t is not a rigid row-vector pose ([R 0; t 1] with R orthonormal)")
    return verts.astype(np.float32), R_t.astype(np.float32)


def read_list(path: PathLike) -> list:
    """Read a ``list/*.csv`` file as a list of ``(subject_id, facial_action, img_id)`` strings."""
    path = Path(path)
    if not path.is_file():
        raise WCPADataError(path, "list file is missing")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in LIST_COLUMNS if c not in header]
        if missing:
            raise WCPADataError(path, f"list CSV lacks column(s) {missing}; header is {header}")
        rows = []
        for line, row in enumerate(reader, start=2):
            vals = tuple((row[c] or "").strip() for c in LIST_COLUMNS)
            if not all(vals):
                raise WCPADataError(path, f"line {line}: empty field in {dict(zip(LIST_COLUMNS, vals))}")
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
            and ``num_skipped`` counts them in this process.

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
        if list_file is None:
            self.samples = _scan_images(self.root)
        else:
            lf = Path(list_file)
            self.samples = read_list(lf if lf.is_absolute() else self.root / lf)
        self.crop_size, self.crop_margin = int(crop_size), crop_margin
        self.return_image, self.require_info, self.on_error = return_image, require_info, on_error
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    def paths(self, index: int) -> dict:
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
            warnings.warn(f"skipping sample {index} ({'/'.join(self.samples[index])}): {exc}", stacklevel=2)
            return None

    def _load(self, index: int) -> dict:
        paths = self.paths(index)
        image = read_image(paths["image"])
        lm = read_landmarks(paths["landmarks"])
        h, w = image.shape[:2]
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
        load_info = self.require_info or (self.require_info is None and paths["info"].is_file())
        if load_info:
            verts, R_t = read_info(paths["info"])
            R, t = wcpa_to_opencv(R_t.astype(np.float64))
            item.update(vertices=torch.from_numpy(verts), R=f32(R), t=f32(t), R_t=torch.from_numpy(R_t))
        return item


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a
    partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_synthetic(root: PathLike, dataset=None, *, split: str = "train", num_samples: int = 100, seed: int = 0,
                     list_name: Optional[str] = None, jpeg_quality: int = 95, landmark_format: str = "float",
                     progress: bool = False) -> Path:
    """Write a synthetic set to ``root`` in the WCPA track-2 layout.

    Args:
        root: output folder (created).
        dataset: a :class:`~pyfacepnp.data.synthetic.SyntheticFaceDataset` with
            ``render_image=True``; by default one of ``split``/``num_samples``/``seed`` at
            800x800.
        list_name: CSV name under ``list/`` (default ``synthetic_{split}.csv``).
        jpeg_quality: JPEG quality of the images.
        landmark_format: ``"float"`` (4 decimals: the loader gets the landmarks back to
            1e-4 px) or ``"int"`` (rounded integers, like the challenge's files).

    Returns:
        Path of the list CSV. Subjects are ``{split}{identity:05d}``, the action is
        ``00_synthetic`` and image ids are the zero-padded dataset indices.
    """
    from pyfacepnp.data.synthetic import SyntheticFaceDataset

    if landmark_format not in ("float", "int"):
        raise ValueError(f"landmark_format must be 'float' or 'int', got {landmark_format!r}")
    if dataset is None:
        dataset = SyntheticFaceDataset(split, num_samples=num_samples, seed=seed, image_size=WCPA_IMAGE_SIZE,
                                       crop_size=64, render_image=True)
    if not dataset.render_image:
        raise ValueError("export_synthetic needs a dataset with render_image=True")
    root = Path(root)
    rows = []
    fmt = "%.4f" if landmark_format == "float" else "%d"
    for i in range(len(dataset)):
        item = dataset[i]
        subject, action, img_id = f"{dataset.split}{int(item['identity']):05d}", "00_synthetic", f"{i:06d}"
        paths = sample_paths(root, subject, action, img_id)
        rgb = (item["image"].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {paths['image']}")
        _atomic_write(paths["image"], lambda f: f.write(jpg.tobytes()))
        lm = item["landmarks68"].double().numpy()
        lm = np.round(lm) if landmark_format == "int" else lm
        _atomic_write(paths["landmarks"], lambda f: np.savetxt(f, lm, fmt=fmt))
        _atomic_write(paths["info"], lambda f: np.savez(f, verts=item["vertices"].numpy().astype(np.float32),
                                                         R_t=item["R_t"].numpy().astype(np.float32)))
        rows.append((subject, action, img_id))
        if progress and (i + 1) % 50 == 0:
            print(f"exported {i + 1}/{len(dataset)}", flush=True)
    list_path = root / "list" / (list_name or f"synthetic_{dataset.split}.csv")

    def write_csv(f):
        text = ",".join(LIST_COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in rows)
        f.write(text.encode())

    _atomic_write(list_path, write_csv)
    return list_path


def _to_numpy(name, x, shape):
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != len(shape) + 1 or tuple(a.shape[1:]) != shape:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a.astype(np.float64)


def write_submission(path: PathLike, vertices, R, t, convention: str = "opencv") -> np.ndarray:
    """Write the challenge's ``(N, 3672)`` float32 submission array (``.npy``) atomically.

    Args:
        path: output file.
        vertices: ``(N, 1220, 3)`` canonical vertices in metres (numpy or torch).
        R: ``(N, 3, 3)``; t: ``(N, 3)``: poses in ``convention``.
        convention: ``"opencv"`` (``x_cam = R v + t``, converted to WCPA here) or
            ``"wcpa"`` (``R = R_t[:3, :3]``, ``t = R_t[3, :3]`` already).

    Returns:
        The array written: per row vertices, ``R_t[:3, :3]`` row-major, ``R_t[3, :3]``.

    Example:
        >>> arr = write_submission("sub.npy", np.zeros((2, 1220, 3)), np.eye(3)[None].repeat(2, 0),
        ...                        np.array([[0, 0, 0.5]] * 2))  # doctest: +SKIP
    """
    if convention not in ("opencv", "wcpa"):
        raise ValueError(f"convention must be 'opencv' or 'wcpa', got {convention!r}")
    V = _to_numpy("vertices", vertices, (NUM_VERTICES, 3))
    R = _to_numpy("R", R, (3, 3))
    t = _to_numpy("t", t, (3,))
    if not len(V) == len(R) == len(t):
        raise ValueError(f"vertices, R and t must have the same N, got {len(V)}, {len(R)} and {len(t)}")
    if convention == "opencv":
        R_t = opencv_to_wcpa(R, t)
        R, t = R_t[:, :3, :3], R_t[:, 3, :3]
    out = np.concatenate([V.reshape(len(V), -1), R.reshape(len(R), 9), t], axis=1).astype(np.float32)
    path = Path(path)
    _atomic_write(path, lambda f: np.save(f, out))
    return out


def read_submission(path: PathLike, convention: str = "opencv") -> tuple:
    """Read a submission array back as ``(vertices (N, 1220, 3), R (N, 3, 3), t (N, 3))``."""
    if convention not in ("opencv", "wcpa"):
        raise ValueError(f"convention must be 'opencv' or 'wcpa', got {convention!r}")
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != SUBMISSION_COLUMNS:
        raise WCPADataError(path, f"submission must have shape (N, {SUBMISSION_COLUMNS}), got {arr.shape}")
    n = len(arr)
    V = arr[:, : NUM_VERTICES * 3].reshape(n, NUM_VERTICES, 3)
    R = arr[:, NUM_VERTICES * 3: NUM_VERTICES * 3 + 9].reshape(n, 3, 3)
    t = arr[:, -3:]
    if convention == "opencv":
        R_t = np.zeros((n, 4, 4), dtype=arr.dtype)
        R_t[:, :3, :3], R_t[:, 3, :3], R_t[:, 3, 3] = R, t, 1.0
        R, t = wcpa_to_opencv(R_t)
    return V, R, t
