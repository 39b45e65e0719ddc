"""Swin's shifted-window attention masks, built once per feature-map size instead of every forward.

timm builds the (windows, 64, 64) mask of a shifted block on every call when the input size may
vary (``dynamic_mask``, which the encoders need for tiles of any size). For a 2048² tile the six
shifted blocks of csunet-small spend about 0.15 s on it (the stage-1 mask alone is 4,096 windows x
64 x 64), the same for every tile of an image and every image of a folder. Inference (gradients
off) reuses masks from a small LRU cache, bounded in bytes (a mask larger than the bound, e.g. the
GPU's 8192² tiles, is built every time as before); training builds them as timm does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

__all__ = ["cache_shift_masks", "clear_shift_masks", "MAX_MASKS", "MAX_BYTES"]

MAX_MASKS = 8  # one tile size needs one mask per stage resolution (4); two sizes fit
MAX_BYTES = 256 * 2**20  # csunet-small at 2048² (float32 masks): 89 MB a tile size
_masks: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
_lock = threading.Lock()


class CachedMaskBlock(SwinTransformerBlock):
    """timm's block, with the shift mask from the cache at inference (a class, so models pickle)."""

    def get_attn_mask(self, x: torch.Tensor | None = None, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> torch.Tensor | None:
        build = super().get_attn_mask
        if x is None or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return build(x, device, dtype)
        key = (x.shape[1], x.shape[2], tuple(self.window_size), tuple(self.shift_size), x.dtype, x.device,
               torch.is_inference_mode_enabled())
        with _lock:
            mask = _masks.get(key)
            if mask is not None:
                _masks.move_to_end(key)
                return mask
        mask = build(x, device, dtype)
        if mask is not None and _nbytes(mask) <= MAX_BYTES:
            with _lock:
                _masks[key] = mask
                while len(_masks) > MAX_MASKS or sum(map(_nbytes, _masks.values())) > MAX_BYTES:
                    _masks.popitem(last=False)
        return mask


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def cache_shift_masks(model: nn.Module) -> int:
    """Give every size-dynamic shifted Swin block of ``model`` the cached mask; returns how many."""
    blocks = [m for m in model.modules()
              if type(m) is SwinTransformerBlock and getattr(m, "dynamic_mask", False) and any(m.shift_size)]
    for block in blocks:
        block.__class__ = CachedMaskBlock
    return len(blocks)


def clear_shift_masks() -> None:
    """Forget every cached mask (they are rebuilt on the next forward): after an out-of-memory error."""
    with _lock:
        _masks.clear()
