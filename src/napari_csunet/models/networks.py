"""The three networks the paper compares: CS-UNet, Swin-UNet and a CNN-encoder UNet."""

from __future__ import annotations

import torch
from torch import nn

from .config import TILE_MULTIPLE, ModelConfig, nearest_multiple
from .encoders import CNNEncoder, SwinEncoder
from .shift_masks import cache_shift_masks
from .swin_decoder import SwinUNetDecoder
from .unet import ConvUNetDecoder

__all__ = ["SegmentationNet", "CSUNet", "SwinUNet", "CNNUNet", "build_network", "check_input_size"]


def check_input_size(h: int, w: int, multiple: int = TILE_MULTIPLE) -> None:
    """Raise a ValueError that names the nearest valid size when a side is not a multiple."""
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(
            f"input of {h}x{w} pixels: both sides must be multiples of {multiple}; the nearest valid "
            f"size is {nearest_multiple(h, multiple)}x{nearest_multiple(w, multiple)} "
            "(napari_csunet.engine.predictor pads and tiles images of any size for you)"
        )


class SegmentationNet(nn.Module):
    """Common front: checks the size and repeats grey input to the 3 channels encoders expect."""

    size_multiple: int = TILE_MULTIPLE

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a (batch, channels, height, width) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_chans:
            raise ValueError(f"model expects {self.config.in_chans} input channel(s), got {x.shape[1]}")
        check_input_size(x.shape[-2], x.shape[-1], self.size_multiple)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class CSUNet(SegmentationNet):
    """CS-UNet (Alrfou et al., arXiv 2308.13917): CNN and Swin encoders fused into a Swin-UNet decoder.

    Fusion is token-wise concatenation + Linear at the bottleneck and at 1/16, 1/8 and 1/4. The Swin
    skips are stage outputs rather than the authors' pre-block tokens (see :class:`SwinEncoder`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        assert config.swin is not None and config.cnn is not None
        self.swin = SwinEncoder(config.swin)
        self.cnn = CNNEncoder(config.cnn, reductions=(4, 8, 16, 32))
        self.decoder = SwinUNetDecoder(config.swin, config.num_classes, self.cnn.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        return self.decoder(self.swin(x), self.cnn(x))


class SwinUNet(SegmentationNet):
    """Swin-UNet (Cao et al.): the transformer-only baseline of the paper."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        assert config.swin is not None
        self.swin = SwinEncoder(config.swin)
        self.decoder = SwinUNetDecoder(config.swin, config.num_classes, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        return self.decoder(self.swin(x), None)


class CNNUNet(SegmentationNet):
    """CNN encoder + convolutional UNet decoder: the NASA study's setting, the CNN-only baseline.

    It only needs sides divisible by 32, but keeps the common 256 rule so every preset tiles alike.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        assert config.cnn is not None
        self.cnn = CNNEncoder(config.cnn, reductions=(2, 4, 8, 16, 32))
        self.decoder = ConvUNetDecoder(self.cnn.out_channels, config.decoder_channels, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        return self.decoder(self.cnn(x))


ARCHITECTURES: dict[str, type[SegmentationNet]] = {"csunet": CSUNet, "swinunet": SwinUNet, "unet": CNNUNet}


def build_network(config: ModelConfig) -> SegmentationNet:
    """Instantiate the network a config describes (random weights)."""
    try:
        cls = ARCHITECTURES[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {sorted(ARCHITECTURES)}") from None
    network = cls(config)
    cache_shift_masks(network)
    return network
