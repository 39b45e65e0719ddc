"""Explicit key conversion from each source's naming into timm's, checked strictly.

CNN checkpoints arrive in one of these namings (NASA saved segmentation_models_pytorch 0.2.1
encoders, whose naming is their source package's):

* torchvision (ResNet, ResNeXt, VGG-bn) and timm: the same names as timm's ``resnet50``,
  ``resnext50_32x4d``, ``vgg16_bn``; only classifier heads are dropped.
* pretrainedmodels SENet (``layer0.conv1``, ``se_module.fc1``): identical to timm's ``legacy_se*``
  models, which keep its ceil-mode stem pooling (timm's ``seresnext50_32x4d`` does not, so its
  features would differ).
* efficientnet_pytorch (``_conv_stem``, ``_blocks.N._depthwise_conv``): renamed block by block into
  timm's ``tf_efficientnet_bN`` (TF "same" padding, BN eps 1e-3, like the source).

Swin checkpoints (Microsoft's original naming or timm's) go through timm's own
``checkpoint_filter_fn``, which moves the patch-merging layers to timm's stage and resizes the
relative-position tables from window 7 to the model's window.

"Strict" means: every tensor the encoder needs comes from the file with the same shape, and every
tensor of the file is either used or a part the encoder does not have (classifier head, EfficientNet
``conv_head``); anything else is an error that lists what did not match.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from .errors import WeightsFormatError

__all__ = ["ConversionReport", "detect_format", "convert_cnn", "convert_swin", "meta_cnn_encoder",
           "meta_swin_encoder"]

#: source-side classifier heads: dropped, never loaded (the encoders have no classifier)
HEAD_PREFIXES = ("fc.", "_fc.", "classifier.", "last_linear.", "head.")

_EFF_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: efficientnet_pytorch MBConv parts -> timm, for blocks without expansion (timm DepthwiseSeparableConv)
_EFF_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
           "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
#: ... and for blocks with an expansion conv (timm InvertedResidual)
_EFF_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
           "_bn2": "bn3"}
_SWIN_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_SHOWN = 8


def _modules(keys: list[str]) -> list[str]:
    """``fc.weight``, ``fc.bias`` -> ``fc``: reports name modules, not every tensor."""
    return sorted({k.rsplit(".", 1)[0] for k in keys})


@dataclass
class ConversionReport:
    """What a conversion did: the record of what loaded and what was left out, and why."""

    source: str
    target: str
    source_format: str
    loaded: int = 0
    #: source tensors the encoder has no use for (classifier heads, EfficientNet's conv_head)
    dropped: list[str] = field(default_factory=list)
    #: tensors missing in the source that have a harmless default (BatchNorm's num_batches_tracked)
    filled: list[str] = field(default_factory=list)
    #: relative-position tables resized to the model's attention window
    resized: list[str] = field(default_factory=list)
    #: Swin blocks left out to fit a shallower model (Swin-T ImageNet into [2,2,2,2])
    truncated: list[str] = field(default_factory=list)
    #: decoder stages initialised by mirroring the encoder's Swin stages
    mirrored: list[str] = field(default_factory=list)
    #: for a file ``csunet weights import`` wrote: its record (original file, hash, that conversion)
    imported: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dropped"] = _modules(self.dropped)
        data["filled"] = len(self.filled)
        data["resized"] = len(self.resized)
        return data

    def summary(self) -> str:
        parts = [f"{self.source}: {self.loaded} tensors loaded into {self.target} (read as {self.source_format})"]
        if self.dropped:
            parts.append(f"left out (not part of the encoder): {', '.join(_modules(self.dropped))}")
        if self.truncated:
            parts.append(f"left out to fit the model's depths: {', '.join(self.truncated)}")
        if self.resized:
            parts.append(f"{len(self.resized)} relative-position tables resized to the model's window")
        if self.mirrored:
            parts.append(f"mirrored into {', '.join(self.mirrored)}")
        if self.filled:
            parts.append(f"{len(self.filled)} BatchNorm step counters absent, set to 0")
        return "; ".join(parts)


def _fail(report: ConversionReport, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{report.source}: does not fit {report.target} (read as {report.source_format} naming):"]
    for title, items in (("tensors the model needs are missing from the file", missing),
                         ("tensors of the file have no place in the model", unexpected),
                         ("tensors differ in shape", mismatched)):
        if items:
            more = f" ... (+{len(items) - _SHOWN})" if len(items) > _SHOWN else ""
            lines.append(f"  {len(items)} {title}: {', '.join(items[:_SHOWN])}{more}")
    lines.append("  Check that the file was made for this encoder (e.g. resnet50 weights for a resnet50 model).")
    raise WeightsFormatError("\n".join(lines))


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """The naming a state dict uses, told apart by keys only its family has."""
    if "_conv_stem.weight" in state:
        return "efficientnet_pytorch"
    if "layer0.conv1.weight" in state:
        return "pretrainedmodels"
    if "patch_embed.proj.weight" in state:
        return "microsoft swin" if "layers.0.downsample.reduction.weight" in state else "timm swin"
    return "torchvision/timm"


# ----------------------------------------------------------------------------------------- CNNs


@lru_cache(maxsize=32)
def _full_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of timm's full ``arch`` (built on the meta device: no memory, no init)."""
    import timm

    with torch.device("meta"):
        full = timm.create_model(arch, pretrained=False)
    return {k: tuple(v.shape) for k, v in full.state_dict().items()}


def _body_to_full(body_keys: list[str], full: dict[str, tuple[int, ...]], arch: str) -> dict[str, str]:
    """features_only naming -> full-model naming (timm flattens sequences: ``features_5`` is ``features.5``)."""
    out = {}
    for key in body_keys:
        if key in full:
            out[key] = key
            continue
        head, _, rest = key.partition(".")
        hits = [f"{head[:i]}.{head[i + 1:]}.{rest}" for i, c in enumerate(head) if c == "_"]
        hits = [h for h in hits if h in full]
        if len(hits) != 1:
            raise WeightsFormatError(f"cannot place the encoder tensor {key} in timm's {arch} (timm changed its naming?)")
        out[key] = hits[0]
    return out


def _from_efficientnet_pytorch(state: dict[str, torch.Tensor], full: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Flat ``_blocks.N`` -> timm ``blocks.stage.index``, in order; parts renamed by block type."""
    blocks = sorted({(int(m[1]), int(m[2])) for k in full if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[0] == "_blocks" and len(parts) > 3 and int(parts[1]) < len(blocks):
            n = int(parts[1])
            table = _EFF_IR if f"_blocks.{n}._expand_conv.weight" in state else _EFF_DS
            if parts[2] in table:
                s, i = blocks[n]
                new = ".".join([f"blocks.{s}.{i}", table[parts[2]], *parts[3:]])
        elif parts[0] in _EFF_TOP:
            new = ".".join([_EFF_TOP[parts[0]], *parts[1:]])
        out[new] = value
    return out


def convert_cnn(state: dict[str, torch.Tensor], arch: str, body: nn.Module, source: str
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], ConversionReport]:
    """Convert a CNN state dict for timm's ``arch`` and check it strictly against ``body``.

    ``body`` is the features_only network (``CNNEncoder.body``, possibly on the meta device).
    Returns (the encoder's tensors in timm's full-model naming, the same keyed for ``body``, the report).
    """
    full = _full_shapes(arch)
    body_shapes = {k: tuple(v.shape) for k, v in body.state_dict().items()}
    to_full = _body_to_full(list(body_shapes), full, arch)
    from_body = {v: k for k, v in to_full.items()}
    fmt = detect_format(state)
    if fmt.endswith("swin"):
        raise WeightsFormatError(f"{source}: a Swin-Transformer checkpoint, not CNN weights; give it as the Swin source")
    if fmt == "efficientnet_pytorch":
        state = _from_efficientnet_pytorch(state, full)
    report = ConversionReport(source, f"timm {arch}", fmt)
    named: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        key = to_full.get(key, key)  # a file in features_only naming (one of our model files)
        if key in full:
            named[key] = value
        elif key.startswith(HEAD_PREFIXES):
            report.dropped.append(key)
        else:
            unexpected.append(key)
    missing, mismatched, by_body = [], [], {}
    for bkey, fkey in to_full.items():
        if fkey not in named:
            if bkey.endswith("num_batches_tracked"):
                report.filled.append(bkey)
                named[fkey] = torch.zeros((), dtype=torch.long)
            else:
                missing.append(fkey)
                continue
        if tuple(named[fkey].shape) != body_shapes[bkey]:
            mismatched.append(f"{fkey} {tuple(named[fkey].shape)} vs {body_shapes[bkey]}")
        by_body[bkey] = named[fkey]
    _fail(report, missing, unexpected, mismatched)
    report.dropped += [k for k in named if k not in from_body]
    report.loaded = len(by_body) - len(report.filled)
    return {k: v for k, v in named.items() if k in from_body}, by_body, report


# ----------------------------------------------------------------------------------------- Swin


def _swin_depths(keys) -> tuple[int, ...]:
    depth: dict[int, int] = {}
    for k in keys:
        if m := _SWIN_BLOCK.match(k):
            stage, block = int(m[1]), int(m[2])
            depth[stage] = max(depth.get(stage, 0), block + 1)
    return tuple(depth.get(i, 0) for i in range(max(depth) + 1)) if depth else ()


def convert_swin(state: dict[str, torch.Tensor], swin: nn.Module, source: str, *, truncate: bool = False
                 ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert Microsoft- or timm-named Swin weights for ``swin`` (a timm ``SwinTransformer``).

    ``truncate`` allows a deeper checkpoint into a shallower model by leaving out the extra blocks
    of a stage (used for Swin-T ImageNet into the intermediate [2,2,2,2] models only).
    """
    from timm.models.swin_transformer import checkpoint_filter_fn

    fmt = detect_format(state)
    if not fmt.endswith("swin"):
        raise WeightsFormatError(f"{source}: not a Swin-Transformer checkpoint (no patch_embed.proj.weight); "
                                 "CNN weights go to the CNN source")
    target = {k: tuple(v.shape) for k, v in swin.state_dict().items()}
    width, want = state["patch_embed.proj.weight"].shape[0], target["patch_embed.proj.weight"][0]
    if width != want:
        raise WeightsFormatError(f"{source}: a Swin {width} channels wide; the model's Swin is {want} wide. "
                                 "Pretrained Swin weights fit Swin-T (96 wide) models only.")
    report = ConversionReport(source, f"timm Swin {list(_swin_depths(target))} window {swin.layers[0].blocks[0].window_size[0]}", fmt)
    have, need = _swin_depths(state), _swin_depths(target)
    if have != need:
        if not truncate or len(have) != len(need) or any(h < n for h, n in zip(have, need, strict=True)):
            raise WeightsFormatError(
                f"{source}: Swin depths {list(have)} but the model has {list(need)}; use the file made for "
                f"these depths (e.g. swin-t-intermediate-microlite for [2,2,2,2])")
        cut = {k for k in state if (m := _SWIN_BLOCK.match(k)) and int(m[2]) >= need[int(m[1])]}
        report.truncated = sorted({_SWIN_BLOCK.match(k)[0].rstrip(".") for k in cut})
        state = {k: v for k, v in state.items() if k not in cut}
    filtered = checkpoint_filter_fn(state, swin)
    report.resized = [k for k, v in filtered.items() if k.endswith("relative_position_bias_table")
                      and k in state and state[k].shape != v.shape]
    report.dropped = [k for k in filtered if k.startswith("head.")]
    out = {k: v for k, v in filtered.items() if not k.startswith("head.")}
    _fail(report,
          missing=[k for k in target if k not in out],
          unexpected=[k for k in out if k not in target],
          mismatched=[f"{k} {tuple(v.shape)} vs {target[k]}" for k, v in out.items() if k in target and tuple(v.shape) != target[k]])
    report.loaded = len(out)
    return out, report


# ------------------------------------------------------------------- targets for validation only


def meta_cnn_encoder(arch: str) -> nn.Module:
    """The features_only CNN of ``arch`` on the meta device: names and shapes, no memory."""
    from ..models.encoders import CNNEncoder

    with torch.device("meta"):
        return CNNEncoder(arch).body


def meta_swin_encoder(depths: tuple[int, ...]) -> nn.Module:
    """The model's Swin-T (window 8) with ``depths`` on the meta device."""
    from ..models.config import SwinConfig
    from ..models.encoders import SwinEncoder

    with torch.device("meta"):
        return SwinEncoder(SwinConfig(depths=tuple(depths))).model
