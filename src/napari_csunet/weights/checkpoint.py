"""Reading checkpoints without unpickling code, and writing converted weights as safetensors.

Foreign checkpoints (NASA's ``.pth.tar``, Microsoft-style Swin ``.pth``) are pickles. They are read
with ``torch.load(weights_only=True)``, which builds tensors and plain containers only; a pickle that
asks for anything else is refused with :class:`UnsafeCheckpointError` before any of it runs. Two
data-only classes that training scripts commonly pickle next to the weights (a yacs ``CfgNode``
config, an ``argparse.Namespace``) are read into inert stand-ins whose code never runs.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_safetensors
from .errors import UnsafeCheckpointError, WeightsFormatError, WeightsUnavailable

__all__ = ["read_checkpoint", "write_weights", "weights_meta", "WEIGHTS_META_KEY", "MODEL_META_KEY"]

#: safetensors metadata key of converted weight files (ours, in timm naming)
WEIGHTS_META_KEY = "napari_csunet_weights"
#: metadata key of napari-csunet model files (see napari_csunet.models.modelfile)
MODEL_META_KEY = "napari_csunet"

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


class _InertConfig:
    """Reads a pickled yacs ``CfgNode`` as a plain ``OrderedDict``; none of yacs' code runs.

    ``weights_only`` fills only exact dict types from a pickle, so the stand-in is an OrderedDict.
    """

    def __new__(cls, *args: Any) -> Any:
        return OrderedDict()


class _InertNamespace:
    """Holds a pickled ``argparse.Namespace``'s attributes."""


_INERT_GLOBALS = [(_InertConfig, "yacs.config.CfgNode"), (_InertNamespace, "argparse.Namespace")]


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_INERT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        if names:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: besides tensors this pickle asks to build "
                f"{', '.join(names)}, which could run code while loading. napari-csunet "
                "reads checkpoints with torch.load(weights_only=True) only. If you trust the file and its "
                "author, load it yourself, save its state dict with safetensors.torch.save_file and import "
                "that file instead."
            ) from None
        raise WeightsFormatError(
            f"{path}: not a PyTorch checkpoint or a safetensors file (damaged, or a file of another kind)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise WeightsFormatError(
            f"{path}: not a readable PyTorch checkpoint or safetensors file ({type(exc).__name__}: {exc}); "
            "the download may be incomplete: delete it and fetch it again"
        ) from None


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    return None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, or the one inside a training checkpoint (``model``, ``state_dict`` ...)."""
    state = _tensor_dict(obj)
    if state is None and isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            state = _tensor_dict(obj.get(key))
            if state is not None:
                break
    if state is None:
        what = f"a dict with keys {sorted(map(str, obj))[:12]}" if isinstance(obj, dict) else type(obj).__name__
        raise WeightsFormatError(f"{path}: no state dict of tensors found (the file holds {what})")
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file or a PyTorch checkpoint, plus safetensors metadata."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"{path}: no such file", path=str(path))
    if not _is_safetensors(path):
        return _unwrap(_torch_load(path), path), {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no iteration)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsFormatError(f"{path}: damaged safetensors file ({exc}); delete it and fetch it again") from None
    return state, meta


def weights_meta(meta: dict[str, str]) -> dict[str, Any] | None:
    """The description of a converted weights file, or None for any other file."""
    text = meta.get(WEIGHTS_META_KEY)
    return json.loads(text) if text else None


def write_weights(path: str | Path, state: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Store converted weights atomically as safetensors with ``info`` in the header."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return atomic_write_safetensors(path, tensors, {WEIGHTS_META_KEY: json.dumps(info)})
