"""Reading the files of a WCPA track-2 folder: images, landmark files, ``info`` npz files,
list CSVs (every bad file a :class:`~pyfacepnp.data.wcpa.checks.WCPADataError` naming it)."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from pyfacepnp.data.wcpa.checks import (
    MAX_IMAGE_BYTES, MAX_LANDMARK_BYTES, MAX_METRES, WCPADataError, check_image_size, check_landmarks,
    checked_float32, list_entry_problem, read_file_bytes, read_npz_arrays,
)
from pyfacepnp.data.wcpa.jpeg import check_decoded_jpeg, check_jpeg_structure
from pyfacepnp.geometry.mesh import NUM_VERTICES

__all__ = ["LIST_COLUMNS", "sample_paths", "read_image", "read_landmarks", "read_info", "read_list", "list_entries"]

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
        a JPEG that is truncated or corrupt (see :mod:`pyfacepnp.data.wcpa.jpeg`).
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


def list_entries(path: Path) -> list:
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
    for vals, problem in list_entries(path):
        if problem:
            raise WCPADataError(path, problem)
        rows.append(vals)
    return rows
