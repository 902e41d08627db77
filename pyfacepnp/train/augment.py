"""Training augmentation: photometric jitter of uint8 images and a random similarity re-crop
that keeps every crop-derived target exact."""

from __future__ import annotations

import torch

from pyfacepnp.geometry.crop import warp_image
from pyfacepnp.train.data import to_uint8
from pyfacepnp.train.loop import full_precision

__all__ = ["photometric", "geometric_jitter"]


def photometric(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 images -> float [0, 1] with random per-sample gain, bias and colour cast."""
    x = images.float() / 255.0
    b = x.shape[0]
    gain = 1.0 + 0.25 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    bias = 0.08 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    cast = 1.0 + 0.08 * (2 * torch.rand(b, 3, 1, 1, generator=gen) - 1)
    gain, bias, cast = (v.to(x.device) for v in (gain, bias, cast))
    return (x * gain * cast + bias).clamp(0, 1)


def geometric_jitter(batch: dict, gen: torch.Generator, rotate: float = 0.15, scale: float = 0.13,
                     shift: float = 0.085) -> dict:
    """Random similarity re-crop of each sample (uniform rotation in +-``rotate`` rad, scale
    in +-``scale``, shift in +-``shift`` of the side about the crop centre).

    It is training's only crop jitter (the cached crops are cut without one); its spread
    (standard deviations 0.087 rad, 7.5 %, 4.9 %) is that of the two jitters it replaces
    together: the data set's former per-sample jitter (Gaussian, 0.05 rad, 6 %, 4 %) and the
    former re-crop (uniform, +-0.12 rad, +-8 %, +-5 %).

    The crop is resampled and ``crop_affine`` composed with the same similarity, so every
    target derived from it (landmark pixels, PnP) stays exact. It multiplies the effective
    training set and covers the misalignment of detector crops.
    """
    with full_precision(batch["crop"].device):
        return _geometric_jitter(batch, gen, rotate, scale, shift)


def _geometric_jitter(batch, gen, rotate, scale, shift):
    crop = batch["crop"]
    b, c = crop.shape[0], crop.shape[-1]
    u = lambda: 2 * torch.rand(b, generator=gen) - 1  # noqa: E731
    ang, s = rotate * u(), 1.0 + scale * u()
    tx, ty = shift * c * u(), shift * c * u()
    centre = (c - 1) / 2.0
    cos, sin = s * torch.cos(ang), s * torch.sin(ang)
    S = torch.zeros(b, 3, 3)
    S[:, 0, 0], S[:, 0, 1], S[:, 1, 0], S[:, 1, 1] = cos, -sin, sin, cos
    S[:, 0, 2] = centre + tx - (cos * centre - sin * centre)
    S[:, 1, 2] = centre + ty - (sin * centre + cos * centre)
    S[:, 2, 2] = 1.0
    S = S.to(batch["crop_affine"])
    out = dict(batch)
    out["crop"] = to_uint8(warp_image(crop.float() / 255.0, S[:, :2], c))
    A3 = torch.cat([batch["crop_affine"], S.new_tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)], 1)
    out["crop_affine"] = (S @ A3)[:, :2]
    return out
