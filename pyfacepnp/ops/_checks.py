"""Input validation shared by the op wrappers: errors name the argument and the shape."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch


def check_tensor(name: str, x, dims: Sequence[str], *, min_dim: int | None = None) -> None:
    """Check that ``x`` is a floating tensor whose trailing dims match ``dims``.

    ``dims`` lists the trailing dimension names, with integers for fixed sizes, e.g.
    ``["N", 3]`` for ``(..., N, 3)``. Leading (batch) dimensions are free.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {_shape_text(dims)}, got "
                        f"{type(x).__name__}")
    shape = x.shape
    ok = len(shape) >= (min_dim if min_dim is not None else len(dims))
    for d, size in zip(dims[::-1], shape[::-1]):
        ok = ok and (size == d or not isinstance(d, int))
    if not ok:
        raise ValueError(f"{name} must have shape {_shape_text(dims)}, got {tuple(shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")


def _shape_text(dims: Sequence[str]) -> str:
    return "(..., " + ", ".join(str(d) for d in dims) + ")"


def check_same(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    """All given tensors share one dtype and one device."""
    first = tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.device != first.device:
            raise ValueError(
                f"{names[0]} and {name} must be on the same device, got {first.device} and {t.device}"
            )
        if t.dtype != first.dtype:
            raise TypeError(
                f"{names[0]} and {name} must have the same dtype, got {first.dtype} and {t.dtype}"
            )


def broadcast_batch(name_shapes: Sequence[tuple[str, torch.Size]]) -> torch.Size:
    """Broadcast the leading batch shapes, naming the arguments on failure."""
    # The common calls (one batch shape, arguments without batch dimensions shared) need no
    # broadcasting: torch.broadcast_shapes costs more than the rest of a small call's checks.
    shapes = {s for _, s in name_shapes if s}
    if len(shapes) <= 1:
        return shapes.pop() if shapes else torch.Size()
    try:
        return torch.broadcast_shapes(*(s for _, s in name_shapes))
    except RuntimeError:
        desc = ", ".join(f"{n} {tuple(s)}" for n, s in name_shapes)
        raise ValueError(f"batch dimensions do not broadcast: {desc}") from None


def check_real(name: str, value, low: float, high: float, *, open_low: bool = False,
               open_high: bool = False, rule: str | None = None) -> float:
    """A real number (not a bool, not a tensor) in the interval; returned as a float.
    ``rule`` words the interval in the error (default: the interval itself)."""
    # A plain float skips the ABC check (slow for a check made on every call).
    if type(value) is not float and (isinstance(value, bool)
                                     or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    below = v <= low if open_low else v < low
    above = v >= high if open_high else v > high
    if math.isnan(v) or below or above:
        if rule is None:
            rule = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v


def check_int(name: str, value, low: int, high: int, *, rule: str | None = None) -> int:
    """An integer (not a bool) in [low, high]; returned as an int."""
    if type(value) is not int and (isinstance(value, bool)
                                   or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not low <= v <= high:
        raise ValueError(f"{name} must be {rule or f'in [{low}, {high}]'}, got {v}")
    return v
