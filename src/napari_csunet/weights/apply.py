"""Putting pretrained weights into a built network: resolve, fetch or import, convert, load.

A source is a preset-level name (``"imagenet"``, ``"micronet"``, ``"imagenet-micronet"``,
``"microlite"``, ``"imagenet-microlite"``), a weight id (``"resnet50-micronet"``), or a file: a
checkpoint in any supported naming, a converted weights file, or a napari-csunet model file (its
encoder is taken).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..models.modelfile import ModelInfo
from .cache import (
    cached_file,
    converted_path,
    download,
    download_path,
    sha256_file,
    unavailable,
    verify_sha256,
)
from .checkpoint import MODEL_META_KEY, read_checkpoint, weights_meta, write_weights
from .convert import (
    ConversionReport,
    convert_cnn,
    convert_swin,
    meta_cnn_encoder,
    meta_swin_encoder,
)
from .errors import UnknownWeights, WeightsFormatError, WeightsUnavailable
from .sources import (
    CNN_FAMILIES,
    SWIN_FAMILIES,
    WeightSource,
    all_sources,
    get_source,
    source_id_for,
    swin_t_variant,
)

__all__ = ["apply_sources", "build_preset_model", "import_weights", "materialize", "list_weights", "load_cnn", "load_swin",
           "mirror_decoder"]

log = logging.getLogger(__name__)

_FILE_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt", ".safetensors")


def _is_path(source: str) -> bool:
    return "/" in source or "\\" in source or source.endswith(_FILE_SUFFIXES) or Path(source).is_file()


def import_weights(weight_id: str, file: str | Path) -> tuple[Path, ConversionReport]:
    """Validate ``file`` by converting it strictly for ``weight_id``'s encoder, then cache it.

    The cache keeps the converted tensors as safetensors in timm naming, so later loads need no pickle.
    """
    src = get_source(weight_id)
    state, meta = read_checkpoint(file)
    state = _model_file_part(state, meta, src.kind, file)
    if src.kind == "cnn":
        named, _, report = convert_cnn(state, src.arch, meta_cnn_encoder(src.arch), str(file))
    else:
        named, report = convert_swin(state, meta_swin_encoder(src.swin_depths), str(file))
    info = {"id": src.id, "kind": src.kind, "arch": src.arch,
            "swin_depths": list(src.swin_depths) if src.swin_depths else None,
            "source_format": report.source_format, "source_file": Path(file).name,
            "source_sha256": sha256_file(file), "report": report.to_dict()}
    path = write_weights(converted_path(src), named, info)
    log.info("%s -> %s", report.summary(), path)
    return path, report


def materialize(src: WeightSource, *, allow_download: bool) -> Path:
    """The converted file of ``src`` in the cache, downloading and converting it first if needed."""
    converted = converted_path(src)
    if converted.is_file():
        return converted
    raw = download_path(src)
    if not raw.is_file():
        if not allow_download:
            raise unavailable(src, "downloading was not allowed")
        raw = download(src)
    verify_sha256(raw, src.sha256)
    path, _ = import_weights(src.id, raw)
    raw.unlink(missing_ok=True)  # the converted copy replaces it
    return path


def _model_file_part(state: dict, meta: dict[str, str], kind: str, file: str | Path) -> dict:
    """From one of our model files take the encoder's tensors; other files pass through."""
    if MODEL_META_KEY not in meta:
        return state
    prefix = "cnn.body." if kind == "cnn" else "swin.model."
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise WeightsFormatError(f"{file}: this model file has no {kind.upper()} encoder to take weights from")
    return part


def _locate(source: str, kind: str, model: nn.Module, allow_download: bool) -> tuple[Path, str | None]:
    """The file behind a source for the ``kind`` encoder of ``model``, and its weight id (None for files)."""
    config = model.config
    if _is_path(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"{path}: no such weights file", path=str(path))
        return path, None
    if kind == "swin":
        swin = config.swin
        if swin_t_variant(swin.embed_dim, swin.depths, swin.num_heads, swin.patch_size) is None:
            raise UnknownWeights(
                f"pretrained Swin weights ({source!r}) fit Swin-T only (96 wide, heads 3/6/12/24); this "
                f"model's Swin is {swin.embed_dim} wide with depths {list(swin.depths)}. Leave its Swin source "
                "empty (random start) or choose a Swin-T preset such as csunet-r50-swint.")
    families = CNN_FAMILIES if kind == "cnn" else SWIN_FAMILIES
    wid = source_id_for(kind, source, cnn=config.cnn, swin_depths=config.swin and config.swin.depths) \
        if source in families else source
    src = get_source(wid)
    if src.kind != kind:
        raise UnknownWeights(f"{src.id} are {src.kind.upper()} weights but were given as the {kind.upper()} source")
    if kind == "cnn" and src.arch != config.cnn:
        raise UnknownWeights(f"{src.id} fit the CNN {src.arch}; this model's CNN is {config.cnn}")
    if kind == "swin" and src.swin_depths != tuple(config.swin.depths) and src.family != "imagenet":
        raise UnknownWeights(f"{src.id} has Swin depths {list(src.swin_depths)}; this model has "
                             f"{list(config.swin.depths)}")
    return materialize(src, allow_download=allow_download), src.id


def mirror_decoder(model: nn.Module) -> list[str]:
    """Copy each encoder stage's Swin blocks into the decoder stage at the same scale.

    The paper's "encoder stage k -> decoder stage 3-k" in Swin-UNet's numbering: here both are
    indexed by scale, so encoder ``layers.l.blocks`` initialise ``decoder.stages.l.blocks`` (l = 0..2).
    """
    stages = model.decoder.stages
    for key, stage in stages.items():
        stage.blocks.load_state_dict(model.swin.model.layers[int(key)].blocks.state_dict(), strict=True)
    return sorted(stages.keys())


def load_cnn(encoder: nn.Module, path: str | Path, label: str | None = None) -> ConversionReport:
    """Load a CNN weights file into a ``CNNEncoder`` strictly; returns what was converted."""
    state, meta = read_checkpoint(path)
    state = _model_file_part(state, meta, "cnn", path)
    _, state, report = convert_cnn(state, encoder.name, encoder.body, label or str(path))
    encoder.body.load_state_dict(state, strict=True)
    report.imported = weights_meta(meta)
    return report


def load_swin(model: nn.Module, path: str | Path, label: str | None = None, *, truncate: bool = False
              ) -> ConversionReport:
    """Load Swin weights into ``model.swin`` strictly, then mirror them into the decoder stages."""
    state, meta = read_checkpoint(path)
    state = _model_file_part(state, meta, "swin", path)
    state, report = convert_swin(state, model.swin.model, label or str(path), truncate=truncate)
    model.swin.model.load_state_dict(state, strict=True)
    report.imported = weights_meta(meta)
    if hasattr(model, "decoder") and hasattr(model.decoder, "stages"):
        report.mirrored = [f"decoder.stages.{k}" for k in mirror_decoder(model)]
    return report


def apply_sources(model: nn.Module, cnn: str | None, swin: str | None, *, allow_download: bool) -> dict[str, Any]:
    """Load pretrained weights into ``model``'s encoders (and, for Swin, its decoder stages).

    ``cnn``/``swin`` are source names, weight ids or files (None or ``""``: keep the random start).
    Returns what was applied, for ``ModelInfo.sources``. Raises :class:`WeightsUnavailable` (with
    the URL and the drop-in path) when a file is missing and ``allow_download`` is false or the
    download fails.
    """
    applied: dict[str, Any] = {}
    for kind, source in (("cnn", cnn), ("swin", swin)):
        if not source:
            continue
        if getattr(model, kind, None) is None:
            raise UnknownWeights(f"a {model.config.arch!r} model has no {kind.upper()} encoder; give no {kind} source")
        path, wid = _locate(source, kind, model, allow_download)
        label = f"{wid} ({path})" if wid else str(path)
        if kind == "cnn":
            report = load_cnn(model.cnn, path, label)
        else:
            truncate = wid is not None and get_source(wid).family == "imagenet"
            report = load_swin(model, path, label, truncate=truncate)
        log.info(report.summary())
        applied |= {kind: source, f"{kind}_id": wid, f"{kind}_sha256": sha256_file(path),
                    f"{kind}_report": report.to_dict()}
    return applied


def build_preset_model(preset: str, class_names: Sequence[str], *, in_chans: int | None = None,
                       cnn: str | None = None, swin: str | None = None, allow_download: bool = False
                       ) -> tuple[nn.Module, ModelInfo]:
    """A preset for these classes with random weights, then the pretrained encoder sources.

    The one way the GUI and training start a model from a preset: ``info.sources`` holds the
    weight report (ids, sha256, conversions), so every model file says where its weights came from.
    Raises KeyError for an unknown preset and :class:`WeightsError` subclasses for bad sources.
    """
    from ..models import build_model, get_preset

    spec = get_preset(preset)
    model = build_model(spec.name, num_classes=len(class_names), in_chans=in_chans)
    applied = apply_sources(model, cnn, swin, allow_download=allow_download) if (cnn or swin) else {}
    info = ModelInfo(model.config, list(class_names), preset=spec.name, sources=dict(applied), name=spec.name,
                     description=spec.description)
    return model, info


def list_weights() -> list[dict[str, Any]]:
    """Every weight id with ``cached`` and ``path`` (the cached file, or where to drop a copy)."""
    rows = []
    for src in all_sources():
        found = cached_file(src)
        rows.append(src.to_dict() | {"cached": found is not None, "path": str(found or download_path(src))})
    return rows
