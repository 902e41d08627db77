"""Statistics of the training split: the means that initialise the landmark head and define
the trivial baseline (mean shape at the mean pose)."""

from __future__ import annotations

from pyfacepnp.geometry.rotation import nearest_rotation
from pyfacepnp.train.losses import gt_crop_landmarks

__all__ = ["train_statistics"]


def train_statistics(train) -> dict:
    """Means of an in-memory split (:class:`~pyfacepnp.train.data.TensorSplit`).

    Returns:
        dict with ``mean_crop_landmarks (N, 2)`` crop pixels of the GT vertices, ``mean_R
        (3, 3)`` (the rotation nearest the mean matrix), ``mean_t (3,)`` and
        ``mean_vertices (N, 3)``.
    """
    t = train.tensors
    lm_crop = gt_crop_landmarks({k: t[k] for k in ("vertices", "R", "t", "K", "crop_affine")})
    return {"mean_crop_landmarks": lm_crop.mean(0), "mean_R": nearest_rotation(t["R"].mean(0)),
            "mean_t": t["t"].mean(0), "mean_vertices": t["vertices"].mean(0)}
