"""Coarse 68-landmark detector on the downscaled full frame, and the face crop it implies."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pyfacepnp.models.backbone import ResNetBackbone, SpatialPool
from pyfacepnp.models.coords import normalized_to_pixels, pixels_to_normalized, resize_image
from pyfacepnp.models.face_net import _mlp, normalize_image


class LandmarkDetector(nn.Module):
    """Predicts 68 landmarks (full-image pixels) from a downscaled full frame.

    Its only job is to find the face well enough to cut a similarity crop around it;
    the dense landmarks come from :class:`~pyfacepnp.models.face_net.FaceNet` on that crop.

    Args:
        input_size: side of the downscaled frame the network sees.
        widths, depths, stem_width: backbone stages.
        hidden: head width.
        num_landmarks: 68.

    Example:
        >>> det = LandmarkDetector(input_size=32, widths=(8, 8), depths=(1, 1), stem_width=8)
        >>> det(torch.rand(2, 3, 200, 200)).shape  # any frame size; answers in its pixels
        torch.Size([2, 68, 2])
    """

    def __init__(self, input_size: int = 96, widths: Sequence[int] = (16, 32, 48, 64),
                 depths: Sequence[int] = (1, 1, 1, 1), stem_width: int = 16, hidden: int = 256,
                 num_landmarks: int = 68) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_landmarks = num_landmarks
        self.backbone = ResNetBackbone(widths, depths, stem_width)
        self.pool = SpatialPool(self.backbone.out_channels)
        self.head = _mlp(self.pool.out_features, hidden, num_landmarks * 2)

    def set_mean_landmarks(self, mean_norm: torch.Tensor) -> None:
        """Start from ``mean_norm`` ``(68, 2)`` landmarks in normalised frame coordinates."""
        with torch.no_grad():
            self.head[-1].bias.copy_(mean_norm.reshape(-1).to(self.head[-1].bias))

    def forward_normalized(self, small: torch.Tensor) -> torch.Tensor:
        """``(B, 3, s, s)`` downscaled frames -> ``(B, 68, 2)`` normalised coordinates."""
        feat = self.pool(self.backbone(normalize_image(small)))
        return self.head(feat).float().reshape(-1, self.num_landmarks, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` frames (float [0, 1] or uint8) -> ``(B, 68, 2)`` pixels of the frame."""
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[2] != image.shape[3]:
            raise ValueError(f"image must have shape (B, 3, S, S), got {tuple(image.shape)}")
        size = image.shape[-1]
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image
        if size != self.input_size:
            x = resize_image(x, self.input_size)
        return normalized_to_pixels(self.forward_normalized(x), size)


def to_detector_coords(landmarks_px: torch.Tensor, image_size: int) -> torch.Tensor:
    """Frame pixels -> the normalised coordinates the detector regresses."""
    return pixels_to_normalized(landmarks_px, image_size)
