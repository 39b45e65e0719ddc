"""Job keys read from JSON/YAML, checked: every error names the key and what it accepts.

Shared by both job kinds (:mod:`.config`, :mod:`.pretrain_config`), which import it and not each
other's module. Importable without torch.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import fields
from typing import Any

__all__ = ["ConfigError", "need", "config_from_dict"]


class ConfigError(ValueError):
    """A job, recipe or flag is invalid; the message names the key and the accepted values."""


def need(ok: bool, msg: str) -> None:
    """Validation: raise :class:`ConfigError` with ``msg`` (which names the key) unless ``ok``."""
    if not ok:
        raise ConfigError(msg)


def config_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """A job dataclass from JSON/YAML values: unknown keys named, whole floats taken as integers."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}")
    data = dict(data)
    for key in ("steps", "crop", "batch_size", "eval_every", "seed", "num_workers", "mask_patch", "val_images"):
        if isinstance(data.get(key), float) and float(data[key]).is_integer():
            data[key] = int(data[key])
    for f in fields(cls):
        if f.name in data:
            _check_type(f.name, data[f.name], str(f.type))
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


#: a job key's annotation (its outer type) -> what JSON/YAML values it takes
_JSON_TYPES: dict[str, tuple[type, ...]] = {"int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,),
                                           "str": (str,), "list": (list, tuple), "dict": (dict,)}


def _check_type(key: str, value: Any, annotation: str) -> None:
    """ConfigError naming ``key`` when a JSON/YAML value has the wrong type (``"lr": "fast"``, ``"steps": true``)."""
    options = [a.strip() for a in re.sub(r"\[.*\]", "", annotation).split("|")]  # list[str] | None -> list, None
    if value is None and "None" in options:
        return
    accepted = tuple(t for o in options if o != "None" for t in _JSON_TYPES.get(o, (object,)))
    wrong = not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)
    need(not wrong, f"{key}: {value!r:.40} must be {' or '.join(o if o != 'None' else 'null' for o in options)}")
