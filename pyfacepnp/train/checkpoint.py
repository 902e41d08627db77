"""Atomic checkpoint files, loaded with ``torch.load(weights_only=True)``.

Checkpoints hold only tensors, numbers, strings, lists and dicts (no pickled objects), so
they load under ``weights_only=True``; a crash mid-write never leaves a truncated file
behind because the file is written beside its target and renamed over it.
"""

from __future__ import annotations

import os
import tempfile

import torch


def save_atomic(obj: dict, path: str) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file, fsync it, rename onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_atomic` (``weights_only=True``).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing or
    not a readable checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holds arbitrary objects
        raise ValueError(f"checkpoint {path!r} could not be loaded: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path!r} does not hold a dict (got {type(ckpt).__name__})")
    return ckpt
