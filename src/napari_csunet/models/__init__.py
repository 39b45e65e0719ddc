"""CS-UNet and its baselines in pure PyTorch + timm (no Qt, no napari).

Importing this package imports torch; ``napari_csunet.models.config`` and ``.registry`` do not.
"""

from __future__ import annotations

from .config import TILE_MULTIPLE, ModelConfig, SwinConfig
from .registry import PRESETS, Preset, get_preset

__all__ = [
    "TILE_MULTIPLE", "ModelConfig", "SwinConfig", "PRESETS", "Preset", "get_preset",
    "build_model", "count_parameters",
]


def build_model(preset_or_config: str | ModelConfig, num_classes: int | None = None, in_chans: int | None = None):
    """Build a network with random weights from a preset name or a config.

    ``num_classes``/``in_chans`` override the preset's values. Pretrained encoder weights are
    applied separately (``napari_csunet.weights.apply_sources``).
    """
    from .networks import build_network

    config = get_preset(preset_or_config).config if isinstance(preset_or_config, str) else preset_or_config
    if num_classes is not None or in_chans is not None:
        config = config.with_classes(num_classes or config.num_classes, in_chans)
    return build_network(config)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
