"""The end-to-end experiment's numbers: ``runs/<name>/metrics.json`` and its verdict.

From an :class:`~pyfacepnp.eval.evaluate.EvalResult`: every row (``trivial``, ``a``,
``b``, ``c``, ``c0``; ``c`` and ``c0`` are means over the stage-2 seeds), the oracle floors,
and ``e2e_gain``: for ``c_vs_c0`` (isolates the PnP gradient) and ``c_vs_a`` (the whole
stage 2 against the post-hoc baseline) the mean paired per-sample difference (negative:
(c) better) with its 95 % bootstrap interval over identities
(:func:`pyfacepnp.eval.bootstrap.group_bootstrap`), pooled over seeds (each sample's
difference averaged over the seeds first), per seed, and per WCPA term.
"""

from __future__ import annotations

import numpy as np

from pyfacepnp.eval.bootstrap import group_bootstrap

__all__ = ["ROW_FIELDS", "ROWS", "TERMS", "metrics_dict", "verdict", "gain_lines"]

ROWS = {"trivial": "baseline", "a": "a", "b": "b", "c": "c", "c0": "c0"}  # metrics.json row -> result key
ROW_FIELDS = ("wcpa", "d12", "d13", "d14", "rotation_deg", "translation_mm", "vertex_mm", "pnp_failed",
              "n_samples", "n_identities")
TERMS = ("wcpa", "d12", "d13", "d14")
N_BOOT = 10000


def _row(per_sample: dict, failed: int, identities: np.ndarray) -> dict:
    out = {k: float(np.mean(per_sample[k])) for k in ROW_FIELDS[:7]}
    out.update(pnp_failed=int(failed), n_samples=int(len(per_sample["wcpa"])),
               n_identities=int(len(np.unique(identities))))
    return out


def _interval(diff: np.ndarray, identities: np.ndarray) -> dict:
    mean, (lo, hi) = group_bootstrap(diff, identities, n_boot=N_BOOT)
    return {"mean": mean, "ci95": [lo, hi]}


def _comparison(res, seeds: list[int], other) -> dict:
    """Paired differences (c@s - other(s)) per term: pooled over seeds, and per seed."""
    ids = res.identities
    diffs = {s: {t: res.per_run[f"c@{s}"][t] - other(s)[t] for t in TERMS} for s in seeds}
    pooled = {t: np.mean([diffs[s][t] for s in seeds], axis=0) for t in TERMS}
    out = _interval(pooled["wcpa"], ids)
    out["per_seed"] = {str(s): _interval(diffs[s]["wcpa"], ids) for s in seeds}
    out["terms"] = {t: _interval(pooled[t], ids) for t in TERMS}
    return out


def metrics_dict(res) -> dict:
    """The content of ``metrics.json`` (see the module docstring)."""
    ids = res.identities if res.identities is not None else np.arange(res.n)
    out: dict = {}
    for row, key in ROWS.items():
        if key in res.per_sample:
            out[row] = _row(res.per_sample[key], res.failures.get(key, 0), ids)
    for arm in ("c", "c0"):
        seeds = res.seeds(arm)
        if arm in out:
            out[arm]["seeds"] = seeds
            out[arm]["per_seed"] = {str(s): _row(res.per_run[f"{arm}@{s}"], res.run_failures.get(f"{arm}@{s}", 0), ids)
                                    for s in seeds}
    seeds_c, seeds_c0 = res.seeds("c"), res.seeds("c0")
    gain: dict = {}
    paired = [s for s in seeds_c if s in seeds_c0]
    if paired:
        gain["c_vs_c0"] = _comparison(res, paired, lambda s: res.per_run[f"c0@{s}"])
    if seeds_c and "a" in res.per_sample:
        gain["c_vs_a"] = _comparison(res, seeds_c, lambda s: res.per_sample["a"])
    gain["bootstrap"] = {"unit": "identity", "replicates": N_BOOT, "level": 0.95,
                         "pooling": "per-sample difference averaged over seeds, then resampled by identity"}
    out["e2e_gain"] = gain
    out["oracle_floors"] = {k: dict(v) for k, v in res.oracles.items()}
    return out


def verdict(comparison: dict, name: str = "(c)", other: str = "(c0)") -> str:
    """One plain sentence on a comparison of :func:`metrics_dict`'s ``e2e_gain``."""
    m, (lo, hi) = comparison["mean"], comparison["ci95"]
    ci = f"{m:+.2f} WCPA points, 95 % CI [{lo:+.2f}, {hi:+.2f}]"
    if hi < 0:
        return f"{name} is better than {other}: {ci} (the interval excludes zero)."
    if lo > 0:
        return f"{name} is worse than {other}: {ci} (the interval excludes zero)."
    return f"{name} is not distinguishable from {other}: {ci} (the interval includes zero)."


def gain_lines(metrics: dict) -> list[str]:
    """Markdown lines of the experiment: verdicts, then the per-term and per-seed table."""
    gain = metrics.get("e2e_gain", {})
    lines = []
    names = {"c_vs_c0": ("(c)", "its control (c0): the PnP gradient's effect"),
             "c_vs_a": ("(c)", "(a): the whole stage 2 against the post-hoc baseline")}
    for key, (a, b) in names.items():
        if key in gain:
            lines.append(f"- {verdict(gain[key], a, b)}")
    if not any(k in gain for k in names):
        return lines
    lines += ["", "| comparison | term | mean difference | 95 % CI (identities) |", "|---|---|---:|---|"]
    for key in names:
        if key not in gain:
            continue
        for t, d in gain[key]["terms"].items():
            lines.append(f"| {key} | {t} | {d['mean']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
        for s, d in gain[key]["per_seed"].items():
            lines.append(f"| {key} | wcpa, seed {s} | {d['mean']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    lines.append("")
    c_vs_c0 = gain.get("c_vs_c0")
    if c_vs_c0:
        terms = {t: d for t, d in c_vs_c0["terms"].items() if t != "wcpa"}
        big = min(terms, key=lambda t: terms[t]["mean"] * (10 if t == "d14" else 1))
        d = terms[big]
        weight = 10 if big == "d14" else 1
        lines.append(f"- Largest contribution to (c) - (c0): {big} ({weight} x {d['mean']:+.3f} = "
                     f"{weight * d['mean']:+.2f} WCPA points).")
    return lines
