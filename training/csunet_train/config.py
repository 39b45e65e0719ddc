"""The training job description (JOB.json, recipes, CLI flags all become one ``TrainConfig``).

Importable without torch: the CLI and the GUI build and validate jobs before any child starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from napari_csunet.colors import ColorError, check_colors
from napari_csunet.form_fields import option
from napari_csunet.models.catalog import STARTER_DIR, shipped_names
from napari_csunet.models.config import TILE_MULTIPLE, nearest_multiple

from .pretrain_config import PretrainConfig
from .validation import ConfigError, config_from_dict, need

__all__ = ["TrainConfig", "ConfigError", "load_job", "load_recipe", "recipe_names", "RECIPE_DIR", "REPO_ROOT",
           "DATA_ROOT_ENV", "default_data_root", "project_root"]

#: recipes ship inside the package, so an installed wheel finds them by name
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
#: the repository root when running from a checkout
REPO_ROOT = Path(__file__).resolve().parents[2]
#: where recipes' data folders (Super1/, EBC2/, ...) live, when --data-root is not given
DATA_ROOT_ENV = "CSUNET_DATA_ROOT"
MODES = ("train", "finetune")


@dataclass
class TrainConfig:
    """One training job. Keys are those of JOB.json (see docs/training.md)."""

    out: str
    mode: str = "train"
    model: str | None = None  # model file to start from (finetune / resume)
    preset: str | None = None  # architecture to train from scratch (train)
    weights: dict[str, str | None] = field(default_factory=lambda: {"cnn": None, "swin": None})
    allow_download: bool = False  # pretrained sources may download only when asked
    pairs: list[dict[str, str]] = field(default_factory=list)
    data_dir: str | None = None
    split: str = "train"
    val_split: str = "val"
    names: list[str] | None = None
    val_pairs: list[dict[str, str]] | None = None
    zero_is_class: bool | None = None  # folders: label maps whose 0 is a class (NASA's default)
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    steps: int = option(1000, "optimizer steps", min=1, max=100_000)
    lr: float = option(5e-4, "learning rate (encoders that start pretrained use encoder_lr_mult of it)",
                       min=1e-6, max=0.1, step=1e-4, decimals=6, label="learning rate")
    crop: int = option(256, "side of the random training crops (multiples of 256); larger needs more memory",
                       choices=(256, 512, 768, 1024))
    batch_size: int = option(4, "crops per step", min=1, max=64, label="batch size")
    aug_strength: float = option(0.5, "flips, rotations and brightness/contrast changes (0 = none)",
                                 min=0.0, max=1.0, step=0.1, label="augmentation")
    freeze_cnn: bool = option(False, "keep the CNN encoder's weights as they are", label="freeze CNN encoder")
    freeze_swin: bool = option(False, "keep the Swin encoder's weights as they are", label="freeze Swin encoder")
    eval_every: int = 50
    patience: int | None = None  # evaluations without improvement before stopping early
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    stop_file: str | None = None
    num_workers: int = 0
    warmup_steps: int | None = None  # default: 5% of the steps, at most 100
    weight_decay: float = 1e-4
    encoder_lr_mult: float = 0.1  # for encoders that start from pretrained weights or a model file
    # a new output layer (new classes from micro-tiny or another model) is a new material's model: the
    # whole network learns at these rates instead of lr / encoder_lr_mult (measured: +0.04 mIoU few-shot)
    new_head_lr: float = 1e-3
    new_head_encoder_lr_mult: float = 1.0
    # and, from micro-tiny or the GUI's new model, all its few images train (no val_fraction held out;
    # the last model is kept): measured together with the rates above
    new_head_val_fraction: float = 0.0
    grad_clip: float = 1.0
    class_balance: float = 0.5  # share of crops centred on a uniformly chosen class
    val_fraction: float = 0.2  # held out when no validation data is given (0: none, the last model is kept)
    holdout: str = "strip"  # one image without validation data: hold out its end "strip" or a lattice of "blocks"
    threads: int | None = None  # CPU threads of the job (None: torch's default, every core)
    pseudo_weight: float = 0.3  # loss weight of uncorrected predicted pixels in GUI annotation sets (0: ignored)
    # fine-tuning a model file: every unlabelled pixel keeps the starting model's soft prediction
    # (Learning without Forgetting); replaces pseudo_weight where it applies (0: off)
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    balanced_ce: bool = False  # cross-entropy averaged per class (with distillation, measured: worse, see docs)
    # semi-supervised (csunet_train.semi): a mean teacher's confident answers on the unlabelled pixels
    # of the labelled images and on the ``unlabelled`` images, where no distillation applies (0: off)
    semi_weight: float = 0.0
    semi_threshold: float = 0.9  # the teacher's top probability a pixel needs to be learned
    ema_decay: float = 0.99  # the teacher's weights: an exponential moving average of the student's
    # distillation averaged per class of the starting model's answer (measured: a rare phase moved
    # more elsewhere, not less; see docs)
    balanced_distill: bool = False
    anchor_weight: float = 0.0  # L2-SP: pull the weights toward the starting model's (0: off)
    context_crops: float = 0.3  # with distillation: share of crops centred anywhere, away from the corrections
    # a fine-tune that changes more than this share of the pixels it did not train on, or more than
    # unchecked_class_limit of a class there on average, is not made current (csunet_train.judge)
    unchecked_limit: float = 0.03
    unchecked_class_limit: float = 0.05
    # images (files or folders) of the same material without labels: with distillation the model keeps
    # the starting model's answers there too, so it does not drift on the rest of the material
    # (and with semi_weight > 0, the teacher labels them where it is confident)
    unlabelled: list[str] = field(default_factory=list)
    unlabelled_share: float = 0.5  # share of the crops drawn from them (measured: 0.25 let EBC2 drift)
    half: bool = False  # store the model file as fp16 (shipped starter models)
    name: str = ""
    description: str = ""
    recipe: str | None = None  # recipe name, recorded in the provenance
    time_budget_s: float | None = None  # wall-clock seconds for the job; the cosine decay follows the clock
    budget_clock: str = "wall"  # "cpu": time_budget_s counts the process's CPU seconds (fair on a shared machine)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        need(bool(self.out), "out: a path for the model file is required")
        need(self.mode in MODES, f"mode: {self.mode!r} is not one of {MODES}")
        if self.mode == "train":
            need(bool(self.preset) or bool(self.model), "mode 'train' needs a preset (or a model file to resume)")
        else:
            need(bool(self.model), "mode 'finetune' needs a model file ('model')")
        need(isinstance(self.steps, int) and self.steps >= 0, f"steps: {self.steps!r} must be an integer >= 0")
        need(isinstance(self.crop, int) and self.crop > 0 and self.crop % TILE_MULTIPLE == 0,
             f"crop: {self.crop!r} must be a positive multiple of {TILE_MULTIPLE}; try "
             f"{nearest_multiple(self.crop) if isinstance(self.crop, int | float) else TILE_MULTIPLE}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be an integer >= 1")
        need(0.0 <= float(self.aug_strength) <= 1.0, f"aug_strength: {self.aug_strength} must be in 0..1")
        need(float(self.lr) > 0, f"lr: {self.lr} must be > 0")
        need(float(self.new_head_lr) > 0, f"new_head_lr: {self.new_head_lr} must be > 0")
        need(0.0 <= self.new_head_val_fraction < 1.0, "new_head_val_fraction must be in [0, 1)")
        need(float(self.new_head_encoder_lr_mult) >= 0,
             f"new_head_encoder_lr_mult: {self.new_head_encoder_lr_mult} must be >= 0")
        need(isinstance(self.eval_every, int) and self.eval_every >= 1, "eval_every must be an integer >= 1")
        need(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
             "patience must be null or an integer >= 1")
        need(self.num_workers >= 0, "num_workers must be >= 0")
        need(0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1) (0: no validation, keep the last model)")
        need(self.holdout in ("strip", "blocks"), f"holdout: {self.holdout!r} is not 'strip' or 'blocks'")
        need(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
             "threads must be null or an integer >= 1")
        need(0.0 <= float(self.pseudo_weight) <= 1.0, f"pseudo_weight: {self.pseudo_weight} must be in 0..1")
        need(0.0 <= float(self.distill_weight) <= 100.0, f"distill_weight: {self.distill_weight} must be in 0..100")
        need(0.5 <= float(self.distill_temperature) <= 10.0,
             f"distill_temperature: {self.distill_temperature} must be in 0.5..10")
        need(float(self.anchor_weight) >= 0.0, f"anchor_weight: {self.anchor_weight} must be >= 0")
        need(0.0 <= float(self.context_crops) <= 1.0, f"context_crops: {self.context_crops} must be in 0..1")
        for key in ("unchecked_limit", "unchecked_class_limit"):
            need(0.0 <= float(getattr(self, key)) <= 1.0, f"{key}: {getattr(self, key)} must be in 0..1")
        need(0.0 <= float(self.semi_weight) <= 10.0, f"semi_weight: {self.semi_weight} must be in 0..10")
        need(0.5 <= float(self.semi_threshold) <= 1.0, f"semi_threshold: {self.semi_threshold} must be in 0.5..1")
        need(0.0 <= float(self.ema_decay) < 1.0, f"ema_decay: {self.ema_decay} must be in [0, 1)")
        need(0.0 <= float(self.unlabelled_share) < 1.0, f"unlabelled_share: {self.unlabelled_share} must be in [0, 1)")
        need(isinstance(self.unlabelled, list) and all(isinstance(u, str) for u in self.unlabelled),
             "unlabelled: a list of image files or folders")
        need(self.time_budget_s is None or float(self.time_budget_s) > 0, "time_budget_s must be null or > 0")
        need(self.budget_clock in ("wall", "cpu"), f"budget_clock: {self.budget_clock!r} is not 'wall' or 'cpu'")
        need(set(self.weights) <= {"cnn", "swin"}, f"weights: unknown keys {sorted(set(self.weights) - {'cnn', 'swin'})}")
        for key in ("pairs", "val_pairs"):
            for i, pair in enumerate(getattr(self, key) or []):
                need(isinstance(pair, dict) and {"image", "labels"} <= set(pair),
                     f"{key}[{i}]: expected {{'image': path, 'labels': path}}, got {pair!r}")
        if self.class_colors is not None and self.class_names is not None:
            need(len(self.class_colors) == len(self.class_names), "class_colors and class_names differ in length")
        if self.class_colors is not None:
            try:
                self.class_colors = check_colors(self.class_colors, "class_colors")
            except ColorError as exc:
                raise ConfigError(str(exc)) from None
        need(not self.name or self.name not in shipped_names() or _in_starter_dir(self.out),
             f"name: {self.name!r} is a shipped model's name, and a model of that name would hide it or be hidden; "
             f"choose another (--name), e.g. {self.name}-mine")

    def model_name(self, start_name: str = "") -> str:
        """The saved model's name: ``name``, else a new one, so a fine-tune never takes its start's name
        (``<start>-ft-<time>``) and no model takes a shipped one."""
        if self.name:
            return self.name
        from napari_csunet.models.catalog import finetuned_name

        stem = Path(self.out).stem
        if self.model is not None and start_name:
            return finetuned_name(start_name)
        return finetuned_name(stem) if stem in shipped_names() and not _in_starter_dir(self.out) else stem

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default (the one place they are written): what a job a caller does not
        override runs with (the GUI's jobs name only where they differ, as overrides)."""
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(100, self.steps // 20)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if data.get("weights") is None:
            data.pop("weights", None)
        return config_from_dict(cls, data, "job")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _in_starter_dir(out: str) -> bool:
    """Whether ``out`` is in the package's starter folder (the starter recipes regenerate the shipped models)."""
    return Path(out).resolve().parent == STARTER_DIR.resolve()


def _read_mapping(path: Path, kind: str, parse: Any, errors: tuple[type[Exception], ...]) -> dict[str, Any]:
    """Parse a job/recipe file into a dict, with errors that name the file."""
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{kind} not found: {path}") from None
    except (*errors, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be parsed ({str(exc)[:200]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: cannot be parsed (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {kind} is a mapping of keys to values")
    return data


def load_job(path: str | Path):
    """Read a JOB.json file: a ``TrainConfig``, or a ``PretrainConfig`` for ``mode: pretrain``."""
    data = _read_mapping(Path(path), "job file", json.loads, (json.JSONDecodeError,))
    if data.get("mode") == "pretrain":
        return PretrainConfig.from_dict(data)
    return TrainConfig.from_dict(data)


def _in_checkout() -> bool:
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "training" / "csunet_train").is_dir()


def project_root() -> Path:
    """What a recipe's relative ``out``/``model`` paths mean: the repository in a checkout (the
    starter recipes write into the package source), else the current folder (an installed wheel)."""
    return REPO_ROOT if _in_checkout() else Path.cwd()


def default_data_root() -> Path | None:
    """``$CSUNET_DATA_ROOT``, else ``../shared/data/nasa`` next to a checkout (the team's copy), else None."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data" / "nasa" if _in_checkout() else None


def recipe_names() -> list[str]:
    """The recipes shipped in the package (``csunet train --recipe NAME``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _resolve_data_dir(recipe: str, data_dir: str, data_root: str | Path | None) -> str:
    """A recipe's relative ``data_dir`` under the data root, or an error that says how to give one."""
    if Path(data_dir).is_absolute():
        return data_dir
    how = f"pass --data-root DIR (the folder that holds {data_dir}/) or set {DATA_ROOT_ENV}=DIR"
    root = Path(data_root) if data_root is not None else default_data_root()
    if root is None:
        raise ConfigError(f"recipe {recipe}: its data folder {data_dir!r} is relative to a data root: {how}")
    if not (root / data_dir).is_dir():
        raise ConfigError(f"recipe {recipe}: data folder {root / data_dir} not found; {how}")
    return str(root / data_dir)


def load_recipe(path: str | Path, data_root: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A YAML recipe (a file, or a name in :data:`RECIPE_DIR`) -> TrainConfig.

    ``data_dir`` is relative to ``data_root`` (see :func:`default_data_root`), ``out`` (and a
    ``model`` given as a file, not a catalogue name such as ``micro-tiny``) to :func:`project_root`.
    ``overrides`` (e.g. ``out``, ``steps``) replace the recipe's values when not None. A starter
    recipe written anywhere but the starter folder makes the user's own model: its shipped name
    becomes ``<name>-ft-<time>``, so the recipe runs from an installed wheel too.
    """
    import yaml

    path = Path(path)
    if not path.exists() and not path.suffix:
        if not (RECIPE_DIR / f"{path}.yaml").is_file():
            raise ConfigError(f"recipe {str(path)!r} not found: not a file, and not one of {', '.join(recipe_names())}")
        path = RECIPE_DIR / f"{path}.yaml"
    data = _read_mapping(path, "recipe", yaml.safe_load, (yaml.YAMLError,))
    data.setdefault("recipe", path.stem)
    if data.get("data_dir") is not None and overrides.get("data_dir") is None:
        data["data_dir"] = _resolve_data_dir(path.stem, str(data["data_dir"]), data_root)
    data.update({k: v for k, v in overrides.items() if v is not None})
    given = {k for k, v in overrides.items() if v}
    for key in ("out", "model"):  # a recipe's own file paths are relative to the project
        value = data.get(key)
        if value and key not in given and not Path(value).is_absolute() and (key == "out" or Path(value).suffix):
            data[key] = str(project_root() / value)
    if data.get("name") in shipped_names() and "name" not in given and data.get("out") \
            and not _in_starter_dir(data["out"]):
        from napari_csunet.models.catalog import finetuned_name

        data["name"] = finetuned_name(data["name"])
    return TrainConfig.from_dict(data)
