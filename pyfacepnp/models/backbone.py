"""A small ResNet-style CNN backbone whose width and depth are configurable."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # Zero-initialised last norm: each block starts as the identity (Goyal et al. 2017).
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        # The projection is a 1x1 convolution of stride `stride`, written as a subsampling
        # (a 1x1 average pool of that stride: its gradient keeps the channels-last layout,
        # a slice's does not) followed by a stride-1 1x1 convolution (the same values and
        # parameters): the CPU's oneDNN backward of a strided 1x1 convolution in
        # channels-last layout crashes for some small channel counts (8 -> 8 in torch 2.13).
        self.shortcut_stride = stride
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, 1, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.shortcut_stride
        return torch.relu(y + self.shortcut(nn.functional.avg_pool2d(x, 1, s) if s != 1 else x))


class ResNetBackbone(nn.Module):
    """ResNet-style feature extractor: a stride-2 stem, then one stage per width.

    By default each stage halves the resolution in its first block, so the output stride
    is ``2 ** (1 + len(widths))`` (32 for four stages); ``strides`` sets each stage's.

    Args:
        widths: channels of each stage, e.g. ``(64, 128, 256, 512)`` for ResNet-18.
        depths: blocks per stage, same length as ``widths``.
        stem_width: channels of the stem convolution.
        in_channels: image channels.
        strides: stride of each stage's first block (default: 2 everywhere).

    Shape:
        input ``(B, in_channels, H, W)`` -> output ``(B, widths[-1], H / s, W / s)``.

    Example:
        >>> net = ResNetBackbone((8, 16), (1, 1), stem_width=8)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        depths: Sequence[int] = (1, 1, 1, 1),
        stem_width: int = 16,
        in_channels: int = 3,
        strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        strides = tuple(strides) if strides is not None else (2,) * len(widths)
        if len(strides) != len(widths):
            raise ValueError(f"strides must have one entry per stage, got {strides} for {len(widths)} stages")
        if len(widths) != len(depths) or not widths:
            raise ValueError(f"widths and depths must be non-empty and of equal length, "
                             f"got {tuple(widths)} and {tuple(depths)}")
        if min(depths) < 1:
            raise ValueError(f"every stage needs at least one block, got depths={tuple(depths)}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        stages = []
        c = stem_width
        for w, d, st in zip(widths, depths, strides):
            blocks = [BasicBlock(c, w, stride=st)] + [BasicBlock(w, w) for _ in range(d - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = c
        self.stage_channels = tuple(widths)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Channels-last (NHWC) weights and activations: oneDNN's convolutions and their
        # backward skip the layout conversions they make for NCHW; a training step of the cpu
        # preset is 15-25 % faster on CPU (not measured on CUDA). Values and shapes are the
        # same as in NCHW.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_outputs(x)[-1]

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, finest first (the last is :meth:`forward`'s)."""
        maps, y = [], self.stem(x.contiguous(memory_format=torch.channels_last))
        for stage in self.stages:
            y = stage(y)
            maps.append(y)
        return maps


class SpatialPool(nn.Module):
    """Reduce a feature map to a vector that keeps a coarse ``grid x grid`` layout.

    Landmark positions are spatial; a global average would discard where things are.
    """

    def __init__(self, c_in: int, c_reduced: int = 32, grid: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(c_in, c_reduced, 1, bias=False),
                                    nn.BatchNorm2d(c_reduced), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.out_features = c_reduced * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.reduce(x)).flatten(1)
