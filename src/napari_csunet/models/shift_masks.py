"""Swin's shifted-window attention masks, built once per feature-map size instead of every forward.

timm builds the (windows, 64, 64) mask of a shifted block on every call when the input size may
vary (``dynamic_mask``, which the encoders need for tiles of any size). For a 2048² tile the six
shifted blocks of csunet-small spend about 0.15 s on it (the stage-1 mask alone is 4,096 windows x
64 x 64), the same for every tile of an image and every image of a folder. Inference (gradients
off) reuses masks from a small LRU cache; training builds them as timm does.
"""

from __future__ import annotations

import threading
import types
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

__all__ = ["cache_shift_masks", "clear_shift_masks", "MAX_MASKS"]

MAX_MASKS = 8  # one tile size needs one mask per stage resolution (4); two sizes fit
_masks: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
_lock = threading.Lock()


def cache_shift_masks(model: nn.Module) -> int:
    """Give every size-dynamic shifted Swin block of ``model`` the cached mask; returns how many."""
    from timm.models.swin_transformer import SwinTransformerBlock

    blocks = [m for m in model.modules()
              if isinstance(m, SwinTransformerBlock) and getattr(m, "dynamic_mask", False) and any(m.shift_size)]
    for block in blocks:
        block.get_attn_mask = types.MethodType(_cached_attn_mask, block)
    return len(blocks)


def clear_shift_masks() -> None:
    """Forget every cached mask (they are rebuilt on the next forward)."""
    with _lock:
        _masks.clear()


def _cached_attn_mask(block: nn.Module, x: torch.Tensor | None = None, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> torch.Tensor | None:
    build = type(block).get_attn_mask
    if x is None or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return build(block, x, device, dtype)
    key = (x.shape[1], x.shape[2], tuple(block.window_size), tuple(block.shift_size), x.dtype, x.device,
           torch.is_inference_mode_enabled())
    with _lock:
        mask = _masks.get(key)
        if mask is not None:
            _masks.move_to_end(key)
            return mask
    mask = build(block, x, device, dtype)
    with _lock:
        _masks[key] = mask
        while len(_masks) > MAX_MASKS:
            _masks.popitem(last=False)
    return mask
