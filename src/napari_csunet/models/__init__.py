"""CS-UNet and its baselines in pure PyTorch + timm (no Qt, no napari).

Importing this package imports torch; ``napari_csunet.models.config`` and ``.registry`` do not.
"""

from __future__ import annotations

from .config import TILE_MULTIPLE, ModelConfig, SwinConfig
from .registry import PRESETS, Preset, get_preset

__all__ = [
    "TILE_MULTIPLE", "ModelConfig", "SwinConfig", "PRESETS", "Preset", "get_preset",
    "build_model", "count_parameters", "with_new_head",
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


def with_new_head(model, num_classes: int, always: bool = False):
    """The same network with a freshly initialised output layer for ``num_classes`` outputs.

    Every weight whose shape does not depend on the class count is kept, so a pretrained (or
    differently labelled) model keeps its encoders and decoder. Returns ``model`` itself when the
    count already matches, unless ``always`` (a pretrained model's head predicts pixels, not classes).
    """
    from .networks import build_network

    if model.config.num_classes == num_classes and not always:
        return model
    fresh = build_network(model.config.with_classes(num_classes))
    target = fresh.state_dict()
    kept = {k: v for k, v in model.state_dict().items()
            if k in target and target[k].shape == v.shape and not (always and ".head." in f".{k}")}
    result = fresh.load_state_dict(kept, strict=False)
    changed = set(target) - set(kept)
    if set(result.missing_keys) != changed or any(".head." not in f".{k}" for k in changed):
        raise ValueError(f"cannot swap the output layer: unexpected weights differ {sorted(changed)[:5]}")
    return fresh.to(next(model.parameters()).device)
