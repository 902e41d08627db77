"""Atomic checkpoint files, loaded with ``torch.load(weights_only=True)``.

Checkpoints hold only tensors, numbers, strings, lists and dicts (no pickled objects), so
they load under ``weights_only=True``; a crash mid-write never leaves a truncated file
behind because the file is written beside its target and renamed over it. A process killed
mid-write does leave its temporary (``.tmp-XXXXXXXX.pt``) behind;
:func:`remove_temporaries` deletes those (training does it in its run folder on every
start and resume).
"""

from __future__ import annotations

import os
import re
import tempfile

import torch

from pyfacepnp.config import RESUME_MAY_DIFFER, RunConfig, config_differences

TMP_PREFIX, TMP_SUFFIX = ".tmp-", ".pt"
# What tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX) names: 8 characters of [a-z0-9_].
TMP_PATTERN = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(TMP_SUFFIX) + r"\Z")


def save_atomic(obj: dict, path: str) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file, fsync it, rename onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=folder)
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


def check_resume_config(cfg: RunConfig, paths) -> None:
    """Refuse to resume with a configuration the existing checkpoints among ``paths`` were
    not written with: a ``ValueError`` naming every field that differs, except those of
    :data:`~pyfacepnp.config.RESUME_MAY_DIFFER` (the step counts and bookkeeping)."""
    for path in paths:
        if not os.path.exists(path):
            continue
        old = load_checkpoint(path).get("config")
        if not isinstance(old, dict):
            raise ValueError(f"cannot resume: checkpoint {path!r} holds no configuration")
        diffs = config_differences(old, cfg.to_dict(), RESUME_MAY_DIFFER)
        if diffs:
            listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs)
            raise ValueError(f"cannot resume {cfg.run_dir!r}: checkpoint {path!r} was written with another "
                             f"configuration ({listed}). Only the step counts may change on resume; restore "
                             "these values or start a new run (another --name, without --resume)")
