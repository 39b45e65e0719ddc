"""Pretrained weight sources: registry, cache and downloads, key conversion, applying to a model.

Importing this package does not import torch: the registry, the cache and the errors are plain
Python; the functions that convert and load (``apply_sources``, ``import_weights``, ...) import
torch when first used. See ``docs/weights.md``.
"""

from __future__ import annotations

from typing import Any

from .cache import cache_dir, cached_file, converted_path, download, download_path
from .errors import (
    UnknownWeights,
    UnsafeCheckpointError,
    WeightsError,
    WeightsFormatError,
    WeightsUnavailable,
)
from .sources import KNOWN_SHA256, WeightSource, all_sources, get_source, source_id_for

__all__ = [
    "WeightSource", "KNOWN_SHA256", "all_sources", "get_source", "source_id_for",
    "cache_dir", "cached_file", "converted_path", "download", "download_path",
    "WeightsError", "UnknownWeights", "WeightsUnavailable", "WeightsFormatError", "UnsafeCheckpointError",
    "apply_sources", "build_preset_model", "import_weights", "materialize", "list_weights", "load_cnn", "load_swin", "mirror_decoder",
    "read_checkpoint",
    "ConversionReport",
]

_LAZY = {
    "apply_sources": "apply", "build_preset_model": "apply", "import_weights": "apply", "materialize": "apply", "list_weights": "apply",
    "mirror_decoder": "apply", "load_cnn": "apply", "load_swin": "apply", "read_checkpoint": "checkpoint", "ConversionReport": "convert",
}


def __getattr__(name: str) -> Any:
    """Torch-using functions load on first use, so ``csunet --help`` and napari start fast."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
