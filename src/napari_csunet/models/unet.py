"""The CNN-encoder UNet baseline (NASA's setting: segmentation_models_pytorch's Unet decoder)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvUNetDecoder"]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _DecoderBlock(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin + skip, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class ConvUNetDecoder(nn.Module):
    """Upsample to each skip's exact size, concatenate, two 3x3 conv-BN-ReLU; a 3x3 head.

    ``encoder_channels`` are the encoder's features from shallow (stride 2) to deep (stride 32).
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        deep_first = list(encoder_channels)[::-1]
        skips = deep_first[1:] + [0] * (len(decoder_channels) - len(deep_first) + 1)
        ins = [deep_first[0], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(_DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels, strict=True))
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        deep_first = list(features)[::-1]
        x = deep_first[0]
        skips = deep_first[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return self.head(x)
