"""Self-describing model files: safetensors weights + a JSON description in the header metadata.

A model file rebuilds its network from the file alone (architecture config, classes, colours,
normalisation, weight sources, training provenance) and never unpickles anything. The header can
be read without torch, so the GUI can list model files cheaply.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_write_safetensors
from ..colors import check_colors
from .config import ModelConfig
from .header_check import check_description, check_shapes, check_size, tensor_shapes

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ModelInfo", "ModelFileError", "save_model_file", "load_model_file", "read_model_info", "check_model_file",
    "default_class_colors", "numbered_class_names", "FORMAT_VERSION", "PRETRAINING_TASK", "is_pretraining_only",
    "has_untrained_head",
]

FORMAT_VERSION = 1
_META_KEY = "napari_csunet"
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]


#: characters of the JSON description a model file may carry (ours: a few KB, with a long training record)
MAX_DESCRIPTION = 4_000_000

#: ``provenance["task"]`` of self-supervised pretrained models: a starting point, not a segmenter
PRETRAINING_TASK = "pretraining"


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not one of ours."""


def default_class_colors(n: int) -> list[str]:
    """The one palette for classes that come without colours (cycled beyond ten)."""
    return [_PALETTE[i % len(_PALETTE)] for i in range(n)]


def numbered_class_names(n: int) -> list[str]:
    """``class 1..n``: the names of classes nobody named (label i is ``class i``)."""
    return [f"class {i + 1}" for i in range(n)]


@dataclass
class ModelInfo:
    """What a model file says about itself. Output channel ``i`` is label ``i + 1``."""

    config: ModelConfig
    class_names: list[str]
    class_colors: list[str] = field(default_factory=list)
    preset: str | None = None
    #: ``{"mode": "image"}``: standardise each image by its own mean/std (tiles use the image's)
    normalization: dict[str, Any] = field(default_factory=lambda: {"mode": "image"})
    #: where the encoders' weights came from, e.g. ``{"cnn": "imagenet", "swin": "microlite"}``
    sources: dict[str, Any] = field(default_factory=dict)
    #: training record: data fingerprint, steps, metrics, time, device ...
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("a model needs at least one class name")
        if self.config.num_classes != len(self.class_names):
            raise ValueError(
                f"config has {self.config.num_classes} classes but {len(self.class_names)} class names were given"
            )
        if not self.class_colors:
            self.class_colors = default_class_colors(len(self.class_names))
        self.class_colors = check_colors(self.class_colors, "class_colors")
        if len(self.class_colors) != len(self.class_names):
            raise ValueError("class_colors and class_names differ in length")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_pretraining_only(self) -> bool:
        """A self-supervised pretrained model: its outputs reconstruct pixels, they are not classes."""
        return is_pretraining_only(self.provenance)

    def to_json(self) -> str:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["format_version"] = FORMAT_VERSION
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse an untrusted description: every field is checked (see :mod:`.header_check`)."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise ModelFileError("its JSON is nested too deeply") from None
        data = check_description(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ModelFileError(f"model file format {version} is newer than this napari-csunet understands")
        data["config"] = ModelConfig.from_dict(data["config"])
        return cls(**data)


def is_pretraining_only(provenance: dict[str, Any]) -> bool:
    return provenance.get("task") == PRETRAINING_TASK


def has_untrained_head(provenance: dict[str, Any]) -> bool:
    """A new output layer that no step has trained yet (a model for new classes, not fine-tuned):
    its answers are noise, so nothing should be kept "as it was" (no distillation to them)."""
    return bool(provenance.get("head_reinitialised")) and not provenance.get("steps")


def _read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata, read by safetensors itself (numpy framework: no torch)."""
    from safetensors import SafetensorError, safe_open

    if path.exists() and not path.is_file():  # a folder, a FIFO (opening one waits forever), a device
        raise ModelFileError(f"{path}: not a regular file")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return fh.metadata() or {}
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path}: not a safetensors model file ({exc})") from None


def read_model_info(path: str | Path) -> ModelInfo:
    """The description stored in a model file's header (cheap: reads only the header)."""
    path = Path(path)
    meta = _read_metadata(path)
    if _META_KEY not in meta:
        raise ModelFileError(
            f"{path}: a safetensors file without a napari-csunet description; to use bare encoder "
            "weights, import them with `csunet weights import`"
        )
    if len(meta[_META_KEY]) > MAX_DESCRIPTION:
        raise ModelFileError(f"{path}: its description is {len(meta[_META_KEY]):,} characters (at most "
                             f"{MAX_DESCRIPTION:,}): not a model file of ours")
    try:
        return ModelInfo.from_json(meta[_META_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid model description ({exc})") from None


def save_model_file(path: str | Path, model: torch.nn.Module, info: ModelInfo, half: bool = False) -> Path:
    """Write ``model``'s weights and ``info`` atomically. ``half`` stores float tensors as fp16."""
    import torch

    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        state[k] = v.contiguous()
    return atomic_write_safetensors(path, state, {_META_KEY: info.to_json()})


def check_model_file(path: str | Path) -> tuple[ModelInfo, dict[str, tuple[int, ...]]]:
    """(description, tensor shapes) of a model file whose header is sane and whose network fits in its
    tensors; ModelFileError otherwise. Reads only the header and imports no torch (fast, bounded)."""
    from safetensors import SafetensorError

    path = Path(path)
    info = read_model_info(path)
    try:
        shapes = tensor_shapes(path)
        check_size(info.config.to_dict(), shapes)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return info, shapes


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelInfo]:
    """Rebuild the network from the file alone and load its weights strictly (no pickle)."""
    from safetensors import SafetensorError

    from . import build_model

    path = Path(path)
    info, shapes = check_model_file(path)
    try:  # built on the meta device: no memory
        check_shapes(info.config, shapes)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    from safetensors.torch import load_file

    model = build_model(info.config)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path}: corrupt weights ({exc})") from None
    import torch

    target = model.state_dict()
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(
            f"{path}: weights do not match the described architecture "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    return model.to(torch.device(device)).eval(), info


#: the provenance keys a listing carries: a model's score, and what it was measured on
SCORE_PROVENANCE = ("mode", "metrics", "train_images", "val_images", "validation")


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-friendly summary for listings (`csunet models`, the GUI)."""
    info = read_model_info(path)
    return {"path": str(path), "name": info.name or Path(path).stem, "preset": info.preset,
            "classes": info.class_names, "description": info.description,
            "metrics": info.provenance.get("metrics", {}),
            # what says whether that score could have failed (the Model tab's "held-out reviewed" / "not checked")
            "provenance": {k: info.provenance[k] for k in SCORE_PROVENANCE if k in info.provenance},
            "task": PRETRAINING_TASK if info.is_pretraining_only else "segmentation"}
