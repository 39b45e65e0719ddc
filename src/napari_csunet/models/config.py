"""Architecture configs: plain dataclasses, importable without torch.

A config plus a class count rebuilds a model exactly, so model files store the config (as JSON)
next to the weights and never pickle Python objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["SwinConfig", "ModelConfig", "TILE_MULTIPLE", "nearest_multiple"]

#: Input sides must be multiples of this: patch 4 x three 2x merges x window 8 = 256.
TILE_MULTIPLE = 256


def nearest_multiple(n: float, multiple: int = TILE_MULTIPLE) -> int:
    """The valid size closest to ``n`` (at least one ``multiple``): what every size error suggests."""
    return max(multiple, int(round(n / multiple)) * multiple)


@dataclass(frozen=True)
class SwinConfig:
    """Swin-Transformer encoder (and mirrored decoder) shape."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 8
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a segmentation network.

    ``arch`` is one of ``"csunet"`` (CNN + Swin encoders, Swin-UNet decoder), ``"swinunet"``
    (Swin encoder only) or ``"unet"`` (CNN encoder + convolutional UNet decoder, NASA's setting).
    """

    arch: str
    num_classes: int = 3
    in_chans: int = 1
    cnn: str | None = "resnet50"
    swin: SwinConfig | None = field(default_factory=SwinConfig)
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; the file may be from a newer napari-csunet")
        data = dict(data)
        swin = data.get("swin")
        if isinstance(swin, dict):
            data["swin"] = SwinConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in swin.items()})
        if "decoder_channels" in data:
            data["decoder_channels"] = tuple(data["decoder_channels"])
        return cls(**data)

    def with_classes(self, num_classes: int, in_chans: int | None = None) -> ModelConfig:
        values = self.to_dict() | {"num_classes": num_classes}
        if in_chans is not None:
            values["in_chans"] = in_chans
        return ModelConfig.from_dict(values)
