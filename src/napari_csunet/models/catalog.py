"""The model catalogue: starter models shipped in the package and the user's own, found by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["STARTER_DIR", "user_models_dir", "list_model_files", "scan_model_files", "resolve_model",
           "pretrained_models", "shipped_names", "model_stem", "finetuned_name"]

STARTER_DIR = Path(__file__).parents[1] / "starter_models"


def user_models_dir() -> Path:
    """Fine-tuned models (``CSUNET_MODELS_DIR`` overrides the platform data dir)."""
    from ..settings import user_folder

    return user_folder("data", "CSUNET_MODELS_DIR", "models")


def shipped_names() -> set[str]:
    """Names of the models shipped in the package (their file stems: no header is read)."""
    return {p.stem for p in STARTER_DIR.glob("*.safetensors")} if STARTER_DIR.is_dir() else set()


def model_stem(name: str) -> str:
    """A model name safe in a file name."""
    from ..safetext import file_stem

    return file_stem(name, "model")


def finetuned_name(base: str) -> str:
    """``<base>-ft-<timestamp>``: a fine-tune never takes its parent's name."""
    import time

    return f"{model_stem(base).split('-ft-')[0]}-ft-{time.strftime('%Y%m%d-%H%M%S')}"


def scan_model_files() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(readable models as :func:`list_model_files` lists them, ``{"path", "reason"}`` of files that
    cannot be read). One bad file in the models folder is reported and skipped, never fatal."""
    from .modelfile import describe

    out, unreadable = [], []
    starters = sorted(STARTER_DIR.glob("*.safetensors")) if STARTER_DIR.is_dir() else []
    shipped = shipped_names()
    for kind, paths in (("user", _user_files()), ("starter", starters)):
        for p in paths:
            try:
                entry = describe(p)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with a file, the others are listed
                unreadable.append({"path": str(p), "reason": str(exc).replace(str(p) + ": ", "") or type(exc).__name__})
                continue
            # a self-supervised model is a starting point for fine-tuning, not a segmenter
            entry |= {"kind": "pretrained" if entry["task"] != "segmentation" else kind}
            if kind == "user" and entry["name"] in shipped:
                entry["shadowed"] = True  # `--model NAME` means the shipped one; this file is used by its path
            out.append(entry)
    return out, unreadable


def _user_files() -> list[Path]:
    """The user's model files, newest first (a file that vanishes meanwhile is left out)."""
    user_dir = user_models_dir()
    if not user_dir.is_dir():
        return []
    stamped = []
    for p in user_dir.glob("*.safetensors"):
        try:
            stamped.append((p.stat().st_mtime, p))
        except OSError:
            continue
    return [p for _, p in sorted(stamped, key=lambda t: -t[0])]


def list_model_files() -> list[dict[str, Any]]:
    """The user's fine-tuned models first (newest first: the one just trained is on top), then the
    starter models; pretrained starting points (``micro-tiny``) have ``kind`` "pretrained".
    Files that cannot be read are left out (see :func:`scan_model_files`)."""
    return scan_model_files()[0]


def resolve_model(spec: str) -> tuple[str, Path | None]:
    """``spec`` is a model file path, a starter/user model name, or a preset name.

    A shipped model's name always means the shipped model (a warning names user files that carry
    it too). Returns ``("file", path)`` or ``("preset", None)``.
    """
    p = Path(spec)
    if p.suffix == ".safetensors" or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"model file not found: {p}")
        return "file", p
    entries = list_model_files()
    hits = sorted((e for e in entries if e["name"] == spec), key=lambda e: e.get("kind") == "user")
    if hits:
        if len(hits) > 1:
            import warnings

            warnings.warn(f"{len(hits)} model files are named {spec!r}; using {hits[0]['path']} (others: "
                          f"{', '.join(e['path'] for e in hits[1:])}; pass a path to use one of them)", stacklevel=2)
        return "file", Path(hits[0]["path"])
    from .registry import PRESETS

    if spec in PRESETS:
        return "preset", None
    names = [e["name"] for e in entries] + list(PRESETS)
    raise KeyError(f"unknown model {spec!r}: not a file, and not one of {', '.join(names)}")


def pretrained_models() -> list[dict[str, Any]]:
    """The catalogue's self-supervised starting points (``micro-tiny`` and the user's adapted ones)."""
    return [e for e in list_model_files() if e["kind"] == "pretrained"]
