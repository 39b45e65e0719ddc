"""The two encoders of CS-UNet: a timm CNN and a timm Swin-Transformer, both channels-last out.

Both keep timm's own parameter names, so timm's pretrained weights and its checkpoint converters
apply to them unchanged (see :mod:`napari_csunet.weights`).
"""

from __future__ import annotations

import timm
import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from .config import TILE_MULTIPLE, SwinConfig

__all__ = ["CNNEncoder", "SwinEncoder"]


class CNNEncoder(nn.Module):
    """A timm CNN as a feature pyramid at the requested strides.

    ``out_channels`` and ``reductions`` follow segmentation_models_pytorch's encoder contract so
    decoders derive their widths from the encoder.
    """

    def __init__(self, name: str, reductions: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        probe = timm.create_model(name, pretrained=False, features_only=True)
        available = probe.feature_info.reduction()
        # the deepest feature map at each stride is the most processed one
        indices = []
        for r in reductions:
            hits = [i for i, red in enumerate(available) if red == r]
            if not hits:
                raise ValueError(f"CNN {name!r} has no features at stride {r} (it has {available})")
            indices.append(hits[-1])
        del probe
        self.name = name
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(indices))
        self.out_channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


class SwinEncoder(nn.Module):
    """Swin-T encoder that returns the four stage outputs, channels last (B, H, W, C).

    The authors' Swin-UNet takes its skips *before* each stage's blocks; here the skips are the
    stage *outputs* (after the blocks, timm's feature convention), which carry attended context at
    each scale and make the encoder a standard timm feature extractor. The bottleneck gets the final
    LayerNorm, as in the authors' code.
    """

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # named ``model`` so its state dict is timm's SwinTransformer naming behind one prefix
        self.model = SwinTransformer(
            img_size=TILE_MULTIPLE,
            patch_size=cfg.patch_size,
            in_chans=3,
            num_classes=0,
            embed_dim=cfg.embed_dim,
            depths=cfg.depths,
            num_heads=cfg.num_heads,
            window_size=cfg.window_size,
            mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path_rate,
            strict_img_size=False,
        )
        self.out_channels: tuple[int, ...] = cfg.dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # timm's own stage walk (final norm on the last stage); it returns NCHW, the decoder takes NHWC
        feats = self.model.forward_intermediates(x, norm=True, intermediates_only=True)
        return [f.permute(0, 2, 3, 1) for f in feats]
