"""Checks of the files of a WCPA track-2 folder, before and after decoding.

Every problem is a :class:`WCPADataError` naming the file: a corrupt file never escapes as
another exception type and never comes back as a silently wrong (non-finite, grey,
out-of-range) sample. What is checked:

* **Any file**: it exists, can be read, and is not larger than its kind allows (the
  readers never load a gigabyte because a file says so).
* **JPEG**: the structure before decoding and the grey fill after it
  (:mod:`pyfacepnp.data.wcpa.jpeg`).
* **Arrays** of an ``info`` npz (:func:`read_npz_arrays`): the shape and dtype declared in
  each member's ``.npy`` header are checked before any data is read; only real numbers
  (float / signed / unsigned integer dtypes) are accepted.
* **Landmarks** (:func:`check_landmarks`): finite, within +-:data:`MAX_PIXEL_COORD` px
  (so finite after the float32 cast), spread over at least
  :data:`MIN_LANDMARK_SPREAD_PX` px, and overlapping the image.
* **List entries** (:func:`list_entry_problem`): three non-empty plain names (no path
  separator, no ``.`` / ``..``, at most :data:`MAX_FIELD_BYTES` bytes), so an entry can
  only name files inside the dataset root.
"""

from __future__ import annotations

import csv
import os
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

MAX_IMAGE_SIDE = 10000
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 << 20
MAX_LANDMARK_BYTES = 1 << 20
MAX_INFO_BYTES = 64 << 20
MAX_PIXEL_COORD = 1e6
MIN_LANDMARK_SPREAD_PX = 1.0
MAX_METRES = 1e3
MAX_FIELD_BYTES = 200

# What the decoders (zipfile, zlib, numpy's .npy header parser, csv, OpenCV) raise on a
# corrupt file; each becomes a WCPADataError naming the file.
DECODE_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, NotImplementedError, RuntimeError,
                 MemoryError, zipfile.BadZipFile, zlib.error, csv.Error, cv2.error)


class WCPADataError(ValueError):
    """A file of a WCPA-format dataset is missing or malformed; ``path`` names it.

    It pickles, and a DataLoader worker's one is re-raised in the main process as a
    ``WCPADataError`` too (built from the message alone: ``path`` is then empty and the
    message, which names the file, carries the worker's traceback).
    """

    def __init__(self, path, problem: str | None = None):
        if problem is None:  # WCPADataError(message), as DataLoader re-raises it
            self.path, self.problem = "", str(path)
            super().__init__(str(path))
            return
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem) if self.path else (self.problem,)


def check_file(path: Path, what: str, max_bytes: int) -> None:
    """``path`` exists, is a file and has at most ``max_bytes``; else an error naming it."""
    try:
        if not path.is_file():
            raise WCPADataError(path, f"{what} file is missing")
        size = path.stat().st_size
    except OSError as exc:
        raise WCPADataError(path, f"{what} file cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None
    if size > max_bytes:
        raise WCPADataError(path, f"{what} file is {size} bytes, more than the {max_bytes} a {what} file may have")


def read_file_bytes(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of ``path`` after :func:`check_file`."""
    check_file(path, what, max_bytes)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WCPADataError(path, f"{what} file cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None


def check_image_size(path, height: int, width: int) -> None:
    """A picture is at least 1x1 and within :data:`MAX_IMAGE_SIDE` / :data:`MAX_IMAGE_PIXELS`."""
    if height <= 0 or width <= 0:
        raise WCPADataError(path, f"image declares an empty {width}x{height} picture")
    if max(height, width) > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise WCPADataError(path, f"image declares a {width}x{height} picture, above the loader's maximum "
                                  f"({MAX_IMAGE_SIDE} px a side, {MAX_IMAGE_PIXELS} pixels)")


def check_numeric_dtype(path, name: str, dtype: np.dtype) -> None:
    """Only real numbers: float, signed or unsigned integer dtypes (no strings, bytes,
    structured, datetime, complex, bool or object arrays)."""
    if dtype.kind not in "fiu" or dtype.hasobject or dtype.shape:
        raise WCPADataError(path, f"{name} must hold real numbers (a float or integer dtype), got dtype {dtype}")


def read_npz_arrays(path: Path, shapes: dict) -> dict:
    """Arrays ``{key: shape}`` of an npz, each checked from its ``.npy`` header first."""
    check_file(path, "info", MAX_INFO_BYTES)
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise WCPADataError(path, "not a readable .npz file: it is a single .npy array, not an .npz archive")
        with zipfile.ZipFile(path) as zf:
            members = {}
            for name in zf.namelist():
                members.setdefault(name[:-4] if name.endswith(".npy") else name, name)
            missing = sorted(set(shapes) - set(members))
            if missing:
                raise WCPADataError(path, f"missing key(s) {missing}; found {sorted(members)}")
            return {key: _read_member(path, zf, members[key], key, shape) for key, shape in shapes.items()}
    except WCPADataError:
        raise
    except DECODE_ERRORS as exc:
        raise WCPADataError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _read_member(path, zf: zipfile.ZipFile, member: str, key: str, shape: tuple) -> np.ndarray:
    fmt = np.lib.format
    with zf.open(member) as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise WCPADataError(path, f"{key}: unsupported .npy format version {version}")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        declared, fortran, dtype = read_header(f)
        check_numeric_dtype(path, key, dtype)
        if tuple(declared) != tuple(shape):
            raise WCPADataError(path, f"{key} must have shape {tuple(shape)}, got {tuple(declared)}")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = f.read(nbytes)
        if len(buf) != nbytes:
            raise WCPADataError(path, f"{key}: array data is cut short ({len(buf)} of {nbytes} bytes)")
        if f.read(1):  # (reading to the end also makes zipfile verify the member's CRC)
            raise WCPADataError(path, f"{key}: more data than its header declares")
    return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")


def checked_float32(path, name: str, arr: np.ndarray, bound: float) -> np.ndarray:
    """``arr`` as float32, refused when not finite or beyond ``+-bound`` (before and after the cast)."""
    a64 = arr.astype(np.float64)
    if not np.isfinite(a64).all():
        raise WCPADataError(path, f"{name} contain NaN or infinite values")
    if np.abs(a64).max(initial=0.0) > bound:
        raise WCPADataError(path, f"{name} are out of range (|value| up to {np.abs(a64).max():.3g}, at most {bound:g})")
    return arr.astype(np.float32)


def check_landmarks(path, pts: np.ndarray, image_size=None) -> None:
    """Finite, in range, not degenerate, and (with ``image_size = (w, h)``) overlapping the image."""
    if not np.isfinite(pts).all():
        raise WCPADataError(path, "landmarks contain NaN or infinite values")
    if np.abs(pts).max() > MAX_PIXEL_COORD:
        raise WCPADataError(path, f"landmarks are out of range (|coordinate| up to {np.abs(pts).max():.3g} px, "
                                  f"at most {MAX_PIXEL_COORD:g})")
    lo, hi = pts.min(0), pts.max(0)
    if (hi - lo).max() < MIN_LANDMARK_SPREAD_PX:
        raise WCPADataError(path, f"landmarks are degenerate: all {len(pts)} lie within {(hi - lo).max():.3g} px "
                                  f"of each other (at least {MIN_LANDMARK_SPREAD_PX} px needed)")
    if image_size is not None:
        w, h = image_size
        if hi[0] < -0.5 or hi[1] < -0.5 or lo[0] > w - 0.5 or lo[1] > h - 0.5:
            raise WCPADataError(path, f"landmarks lie outside the {w}x{h} image (x {lo[0]:.1f}..{hi[0]:.1f}, "
                                      f"y {lo[1]:.1f}..{hi[1]:.1f})")


def list_entry_problem(columns: tuple, values: tuple):
    """Why a list entry cannot name a sample inside the dataset root, or None."""
    entry = dict(zip(columns, values))
    for c, v in entry.items():
        if not v:
            return f"empty field in {entry}"
        if v in (".", "..") or any(s in v for s in ("/", "\\", "\0")) or os.path.isabs(v):
            return f"entry {entry}: field {c!r} is not a plain name (a path would read outside the dataset root)"
        if len(v.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
            return f"entry {entry!r:.120}...: field {c!r} is longer than {MAX_FIELD_BYTES} bytes"
    return None
