"""User settings remembered between sessions (device, weight cache folder, fine-tune defaults).

A small JSON file in the platform config dir (``CSUNET_CONFIG_DIR`` overrides it), written
atomically. GUI-free so the command line and the plugin read the same values. A damaged file
never stops the plugin: it falls back to the defaults and says so.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .form_fields import option

__all__ = ["Settings", "settings_path", "user_folder", "load_settings", "save_settings", "DEVICES",
           "cpu_only_torch_with_gpu"]

#: device choices offered everywhere ("auto" picks CUDA, then MPS, then CPU)
DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass
class Settings:
    """What the plugin remembers. Empty strings mean "the default"."""

    device: str = "auto"
    #: folder of downloaded/imported encoder weights (empty: platform cache dir or CSUNET_CACHE_DIR)
    weight_cache_dir: str = ""
    allow_download: bool = False
    #: the model file or preset used last, offered again at start-up
    last_model: str = ""
    tile: int = 512
    #: the fine-tune panel's last values (steps, lr, crop, ...)
    finetune: dict[str, Any] = field(default_factory=dict)
    #: bf16 autocast where the device runs it natively (GPUs; CPUs with AVX512-BF16 or AMX); off: float32
    mixed_precision: bool = option(True, "bf16 on GPUs and on CPUs with bf16 instructions: about 1.5x as fast "
                                   "(measured: the starter models' labels agree with float32 on 99.9 % of the "
                                   "pixels); off: float32 everywhere, for segmenting and fine-tuning",
                                   label="mixed precision (bf16)")
    #: keys 1-9 pick a class also on the labels layer, in place of napari's own mode keys 1-7 there
    #: (off: only on the Correct tab, so napari's keys are never taken without the user asking)
    class_keys_on_layer: bool = option(False, "keys 1-9 pick the brush class on the labels layer too, in place of "
                                       "napari's mode keys 1-7 (the Correct tab's keys always work)",
                                       label="class keys on the labels layer")
    #: the correction queue's Accept/Next keys also on the labels layer (never over napari's own keys)
    queue_keys_on_layer: bool = option(False, "A (accept) and N (next region) on the labels layer too, where "
                                       "napari does not use them", label="queue keys on the labels layer")

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            warnings.warn(f"settings: unknown device {self.device!r}, using 'auto'", stacklevel=2)
            self.device = "auto"


def user_folder(kind: str, env: str | None, sub: str = "") -> Path:
    """Where the plugin keeps one kind of file, chosen here for every module: ``$env`` when set (a
    test or a demo redirects it), else ``sub`` in the platform's ``kind`` folder ("data", "config"
    or "cache") for napari-csunet."""
    if env and os.environ.get(env):
        return Path(os.environ[env])
    import platformdirs

    where = {"data": platformdirs.user_data_dir, "config": platformdirs.user_config_dir,
             "cache": platformdirs.user_cache_dir}[kind]
    return Path(where("napari-csunet")) / sub


def settings_path() -> Path:
    """``settings.json`` in ``CSUNET_CONFIG_DIR`` or the platform config dir."""
    return user_folder("config", "CSUNET_CONFIG_DIR") / "settings.json"


def load_settings(path: str | Path | None = None) -> Settings:
    """The saved settings, or the defaults when there are none or the file is damaged."""
    path = Path(path) if path is not None else settings_path()
    if not path.exists():
        return Settings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(Settings)}
        return Settings(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError) as exc:
        warnings.warn(f"{path}: settings ignored ({exc}); using defaults", stacklevel=2)
        return Settings()


def save_settings(settings: Settings, path: str | Path | None = None) -> Path:
    """Write the settings atomically (a crash never leaves a half-written file)."""
    path = Path(path) if path is not None else settings_path()
    return atomic_write_text(path, json.dumps(asdict(settings), indent=2))


def cpu_only_torch_with_gpu() -> str | None:
    """A warning when the installed torch is a CPU-only build but the machine has an NVIDIA GPU.

    Reads ``torch/version.py`` instead of importing torch, so the check costs nothing at start-up.
    """
    import importlib.util
    import shutil

    if shutil.which("nvidia-smi") is None:
        return None
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return None
    if re.search(r"^cuda\b[^=\n]*=\s*None\s*$", text, re.M) and not re.search(r"^hip\b[^=\n]*=\s*'", text, re.M):
        return ("this machine has an NVIDIA GPU (nvidia-smi found) but the installed PyTorch is CPU-only; "
                "install a CUDA build (see https://pytorch.org/get-started/locally/) to segment and train on the GPU")
    return None
