"""Metrics to CSV (always) and TensorBoard (when installed)."""

from __future__ import annotations

import csv
import os


class MetricsLogger:
    """Appends one CSV row per logged step; mirrors scalars to TensorBoard if available.

    On resume the file keeps the rows up to the resumed step (a row's step counts the steps
    done), so a run stopped at a logging step and resumed writes the same CSV as an
    uninterrupted one.
    """

    def __init__(self, path: str, resume_step: int = 0, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.fields: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        rows: list[dict] = []
        if resume_step > 0 and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        if rows:
            self.fields = list(rows[0].keys())
        with open(path, "w", newline="") as f:
            if self.fields:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(rows)
        try:  # TensorBoard is optional
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(os.path.dirname(path), "tb"))
        except Exception:
            self.tb = None

    def log(self, step: int, values: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()}}
        new_file = self.fields is None
        if new_file:
            self.fields = list(row.keys())
        row = {k: row.get(k, "") for k in self.fields}
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new_file:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_csv(path: str) -> dict[str, list[float]]:
    """Columns of a metrics CSV as float lists (empty cells skipped per column)."""
    cols: dict[str, list[float]] = {}
    if not os.path.exists(path):
        return cols
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    cols.setdefault(k, []).append(float(v))
    return cols
