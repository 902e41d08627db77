"""The result types shared with the compiled op (imported from it once it defines them)."""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch

from pyfacepnp.ops import pnp as _op

_FIELDS = ("R", "t", "cost", "iterations", "status", "covariance")


class _PnPResult(NamedTuple):
    R: torch.Tensor
    t: torch.Tensor
    cost: torch.Tensor
    iterations: torch.Tensor
    status: torch.Tensor
    covariance: torch.Tensor


class _PnPStatus(enum.IntEnum):
    CONVERGED = 0
    MAX_ITERATIONS = 1
    DEGENERATE = 2
    INVALID_INPUT = 3


PnPResult = _op.PnPResult if getattr(_op.PnPResult, "_fields", ()) == _FIELDS else _PnPResult
PnPStatus = _op.PnPStatus if len(getattr(_op, "PnPStatus", ())) == 4 else _PnPStatus
