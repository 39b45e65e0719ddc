"""Swin-UNet decoder with CS-UNet's token-wise fusion of CNN and Swin skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn

from .config import TILE_MULTIPLE, SwinConfig

__all__ = ["PatchExpand", "SwinUNetDecoder"]


class PatchExpand(nn.Module):
    """Swin-UNet's learned upsampling: Linear to ``scale**2 * out_dim`` then depth-to-space."""

    def __init__(self, dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, sH, sW, out_dim)
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, self.out_dim)
        return self.norm(x)


def _to_tokens_like(feature: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """NCHW CNN feature -> NHWC at ``ref``'s grid (CNNs with odd padding can be off by a pixel)."""
    if feature.shape[-2:] != ref.shape[1:3]:
        feature = F.interpolate(feature, size=ref.shape[1:3], mode="bilinear", align_corners=False)
    return feature.permute(0, 2, 3, 1)


class SwinUNetDecoder(nn.Module):
    """Swin blocks + patch expanding, fusing skips by concatenation along channels + Linear.

    Level ``l`` (0 = stride 4) holds ``fuse.l`` (Linear of [decoder | Swin skip | CNN skip] to the
    Swin width), ``stages.l`` (Swin blocks mirroring encoder stage ``l``) and ``expand.l`` (patch
    expand to level ``l-1``). At the bottleneck, as in the authors' code, the concatenation
    [Swin 768 | CNN s32] goes straight into the patch-expanding Linear (``expand.3``), which fuses
    and upsamples in one step. Without a CNN (``cnn_channels=None``) this is the Swin-UNet decoder.
    """

    def __init__(self, cfg: SwinConfig, num_classes: int, cnn_channels: Sequence[int] | None) -> None:
        super().__init__()
        dims = cfg.dims
        n = len(dims)
        cnn = tuple(cnn_channels) if cnn_channels is not None else (0,) * n
        self.has_cnn = cnn_channels is not None
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # cpu: also under a meta device
        self.fuse = nn.ModuleDict()
        self.stages = nn.ModuleDict()
        self.expand = nn.ModuleDict()
        top = n - 1
        self.fuse[str(top)] = nn.Identity()  # fused by expand[top], see the class docstring
        self.expand[str(top)] = PatchExpand(dims[top] + cnn[top], dims[top - 1], scale=2)
        for level in range(top - 1, -1, -1):
            d = dims[level]
            self.fuse[str(level)] = nn.Linear(2 * d + cnn[level], d)
            res = TILE_MULTIPLE // cfg.patch_size // 2**level
            start = sum(cfg.depths[:level])
            self.stages[str(level)] = SwinTransformerStage(
                dim=d,
                out_dim=d,
                input_resolution=(res, res),
                depth=cfg.depths[level],
                downsample=False,
                num_heads=cfg.num_heads[level],
                window_size=cfg.window_size,
                dynamic_mask=True,
                mlp_ratio=cfg.mlp_ratio,
                drop_path=dpr[start : start + cfg.depths[level]],
            )
            if level > 0:
                self.expand[str(level)] = PatchExpand(d, dims[level - 1], scale=2)
        self.norm_up = nn.LayerNorm(dims[0])
        self.final_expand = PatchExpand(dims[0], dims[0], scale=cfg.patch_size)
        self.head = nn.Conv2d(dims[0], num_classes, kernel_size=1)

    def forward(self, swin: Sequence[torch.Tensor], cnn: Sequence[torch.Tensor] | None) -> torch.Tensor:
        top = len(swin) - 1

        def fused(level: int, *parts: torch.Tensor) -> torch.Tensor:
            tokens = list(parts)
            if self.has_cnn:
                tokens.append(_to_tokens_like(cnn[level], swin[level]))
            x = torch.cat(tokens, dim=-1) if len(tokens) > 1 else tokens[0]
            return self.fuse[str(level)](x)

        x = self.expand[str(top)](fused(top, swin[top]))
        for level in range(top - 1, -1, -1):
            x = self.stages[str(level)](fused(level, x, swin[level]))
            if level > 0:
                x = self.expand[str(level)](x)
        x = self.final_expand(self.norm_up(x))
        return self.head(x.permute(0, 3, 1, 2))
