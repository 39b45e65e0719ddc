"""``csunet train`` and ``csunet finetune``: a recipe, a folder or a job file -> a model file.

Both run the same job as ``python -m csunet_train.job`` in this process, with a progress bar on
stderr, or with the JSON-lines events on stdout (``--json-events``). No torch at import time.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "config_from_args", "run_from_args", "Progress"]

#: flag name -> job key, for the options both subcommands share (None = not given)
_SHARED = {
    "data": "data_dir", "unlabelled": "unlabelled", "split": "split", "val_split": "val_split", "names": "names", "steps": "steps", "lr": "lr",
    "crop": "crop", "batch_size": "batch_size", "aug_strength": "aug_strength", "freeze_cnn": "freeze_cnn",
    "freeze_swin": "freeze_swin", "eval_every": "eval_every", "patience": "patience", "device": "device",
    "amp": "amp", "seed": "seed", "num_workers": "num_workers", "stop_file": "stop_file", "out": "out",
    "half": "half", "zero_is_class": "zero_is_class", "name": "name", "semi_weight": "semi_weight",
    "balanced_ce": "balanced_ce",
}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _weights(text: str) -> dict[str, str | None]:
    """``cnn=imagenet,swin=microlite`` -> {"cnn": "imagenet", "swin": "microlite"}."""
    out: dict[str, str | None] = {"cnn": None, "swin": None}
    for part in _csv(text):
        key, sep, value = part.partition("=")
        if not sep or key not in out:
            raise argparse.ArgumentTypeError(f"--weights: expected cnn=SOURCE,swin=SOURCE, got {part!r}")
        out[key] = value or None
    return out


def _add_shared(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", help="folder in NASA's layout (train/ + train_annot/) or images/ + masks/")
    g.add_argument("--unlabelled", metavar="DIR|FILE", action="append", help="images of the same material without "
                   "labels (repeatable): a fine-tune of a trained model keeps its answers there (distillation); "
                   "a new model (new classes, a preset) learns its confident answers there (--semi-weight)")
    g.add_argument("--split", help="training split of --data (default train)")
    g.add_argument("--val-split", help="validation split (default val; held out from the training images if absent)")
    g.add_argument("--names", type=_csv, metavar="A,B", help="train only on these image stems")
    g.add_argument("--zero-is-class", action="store_true", default=None,
                   help="label maps count 0 as a class (NASA's); default: 0 = unlabelled except in NASA's layout")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--crop", type=int, help="crop side in pixels, a multiple of 256")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--aug-strength", type=float, help="0 (none) .. 1 (strong)")
    g.add_argument("--semi-weight", type=float, metavar="W", help="weight of the mean teacher's answers on "
                   "unlabelled pixels and --unlabelled images (0: off)")
    g.add_argument("--balanced-ce", action=argparse.BooleanOptionalAction, default=None,
                   help="cross-entropy averaged per class, so a rare phase weighs like the matrix")
    g.add_argument("--freeze-cnn", action="store_true", default=None)
    g.add_argument("--freeze-swin", action="store_true", default=None)
    g.add_argument("--eval-every", type=int, metavar="STEPS")
    g.add_argument("--patience", type=int, metavar="EVALS", help="stop after this many evaluations without gain")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="float32 (default: mixed precision on GPUs and on CPUs with bf16 instructions)")
    g.add_argument("--seed", type=int)
    g.add_argument("--num-workers", type=int)
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="FILE", help="model file to write (.safetensors)")
    g.add_argument("--name", help="model name shown in the GUI")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    g.add_argument("--half", action="store_true", default=None, help="store fp16 weights (half the size)")
    g.add_argument("--stop-file", metavar="FILE", help="stop cleanly when this file appears")
    g.add_argument("--json-events", action="store_true", help="JSON-lines events on stdout instead of a progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a preset, a recipe or a job file",
                       description="Train a model: --recipe FILE | --job JOB.json | --data DIR --preset NAME --out FILE")
    p.add_argument("--recipe", metavar="NAME|FILE", help="a recipe shipped with the package (e.g. super3, "
                   "starter-ebc) or a YAML file")
    p.add_argument("--data-root", metavar="DIR", help="the folder holding a recipe's data_dir (Super1/, EBC2/); "
                   "default $CSUNET_DATA_ROOT, or ../shared/data/nasa next to a checkout")
    p.add_argument("--job", metavar="JOB.json", help="run a job file (the GUI's format)")
    p.add_argument("--preset", help="architecture (see `csunet models`)")
    p.add_argument("--weights", type=_weights, metavar="cnn=SRC,swin=SRC", help="pretrained encoder sources")
    p.add_argument("--allow-download", action="store_true", default=None, help="let weight sources download")
    p.add_argument("--model", metavar="FILE", help="resume from this model file")
    _add_shared(p)
    p.set_defaults(func=_run, mode="train")
    p = sub.add_parser("finetune", help="fine-tune a model file on labelled images",
                       description="Fine-tune: --model FILE --data DIR --out FILE (or --resume --data DIR --out FILE)")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--model", metavar="FILE", help="model file or model name to start from")
    start.add_argument("--resume", action="store_true", help="continue the fine-tune saved at --out (after a stop, "
                       "a kill or a crash) for the rest of --steps, with its hyperparameters")
    _add_shared(p)
    p.set_defaults(func=_run, mode="finetune", recipe=None, data_root=None, job=None, preset=None, weights=None,
                   allow_download=None)


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from a recipe/job file plus the flags that were given."""
    from .config import TrainConfig, load_job, load_recipe

    given: dict[str, Any] = {key: getattr(args, flag) for flag, key in _SHARED.items()
                             if getattr(args, flag, None) is not None}
    for key in ("preset", "weights", "allow_download", "model"):
        if getattr(args, key, None) is not None:
            given[key] = getattr(args, key)
    if args.mode == "finetune":
        given["mode"] = "finetune"
    if getattr(args, "resume", False):
        given = _resumed(given)
    if args.recipe:
        return load_recipe(args.recipe, args.data_root, **given)
    if args.job:
        base = load_job(args.job).to_dict()
        return TrainConfig.from_dict(base | given)
    return TrainConfig.from_dict({"out": ""} | given)


def _check_start(spec: str) -> None:
    """A bad starting model file is refused before torch is imported (the job would load it later)."""
    from napari_csunet.models.catalog import resolve_model
    from napari_csunet.models.modelfile import ModelFileError, check_model_file

    from .config import ConfigError

    try:
        _, path = resolve_model(spec)
        if path is not None:
            check_model_file(path)
    except (KeyError, FileNotFoundError, ModelFileError) as exc:
        raise ConfigError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None


def _resumed(given: dict[str, Any]) -> dict[str, Any]:
    """``finetune --resume``: start from the checkpoint at ``out`` for the steps it has not run, with
    its name and hyperparameters (flags given again win)."""
    from pathlib import Path

    from napari_csunet.models.modelfile import ModelFileError, read_model_info

    from .config import ConfigError, TrainConfig

    out = given.get("out")
    if not out or not Path(out).is_file():
        raise ConfigError(f"--resume: no fine-tune saved at --out {out}; start it with --model")
    try:
        info = read_model_info(out)
    except ModelFileError as exc:
        raise ConfigError(f"--resume: {exc}") from None
    record = info.provenance
    if record.get("mode") != "finetune":
        raise ConfigError(f"--resume: {out} is not a fine-tune checkpoint; start from it with --model")
    done = int(record.get("run_steps") or 0)
    total = int(given.get("steps") or record.get("hyperparameters", {}).get("steps") or TrainConfig.steps)
    if done >= total:
        raise ConfigError(f"--resume: {out} has run {done} of {total} steps; pass a larger --steps to go on")
    saved = {k: v for k, v in record.get("hyperparameters", {}).items() if k in TrainConfig.__dataclass_fields__}
    resumed = {"model": str(out), "steps": total - done, "name": given.get("name") or info.name}
    if "seed" not in given:  # other crops than the ones already trained on
        resumed["seed"] = int(saved.get("seed", 0)) + done
    return saved | given | resumed


def _metrics_text(m: dict[str, Any]) -> str:
    if m.get("miou") is not None:
        return f"mIoU {m['miou']:.4f}, paper IoU {m['iou_paper']:.4f}"
    if m.get("recon_l1") is not None:  # pretraining
        return f"reconstruction L1 {m['recon_l1']:.4f} (blank: {m['mean_l1']:.4f})"
    return ""


class Progress:
    """Events -> a tqdm bar and short lines on stderr (training and pretraining)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        from napari_csunet.safetext import shown

        kind = event["event"]
        if kind == "started":
            what = f"classes {shown(', '.join(event['classes']))}" if "classes" in event else "masked image modelling"
            tqdm.write(f"{event.get('mode', 'training')} on {event['device']}: {event['train_images']} train / "
                       f"{event['val_images']} val images, {event['params'] / 1e6:.1f}M parameters, {what}",
                       file=sys.stderr)
            self.bar = tqdm(total=event["steps"], unit="step", file=sys.stderr, dynamic_ncols=True)
        elif kind == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", img_s=f"{event['images_per_s']:.1f}")
        elif kind == "eval" and event["metrics"]:
            tqdm.write(f"step {event['step']}: {_metrics_text(event['metrics'])}" + (" (best)" if event["best"] else ""),
                       file=sys.stderr)
        elif kind in ("warning", "error"):  # messages name files and classes: control characters escaped
            tqdm.write(f"{kind}: {shown(event['message'])}", file=sys.stderr)
        elif kind == "done":
            if self.bar is not None:
                self.bar.close()
            note = " (stopped)" if event["stopped"] else ""
            print(f"saved {event['path']}{note}: {_metrics_text(event['best_metrics'] or {})} "
                  f"from step {event['best_step']}")
            if event.get("decision"):  # a fine-tune: is the new model better than the one it started from?
                print(event["decision"]["reason"])


def _run(args: argparse.Namespace) -> int:
    return run_from_args(args, config_from_args, check_out=True)


def run_from_args(args: argparse.Namespace, make_config, check_out: bool = False) -> int:
    """Build the job from the flags, then run it with a progress bar (or JSON-lines events).

    ``check_out``: refuse an ``--out`` that exists (without ``--overwrite``), is a folder or cannot
    be written before any work; every run holds ``--out``'s lock, so two never write one file.
    """
    from napari_csunet.cli.outputs import OutputError, check_out_file, out_lock

    from .config import ConfigError, _in_starter_dir
    from .events import StopControl, stdout_events
    from .job import EXIT_CODES, run_and_report

    emit = stdout_events() if args.json_events else Progress()
    try:
        cfg = make_config(args)
        if check_out:  # the starter recipes regenerate the shipped files in place
            check_out_file(cfg.out, overwrite=args.overwrite or getattr(args, "resume", False)
                           or _in_starter_dir(cfg.out))
            if cfg.model:
                _check_start(cfg.model)
        with out_lock(cfg.out), StopControl(cfg.stop_file) as stop:
            return run_and_report(cfg, emit, stop)
    except (ConfigError, OutputError) as exc:
        emit({"event": "error", "kind": "data", "message": str(exc)})
        return EXIT_CODES["data"]
