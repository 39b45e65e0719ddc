"""A model file's header is untrusted input: check it before anything is built from it.

A 3 KB file whose header says ``embed_dim: 1536`` or ``depths: [20000, 2, 2, 2]`` used to allocate
gigabytes before its weights were looked at. Three gates, cheapest first:

1. :func:`check_description`: types and ranges of every header field (no torch);
2. :func:`check_size`: a lower bound of the parameters the config describes must fit in the
   tensors the file holds (no torch, reads only the safetensors header);
3. :func:`check_shapes`: the network built on torch's ``meta`` device (no memory) must have
   exactly the file's tensor names and shapes.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from ..colors import check_colors

__all__ = ["HeaderError", "check_description", "parameter_floor", "tensor_shapes", "check_size", "check_shapes",
           "ARCHS", "MAX_CLASSES", "MAX_PARAMETERS"]

ARCHS = ("csunet", "swinunet", "unet")
MAX_CLASSES = 255  # labels are uint8 with 0 = unlabelled
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32: no segmentation model of ours comes near
_CNN_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_TEXT_LIMIT = 10_000


class HeaderError(ValueError):
    """A model header field has the wrong type or an impossible value (the message names the field)."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise HeaderError(message)


def _int(data: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value = data[key]
    _need(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
          f"{where}{key}: {value!r:.40} must be an integer in {lo}..{hi}")
    return value


def _number(data: dict[str, Any], key: str, lo: float, hi: float, where: str) -> float:
    value = data[key]
    _need(isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi,
          f"{where}{key}: {value!r:.40} must be a number in {lo}..{hi}")
    return float(value)


def _int_list(data: dict[str, Any], key: str, lo: int, hi: int, length: range, where: str) -> list[int]:
    value = data[key]
    _need(isinstance(value, list | tuple) and len(value) in length,
          f"{where}{key}: expected a list of {length.start}..{length.stop - 1} integers, got {value!r:.60}")
    return [_int({key: v}, key, lo, hi, where) for v in value]


def _check_swin(swin: Any) -> None:
    _need(isinstance(swin, dict), f"config.swin: expected an object, got {type(swin).__name__}")
    where = "config.swin."
    defaults = {"embed_dim": 96, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 8,
                "patch_size": 4, "mlp_ratio": 4.0, "drop_path_rate": 0.1}
    unknown = sorted(set(swin) - set(defaults))
    _need(not unknown, f"config.swin: unknown keys {unknown}")
    s = defaults | swin
    embed = _int(s, "embed_dim", 8, 1024, where)
    depths = _int_list(s, "depths", 1, 32, range(4, 5), where)
    heads = _int_list(s, "num_heads", 1, 64, range(4, 5), where)
    for i, h in enumerate(heads):
        _need((embed << i) % h == 0, f"{where}num_heads[{i}]: {h} does not divide the stage width {embed << i}")
    _int(s, "window_size", 1, 32, where)
    _need(s["patch_size"] in (2, 4, 8), f"{where}patch_size: {s['patch_size']!r:.20} must be 2, 4 or 8")
    _number(s, "mlp_ratio", 0.25, 16.0, where)
    _number(s, "drop_path_rate", 0.0, 0.9, where)
    _need(sum(depths) <= 64, f"{where}depths: {sum(depths)} blocks in all (at most 64)")


def check_config(config: Any) -> None:
    """Types and ranges of the ``config`` object (the architecture) of a model header."""
    _need(isinstance(config, dict), f"config: expected an object, got {type(config).__name__}")
    c = {"num_classes": 3, "in_chans": 1, "cnn": "resnet50", "swin": {}, "decoder_channels": [256, 128, 64, 32, 16]}
    c |= config
    _need(c.get("arch") in ARCHS, f"config.arch: {c.get('arch')!r:.40} is not a known architecture ({', '.join(ARCHS)})")
    _int(c, "num_classes", 1, MAX_CLASSES, "config.")
    _need(c["in_chans"] in (1, 3) and not isinstance(c["in_chans"], bool),
          f"config.in_chans: {c['in_chans']!r:.20} must be 1 (grey) or 3 (RGB)")
    _int_list(c, "decoder_channels", 1, 4096, range(1, 9), "config.")
    needs = {"csunet": ("cnn", "swin"), "swinunet": ("swin",), "unet": ("cnn",)}[c["arch"]]
    if "cnn" in needs:
        _need(isinstance(c["cnn"], str) and _CNN_NAME.fullmatch(c["cnn"]) is not None,
              f"config.cnn: {c['cnn']!r:.40} is not a CNN encoder name (e.g. 'resnet50')")
    if "swin" in needs:
        _check_swin(c["swin"])


def check_description(data: Any) -> dict[str, Any]:
    """The header's JSON object with every field checked (colours normalised); HeaderError otherwise."""
    _need(isinstance(data, dict), f"expected a JSON object, got {type(data).__name__}")
    _need("config" in data, "no 'config' (architecture) in the description")
    check_config(data["config"])
    names = data.get("class_names")
    _need(isinstance(names, list) and 1 <= len(names) <= MAX_CLASSES
          and all(isinstance(n, str) and 0 < len(n) <= 200 for n in names),
          f"class_names: expected a list of 1..{MAX_CLASSES} non-empty names, got {names!r:.60}")
    data = dict(data)
    if data.get("class_colors"):
        data["class_colors"] = check_colors(data["class_colors"], "class_colors")
    for key in ("normalization", "sources", "provenance"):
        _need(isinstance(data.get(key, {}), dict),
              f"{key}: expected an object, got {type(data.get(key)).__name__}")
    for key, types in PROVENANCE_TYPES.items():  # the record's fields the product reads, when present
        value = data.get("provenance", {}).get(key)
        _need(value is None or (isinstance(value, types) and not isinstance(value, bool)),
              f"provenance.{key}: expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")
    for key in ("name", "description"):
        _need(isinstance(data.get(key, ""), str) and len(data.get(key, "")) <= _TEXT_LIMIT,
              f"{key}: expected a text, got {data.get(key)!r:.40}")
    _need(data.get("preset") is None or isinstance(data["preset"], str), "preset: expected a text or null")
    _need(isinstance(data.get("format_version", 1), int), "format_version: expected an integer")
    return data


#: types of the training record's fields that listings, the GUI, the next fine-tune and exports read
PROVENANCE_TYPES: dict[str, tuple[type, ...]] = {
    "metrics": (dict,), "initial_metrics": (dict,), "validation": (dict,), "hyperparameters": (dict,),
    "previous": (dict,), "train_images": (list,), "val_images": (list,), "trained_on": (list,),
    "mode": (str,), "task": (str,), "started_from": (str,), "recipe": (str,), "time": (str,),
    "steps": (int,), "run_steps": (int,), "pixel_size_um": (int, float),
}


def _swin_block_floor(dim: int, depth: int, mlp_ratio: float) -> int:
    return int(depth * (4 + 2 * mlp_ratio) * dim * dim)  # qkv + proj + the two MLP layers, weights only


def parameter_floor(config: dict[str, Any]) -> int:
    """A lower bound of the parameters a checked ``config`` builds (the CNN encoder counts 0):
    the Swin encoder's blocks and their mirrored decoder stages, or the conv decoder's 3x3 convs."""
    if config.get("arch") == "unet":
        return sum(9 * c * c for c in config.get("decoder_channels", [256, 128, 64, 32, 16]))
    swin = {"embed_dim": 96, "depths": [2, 2, 2, 2], "mlp_ratio": 4.0} | config.get("swin", {})
    depths, ratio = swin["depths"], float(swin["mlp_ratio"])
    dims = [swin["embed_dim"] << i for i in range(len(depths))]
    encoder = sum(_swin_block_floor(d, n, ratio) for d, n in zip(dims, depths, strict=True))
    decoder = sum(_swin_block_floor(d, n, ratio) for d, n in zip(dims[:-1], depths[:-1], strict=True))
    return encoder + decoder


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header (nothing else is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def check_size(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a config whose network cannot fit in the file's tensors (before building anything)."""
    held = sum(_numel(s) for s in shapes.values())
    floor = parameter_floor(config)
    if floor > min(held, MAX_PARAMETERS):
        raise HeaderError(f"the described architecture needs at least {floor:,} parameters "
                          f"({4 * floor / 2**30:,.2f} GB to build) but the file's tensors hold only {held:,}: "
                          "the header does not describe these weights")


@functools.lru_cache(maxsize=32)
def _expected_shapes(config_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The state dict's names and shapes of a config's network, built on the meta device (no memory)."""
    import torch

    from . import ModelConfig
    from .networks import build_network

    config = ModelConfig.from_dict(json.loads(config_json))
    if config.cnn is not None and config.arch != "swinunet":
        import timm

        _need(timm.is_model(config.cnn), f"config.cnn: unknown CNN encoder {config.cnn!r} (not a timm model name; "
                                         "e.g. 'resnet50', 'tf_efficientnet_b4')")
    try:
        with torch.device("meta"):
            network = build_network(config)
    except Exception as exc:  # noqa: BLE001 - any failure here is the header's fault
        raise HeaderError(f"cannot build the described architecture ({type(exc).__name__}: {exc})") from None
    return tuple((k, tuple(v.shape)) for k, v in network.state_dict().items())


def check_shapes(config: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a file whose tensors are not exactly those of the network its config describes."""
    expected = dict(_expected_shapes(json.dumps(config.to_dict(), sort_keys=True)))
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {list(shapes[k])} (expected {list(v)})" for k, v in expected.items()
             if k in shapes and shapes[k] != v]
    if missing or unexpected or wrong:
        parts = [f"{label} {items[:3]}" + (f" and {len(items) - 3} more" if len(items) > 3 else "")
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if items]
        raise HeaderError("the weights do not match the described architecture: " + "; ".join(parts))
