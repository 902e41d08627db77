"""Learning-rate schedule: linear warm-up then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, final_ratio: float = 0.02) -> float:
    """Learning rate at ``step`` (0-based) of ``total`` steps.

    Rises linearly over ``warmup`` steps to ``base_lr``, then follows a half cosine down to
    ``final_ratio * base_lr`` at the last step. A pure function of the step, so a resumed
    run needs no scheduler state.

    Example:
        >>> warmup_cosine(0, 100, 10, 1.0), warmup_cosine(10, 100, 10, 1.0)
        (0.1, 1.0)
    """
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return base_lr * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
