"""Preset registry: a plain dict from preset name to its architecture and accepted weight sources."""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig, SwinConfig

__all__ = ["Preset", "PRESETS", "get_preset"]

SWIN_T_INTERMEDIATE = SwinConfig(depths=(2, 2, 2, 2))
SWIN_T_ORIGINAL = SwinConfig(depths=(2, 2, 6, 2))
SWIN_NARROW = SwinConfig(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16))
#: two blocks a stage: a window block and a shifted-window block, so context crosses the 32-pixel
#: windows (one block a stage left visible window squares on unseen micrographs); MLP ratio 3 keeps
#: the model under 8M parameters (16 MB as fp16)
SWIN_NANO = SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), mlp_ratio=3.0, drop_path_rate=0.0)

#: weight sources a CNN encoder / a Swin-T encoder can start from (see napari_csunet.weights)
CNN_SOURCES = ("imagenet", "micronet", "imagenet-micronet")
SWIN_T_SOURCES = ("imagenet", "microlite", "imagenet-microlite")


@dataclass(frozen=True)
class Preset:
    """A named architecture plus the pretrained weight sources its encoders accept."""

    name: str
    config: ModelConfig
    description: str
    cnn_sources: tuple[str, ...] = ()
    swin_sources: tuple[str, ...] = ()


def _p(name: str, description: str, config: ModelConfig, cnn_sources=(), swin_sources=()) -> tuple[str, Preset]:
    return name, Preset(name, config, description, tuple(cnn_sources), tuple(swin_sources))


PRESETS: dict[str, Preset] = dict(
    [
        _p("csunet-r50-swint", "CS-UNet: ResNet50 + Swin-T intermediate [2,2,2,2] (the paper's 56M model)",
           ModelConfig("csunet", cnn="resnet50", swin=SWIN_T_INTERMEDIATE), CNN_SOURCES, SWIN_T_SOURCES),
        _p("csunet-r50-swint-orig", "CS-UNet: ResNet50 + Swin-T original [2,2,6,2]",
           ModelConfig("csunet", cnn="resnet50", swin=SWIN_T_ORIGINAL), CNN_SOURCES, SWIN_T_SOURCES),
        _p("csunet-effb4-swint", "CS-UNet: EfficientNet-b4 + Swin-T intermediate [2,2,2,2]",
           ModelConfig("csunet", cnn="tf_efficientnet_b4", swin=SWIN_T_INTERMEDIATE), CNN_SOURCES, SWIN_T_SOURCES),
        _p("csunet-effb4-swint-orig", "CS-UNet: EfficientNet-b4 + Swin-T original [2,2,6,2]",
           ModelConfig("csunet", cnn="tf_efficientnet_b4", swin=SWIN_T_ORIGINAL), CNN_SOURCES, SWIN_T_SOURCES),
        _p("unet-r50", "Baseline: ResNet50 encoder + convolutional UNet decoder (NASA's setting)",
           ModelConfig("unet", cnn="resnet50", swin=None), CNN_SOURCES),
        _p("unet-effb4", "Baseline: EfficientNet-b4 encoder + convolutional UNet decoder (NASA's setting)",
           ModelConfig("unet", cnn="tf_efficientnet_b4", swin=None), CNN_SOURCES),
        _p("swinunet-t", "Baseline: Swin-UNet, Swin-T intermediate [2,2,2,2], transformer only",
           ModelConfig("swinunet", cnn=None, swin=SWIN_T_INTERMEDIATE), (), SWIN_T_SOURCES),
        _p("csunet-small", "CS-UNet for laptops: ResNet18 + narrow Swin (48 wide)",
           ModelConfig("csunet", cnn="resnet18", swin=SWIN_NARROW), ("imagenet",)),
        _p("csunet-tiny", "CS-UNet for CPUs and tests: ResNet10-T + nano Swin (32 wide, shifted-window pairs)",
           ModelConfig("csunet", cnn="resnet10t", swin=SWIN_NANO), ("imagenet",)),
    ]
)


def get_preset(name: str) -> Preset:
    """Look a preset up by name, with the list of known names in the error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
