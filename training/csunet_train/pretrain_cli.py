"""``csunet pretrain``: self-supervised pretraining on folders of unlabelled micrographs.

Runs the same job as ``python -m csunet_train.job JOB.json`` with ``mode: pretrain`` (also under
``torchrun``); a progress bar on stderr, or JSON-lines events with ``--json-events``.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "pretrain_config_from_args"]

#: flag -> job key, for flags that are passed through when given
_FLAGS = ("preset", "steps", "lr", "crop", "batch_size", "mask_ratio", "mask_patch", "aug_strength", "val_images",
          "eval_every", "device", "amp", "seed", "num_workers", "stop_file", "half", "name", "in_chans",
          "time_budget_s", "resume", "max_side")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining on unlabelled micrographs (masked image modelling)",
        description="Pretrain a whole CS-UNet (both encoders and the decoder) by masked image modelling on "
                    "folders of unlabelled micrographs (any size, 8/16-bit, grey or RGB). The result is a "
                    "model file to fine-tune from: csunet finetune --model OUT --data DIR.")
    p.add_argument("images", nargs="+", metavar="FOLDER_OR_IMAGE", help="folders (searched recursively) or images")
    p.add_argument("--out", required=True, metavar="FILE", help="pretrained model file to write (.safetensors)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files whose name, stem or relative path matches (repeatable), "
                        "e.g. benchmark test images")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--preset", help="architecture to pretrain from random weights (default csunet-tiny)")
    start.add_argument("--from", dest="model", metavar="MODEL",
                       help="continue from a model file or name (domain adaptation on your own images)")
    start.add_argument("--resume", action="store_true", default=None,
                       help="continue the run saved at --out (after a stop or a crash)")
    p.add_argument("--steps", type=int, help="total optimisation steps (default 2000)")
    p.add_argument("--time-budget", dest="time_budget_s", type=float, metavar="SECONDS",
                   help="stop after this many seconds; the learning-rate decay follows the clock")
    p.add_argument("--lr", type=float)
    p.add_argument("--crop", type=int, help="crop side in pixels, a multiple of 256")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mask-ratio", type=float, help="share of the crop that is blanked (default 0.6)")
    p.add_argument("--mask-patch", type=int, help="side of the blanked squares in pixels (default 32)")
    p.add_argument("--aug-strength", type=float, help="0 (none) .. 1 (strong)")
    p.add_argument("--val-images", type=int, help="images held out to report the reconstruction error")
    p.add_argument("--eval-every", type=int, metavar="STEPS", help="report and checkpoint every N steps")
    p.add_argument("--in-chans", type=int, choices=(1, 3), help="1: grey (default), 3: colour")
    p.add_argument("--max-side", type=int, metavar="PX", help="stride larger images down to this side")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--name", help="model name shown in the GUI")
    p.add_argument("--half", action="store_true", default=None, help="store fp16 weights (half the size)")
    p.add_argument("--stop-file", metavar="FILE", help="stop cleanly when this file appears")
    p.add_argument("--json-events", action="store_true", help="JSON-lines events on stdout instead of a progress bar")
    p.set_defaults(func=_run)


def pretrain_config_from_args(args: argparse.Namespace):
    from .pretrain_config import PretrainConfig

    given = {key: getattr(args, key) for key in _FLAGS if getattr(args, key, None) is not None}
    if args.model:
        given["model"] = args.model
    return PretrainConfig.from_dict({"out": args.out, "images": list(args.images), "exclude": list(args.exclude)}
                                    | given)


def _run(args: argparse.Namespace) -> int:
    from .cli import run_from_args

    return run_from_args(args, pretrain_config_from_args)
