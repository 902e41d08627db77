"""Files the package writes: atomically (every writer goes through :func:`atomic_write`),
and checkpoints loaded with ``torch.load(weights_only=True)``.

A file is written beside its target and renamed over it, so a reader never sees a partial
file and a crash mid-write leaves the old one in place. A process killed mid-write does
leave its temporary behind (``.tmp-XXXXXXXX.pt`` for checkpoints); :func:`remove_temporaries`
deletes those (training does it in its run folder on every start and resume).

Checkpoints hold only tensors, numbers, strings, lists and dicts (no pickled objects), so
they load under ``weights_only=True``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Union

import torch

__all__ = ["atomic_write", "save_atomic", "load_checkpoint", "remove_temporaries", "TMP_PATTERN"]

TMP_PREFIX, TMP_SUFFIX = ".tmp-", ".pt"
# What tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX) names: 8 characters of [a-z0-9_].
TMP_PATTERN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(TMP_SUFFIX) + r"\Z")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Union[str, os.PathLike], write: Callable, *, prefix: str | None = None,
                 suffix: str | None = None, fsync: bool = False) -> None:
    """Call ``write(f)`` on a binary file in ``path``'s folder (created), then rename it onto
    ``path``; on any error the temporary is deleted and the target left as it was.

    Args:
        path: the file to (re)place.
        write: called with the open binary file.
        prefix, suffix: of the temporary's name (default ``.{name}.`` and ``path``'s suffix).
        fsync: flush the data to disk before the rename (checkpoints).

    Example:
        >>> atomic_write("notes.txt", lambda f: f.write(b"hello"))  # doctest: +SKIP
    """
    path = Path(path)
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}." if prefix is None else prefix,
                               suffix=path.suffix if suffix is None else suffix)
    try:
        # mkstemp creates the file for its owner only; a written file gets the permissions an
        # ordinary open() would give it (0666 less the umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj: dict, path: str) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file, fsync it, rename onto ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f), prefix=TMP_PREFIX, suffix=TMP_SUFFIX, fsync=True)


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


def remove_temporaries(folder: str) -> list[str]:
    """Delete the leftover temporaries of :func:`save_atomic` in ``folder`` (not below it).

    Only regular files named like ``save_atomic``'s temporaries (``TMP_PATTERN``) are
    removed; nothing else is touched. Do not call it while another process may be writing a
    checkpoint into the same folder. Returns the paths removed.
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    with os.scandir(folder) as entries:
        for entry in entries:
            if TMP_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.path)
    return sorted(removed)
