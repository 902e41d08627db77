"""Stage checkpoints of a run: where they live, and the configuration check on resume.

The files are written with :func:`pyfacepnp.files.save_atomic` and read with
:func:`pyfacepnp.files.load_checkpoint`.
"""

from __future__ import annotations

import os

from pyfacepnp.config import RESUME_MAY_DIFFER, RunConfig, config_differences
from pyfacepnp.files import load_checkpoint

__all__ = ["checkpoint_path", "check_resume_config"]


def checkpoint_path(run_dir: str, stage: str) -> str:
    """``<run>/checkpoints/<stage>.pt``."""
    return os.path.join(run_dir, "checkpoints", f"{stage}.pt")


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
