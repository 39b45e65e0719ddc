"""``csunet export`` (bioimage.io package, ONNX, TorchScript) and ``csunet models --import``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "import_command"]

FORMATS = ("bioimageio", "onnx", "torchscript")


def _read_image(path: str | None):
    if path is None:
        return None
    from ..images.reading import read_image

    return read_image(path)


def _export(args: argparse.Namespace) -> int:
    from ..cli.main import print_json
    from . import ExportError

    try:
        if args.format == "bioimageio":
            return _bioimageio(args, print_json)
        return _graph(args, print_json)
    except (ExportError, KeyError, FileNotFoundError, ValueError) as exc:
        print(f"csunet export: {exc}", file=sys.stderr)
        return 2


def _bioimageio(args: argparse.Namespace, print_json) -> int:
    from .bioimageio import export_bioimageio

    result = export_bioimageio(args.model, args.out, image=_read_image(args.image), pixel_size_um=args.pixel_size,
                               authors=args.author or ("napari-csunet user",), license=args.license,
                               weights=args.weights.split(","), test=not args.no_test)
    if args.json:
        print_json(result.to_dict() | {"test_log": result.test_log})
    else:
        if result.test_log:
            print(result.test_log)
        for warning in result.warnings:
            print(f"bioimage.io advice: {warning}")
        agree = result.onnx_agreement.get("agreement")
        tested = {True: "passed", False: "FAILED", None: "not run"}[result.test_passed]
        print(f"wrote {result.path} (weights: {', '.join(result.weights)}; bioimage.io validation: "
              f"{'passed' if result.validated else 'not run'}; bioimage.io test: {tested}"
              + (f"; ONNX Runtime agrees with the predictor on {100 * agree:.3f} % of a 512² tile" if agree else "")
              + ")")
    return 0 if result.test_passed is not False else 1


def _graph(args: argparse.Namespace, print_json) -> int:
    """One graph file: ONNX (checked against the predictor with ONNX Runtime) or TorchScript."""
    from . import graph, load_exportable
    from .bioimageio import default_image

    model, info, _ = load_exportable(args.model)
    out = Path(args.out)
    facts: dict = {"path": str(out), "format": args.format, "input": graph.INPUT_NAME, "output": graph.OUTPUT_NAME,
                   "classes": info.class_names, "preprocessing": "per-image standardisation (x - mean) / std",
                   "dynamic_axes": graph.DYNAMIC_AXES, "size_multiple": int(getattr(model, "size_multiple", 256))}
    if args.format == "torchscript":
        graph.export_torchscript(model, info, out)
    else:
        graph.export_onnx(model, info, out)
        facts["opset"] = graph.OPSET
        image = _read_image(args.image)
        facts["check"] = graph.onnx_agreement(out, model, info, default_image(info) if image is None else image)
    if args.json:
        print_json(facts)
        return 0
    print(f"wrote {out}: input '{graph.INPUT_NAME}' (batch, {info.config.in_chans}, height, width), standardised per "
          f"image; output '{graph.OUTPUT_NAME}' (batch, {info.num_classes}: {', '.join(info.class_names)}, height, width); "
          f"height and width multiples of {facts['size_multiple']}; dynamic axes batch, height, width")
    if "check" in facts:
        check = facts["check"]
        mixed = check.get("agreement_mixed_precision")
        print(f"ONNX opset {graph.OPSET}; ONNX Runtime's argmax agrees with the predictor (float32) on "
              f"{100 * check['agreement']:.3f} % of a 512x512 tile ({check['pixels']} pixels)"
              + (f"; with the predictor's default mixed precision (bf16) on {100 * mixed:.3f} %" if mixed else ""))
    return 0


def import_command(package: str, as_json: bool = False) -> int:
    """``csunet models --import PACKAGE``: a package we exported becomes a model in the catalogue."""
    from ..cli.main import print_json
    from ..models.modelfile import describe
    from . import ExportError
    from .importer import import_package

    try:
        path = import_package(package)
    except ExportError as exc:
        print(f"csunet models --import: {exc}", file=sys.stderr)
        return 2
    entry = describe(path)
    if as_json:
        print_json(entry)
    else:
        print(f"imported {entry['name']} ({', '.join(entry['classes'])}) to {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model as a bioimage.io package, ONNX or TorchScript",
                       description="Export a model file (or a starter/user model name) for other tools. "
                                   'Needs the optional libraries: pip install "napari-csunet[export]".')
    p.add_argument("model", help="model file or model name (csunet models)")
    p.add_argument("--format", choices=FORMATS, default="bioimageio")
    p.add_argument("--out", required=True, help="bioimageio: a folder or a .zip; onnx/torchscript: the file")
    p.add_argument("--image", help="micrograph for the test tensors and the ONNX check (default: a shipped sample)")
    p.add_argument("--pixel-size", type=float, metavar="UM", help="training images' pixel size in µm (axes' scale)")
    p.add_argument("--author", action="append", help="author name for the package (repeatable)")
    p.add_argument("--license", default="BSD-3-Clause", help="SPDX licence of the package (default BSD-3-Clause)")
    p.add_argument("--weights", default="torchscript,onnx", help="bioimageio weight formats (comma-separated)")
    p.add_argument("--no-test", action="store_true", help="skip bioimage.io's own test of the package")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_export)
    _add_import_to_models(sub)


def _add_import_to_models(sub: argparse._SubParsersAction) -> None:
    """``csunet models --import PACKAGE``: added here so the models command needs no export code."""
    models = sub.choices.get("models")
    if models is None:
        return
    models.add_argument("--import", dest="import_package", metavar="PACKAGE",
                        help="import a bioimage.io package exported by napari-csunet (.zip or folder)")
    listing = models.get_default("func")

    def run(args: argparse.Namespace) -> int:
        if args.import_package:
            return import_command(args.import_package, args.json)
        return listing(args)

    models.set_defaults(func=run)
