"""The ``csunet`` command: one entry point, subcommands registered by the modules that own them.

Each owner module exposes ``register(subparsers)``; it must not import torch at module level so
``csunet --help`` stays fast. Handlers return an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "print_json"]

#: modules that add subcommands, in help order
COMMAND_MODULES = (
    "napari_csunet.cli.main",            # models
    "napari_csunet.weights.cli",    # weights list/path/fetch/import
    "napari_csunet.cli.segment",    # segment, evaluate
    "csunet_train.cli",             # train, finetune
    "csunet_train.pretrain_cli",    # pretrain
    "napari_csunet.cli.demo",           # demo
    "napari_csunet.export.cli",     # export; adds --import to models
)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _models(args: argparse.Namespace) -> int:
    from ..models import build_model, count_parameters
    from ..models.catalog import scan_model_files
    from ..models.registry import PRESETS
    from ..safetext import shown

    rows = []
    for name, preset in PRESETS.items():
        params = count_parameters(build_model(name)) if not args.no_params else None
        rows.append({"name": name, "kind": "preset", "arch": preset.config.arch, "cnn": preset.config.cnn,
                     "swin_depths": list(preset.config.swin.depths) if preset.config.swin else None,
                     "params": params, "description": preset.description,
                     "cnn_sources": list(preset.cnn_sources), "swin_sources": list(preset.swin_sources)})
    files, unreadable = scan_model_files()
    if args.json:
        print_json({"model_files": files, "presets": rows, "unreadable": unreadable})
        return 0
    if files:
        print("Model files (starter and fine-tuned):")
        for f in files:
            what = "pretrained starting point: fine-tune it" if f["kind"] == "pretrained" else ", ".join(f["classes"])
            shadow = " (a shipped model's name: use this one by its path)" if f.get("shadowed") else ""
            print(f"  {shown(f['name']):<28} {shown(what)}  {shown(f['path'])}{shadow}")
        print()
    if unreadable:
        print("Model files that cannot be read (skipped):")
        for u in unreadable:
            print(f"  {shown(u['path'])}: {shown(u['reason'])}")
        print()
    print("Presets:")
    for r in rows:
        p = f"{r['params'] / 1e6:6.1f}M" if r["params"] else "      "
        srcs = ", ".join(f"cnn:{s}" for s in r["cnn_sources"]) + (" " if r["cnn_sources"] else "") + \
            ", ".join(f"swin:{s}" for s in r["swin_sources"])
        print(f"  {r['name']:<24}{p}  {r['description']}\n  {'':<32}weights: random, {srcs or 'none'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list presets and model files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-params", action="store_true", help="skip building each preset to count parameters")
    p.set_defaults(func=_models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csunet", description="CS-UNet segmentation of micrographs")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure (also after COMMAND)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part is not installed
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand: a user's mistake ends in one line and exit code 2 (``--debug``, anywhere on
    the command line, shows the traceback instead); see :mod:`napari_csunet.cli.errors`."""
    from .errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    return run_command(args.func, args, debug="--debug" in argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
