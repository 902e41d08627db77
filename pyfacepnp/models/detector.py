"""Coarse 68-landmark detector on the downscaled full frame."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pyfacepnp.models.backbone import ResNetBackbone
from pyfacepnp.geometry.camera import normalized_to_pixels
from pyfacepnp.geometry.crop import resize_image
from pyfacepnp.models.face_net import normalize_image


class LandmarkDetector(nn.Module):
    """Predicts 68 landmarks (full-frame pixels) from a downscaled full frame.

    A stride-8 ResNet feature map feeds one heatmap per landmark; each landmark is the
    soft-argmax (expected position under the softmax) of its heatmap. Unlike a fully
    connected regressor, this is translation-equivariant, which matters here: the face
    is small and can be anywhere in the frame. Its only job is to find the face well
    enough to cut a similarity crop around it; the dense landmarks come from
    :class:`~pyfacepnp.models.face_net.FaceNet` on that crop.

    Args:
        input_size: side of the downscaled frame the network sees.
        widths, depths, stem_width: backbone stages; the first two halve the
            resolution (with the stem: stride 8), the others keep it.
        num_landmarks: 68.

    Example:
        >>> det = LandmarkDetector(input_size=32, widths=(8, 8), depths=(1, 1), stem_width=8)
        >>> det(torch.rand(2, 3, 200, 200)).shape  # any frame size; answers in its pixels
        torch.Size([2, 68, 2])
    """

    def __init__(self, input_size: int = 96, widths: Sequence[int] = (16, 32, 48, 64),
                 depths: Sequence[int] = (1, 1, 1, 1), stem_width: int = 16,
                 num_landmarks: int = 68) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_landmarks = num_landmarks
        strides = tuple(2 if i < 2 else 1 for i in range(len(widths)))
        self.backbone = ResNetBackbone(widths, depths, stem_width, strides=strides)
        self.heatmaps = nn.Conv2d(self.backbone.out_channels, num_landmarks, 1)

    def heatmap_logits(self, small: torch.Tensor) -> torch.Tensor:
        """``(B, 3, s, s)`` downscaled frames -> ``(B, 68, s/8, s/8)`` heatmap logits."""
        return self.heatmaps(self.backbone(normalize_image(small))).float()

    def forward(self, image: torch.Tensor, return_logits: bool = False):
        """``(B, 3, H, W)`` frames (float [0, 1] or uint8) -> ``(B, 68, 2)`` pixels of the frame
        (and the heatmap logits with ``return_logits``, for the training loss)."""
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[2] != image.shape[3]:
            raise ValueError(f"image must have shape (B, 3, S, S), got {tuple(image.shape)}")
        size = image.shape[-1]
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image
        if size != self.input_size:
            x = resize_image(x, self.input_size)
        logits = self.heatmap_logits(x)
        pixels = normalized_to_pixels(soft_argmax(logits), size)
        return (pixels, logits) if return_logits else pixels


def _cell_centres(n: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised coordinates of ``n`` cell centres (``align_corners=False`` convention)."""
    return (torch.arange(n, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / n) - 1.0


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Expected position under ``softmax(logits)``: ``(B, N, h, w)`` -> ``(B, N, 2)`` in [-1, 1]."""
    b, n, h, w = logits.shape
    prob = torch.softmax(logits.reshape(b, n, h * w), dim=-1).reshape(b, n, h, w)
    x = (prob.sum(2) * _cell_centres(w, logits)).sum(-1)
    y = (prob.sum(3) * _cell_centres(h, logits)).sum(-1)
    return torch.stack([x, y], -1)


def heatmap_cross_entropy(logits: torch.Tensor, target: torch.Tensor, sigma_cells: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the heatmap softmax against a Gaussian around each target.

    Gives every cell a gradient from the first step (a soft-argmax loss alone starts from
    a flat heatmap and learns slowly). ``target`` is ``(B, N, 2)`` normalised coordinates.
    """
    b, n, h, w = logits.shape
    xs, ys = _cell_centres(w, logits), _cell_centres(h, logits)
    dx = (xs.view(1, 1, 1, w) - target[..., 0, None, None]) * (w / 2.0)  # in cells
    dy = (ys.view(1, 1, h, 1) - target[..., 1, None, None]) * (h / 2.0)
    g = torch.exp(-0.5 * (dx ** 2 + dy ** 2) / sigma_cells ** 2)
    g = g / g.sum(dim=(-1, -2), keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(logits.reshape(b, n, h * w), -1).reshape(b, n, h, w)
    return -(g * logp).sum(dim=(-1, -2)).mean()



def heatmap_peak(logits: torch.Tensor) -> torch.Tensor:
    """Confidence of each landmark: the largest cell probability of ``softmax(logits)``,
    ``(B, N, h, w) -> (B, N)`` in ``(0, 1]``.

    A landmark the detector recognises has a peaked heatmap (the training target is a
    Gaussian of one cell, whose peak holds about 1/(2 pi) = 0.16 of the mass); one it does
    not recognise spreads its mass, towards ``1 / (h w)``. ``pyfacepnp predict`` uses the
    median over the 68 to warn that a photograph is unlike the synthetic training frames.

    Example:
        >>> logits = torch.zeros(1, 2, 4, 4); logits[0, 0, 1, 2] = 1e4
        >>> heatmap_peak(logits)
        tensor([[1.0000, 0.0625]])
    """
    b, n, h, w = logits.shape
    return torch.softmax(logits.float().reshape(b, n, h * w), dim=-1).amax(-1)
