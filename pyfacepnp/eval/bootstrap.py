"""Bootstrap confidence intervals over groups (the unit that varies: identities).

Written once; the end-to-end experiment (:mod:`pyfacepnp.eval.experiment`) uses it for the
paired per-sample differences of its arms.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_bootstrap"]


def group_bootstrap(values, groups=None, n_boot: int = 10000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of ``values`` and its percentile bootstrap interval, resampling whole groups.

    Each replicate draws as many groups as there are, with replacement, and takes the mean
    over every sample of the drawn groups (a group drawn twice counts twice), so samples
    of one group (the images of one identity) move together: the interval reflects the
    variation between groups, not between images.

    Args:
        values: ``(n,)`` per-sample values (e.g. paired differences ``c - c0``).
        groups: ``(n,)`` group labels (identities); None: every sample its own group.
        n_boot: replicates.
        level: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
        seed: seed of the resampling (the interval is a pure function of the inputs).

    Returns:
        ``(mean, (low, high))``.

    Example:
        >>> m, (lo, hi) = group_bootstrap([1.0, 1.0, 3.0, 3.0], [0, 0, 1, 1], n_boot=2000)
        >>> m, lo, hi
        (2.0, 1.0, 3.0)
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("group_bootstrap needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    g = np.arange(v.size) if groups is None else np.asarray(groups).reshape(-1)
    if g.shape != v.shape:
        raise ValueError(f"groups must have one label per value, got {g.shape} and {v.shape}")
    _, inverse = np.unique(g, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse).astype(np.float64)
    k = sums.size
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(np.float64)  # (B, k)
    means = (draws @ sums) / (draws @ counts)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(v.mean()), (float(low), float(high))
