"""Writing WCPA track-2 files: the synthetic exporter and the challenge's submission array.

Re-exported by :mod:`pyfacepnp.data.wcpa` (import them from there). The submission is an
``(N, 3672)`` float32 ``.npy``: per row the 1220 x 3 vertices (metres, canonical frame),
then ``R_t[:3, :3]`` row-major (9), then ``R_t[3, :3]`` (3), i.e. the rotation and
translation *in the WCPA convention*, as the challenge's reference submission script
writes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import torch

from pyfacepnp.data.wcpa.checks import WCPADataError
from pyfacepnp.data.wcpa.files import LIST_COLUMNS, sample_paths
from pyfacepnp.files import atomic_write
from pyfacepnp.geometry.camera import WCPA_IMAGE_SIZE
from pyfacepnp.geometry.conventions import opencv_to_wcpa, wcpa_to_opencv
from pyfacepnp.geometry.mesh import NUM_VERTICES

__all__ = ["export_synthetic", "write_submission", "read_submission", "SUBMISSION_COLUMNS"]

SUBMISSION_COLUMNS = NUM_VERTICES * 3 + 9 + 3  # 3672
PathLike = Union[str, os.PathLike]


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
        atomic_write(paths["image"], lambda f: f.write(jpg.tobytes()))
        lm = item["landmarks68"].double().numpy()
        lm = np.round(lm) if landmark_format == "int" else lm
        atomic_write(paths["landmarks"], lambda f: np.savetxt(f, lm, fmt=fmt))
        atomic_write(paths["info"], lambda f: np.savez(f, verts=item["vertices"].numpy().astype(np.float32),
                                                         R_t=item["R_t"].numpy().astype(np.float32)))
        rows.append((subject, action, img_id))
        if progress and (i + 1) % 50 == 0:
            print(f"exported {i + 1}/{len(dataset)}", flush=True)
    list_path = root / "list" / (list_name or f"synthetic_{dataset.split}.csv")

    def write_csv(f):
        text = ",".join(LIST_COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in rows)
        f.write(text.encode())

    atomic_write(list_path, write_csv)
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
    atomic_write(path, lambda f: np.save(f, out))
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
