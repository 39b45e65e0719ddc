"""A model file as a bioimage.io model package (spec 0.5): what ilastik, deepImageJ, QuPath and
bioimage.io's own tools run, with its test data, pixel size, provenance and model card.

Why it is built this way:

- Weights need no code of ours: TorchScript and ONNX graphs with the softmax inside
  (:mod:`.graph`); the input is described with the per-image standardisation as preprocessing, so
  a runtime feeds raw pixels. Sides are multiples of 256 (``min: 256, step: 256``); runtimes tile
  larger images themselves.
- The test tensors are computed by our predictor (:class:`~napari_csunet.engine.predictor.Segmenter`, one
  512² tile, float32), so bioimage.io's test checks the graphs against the product itself.
- Our model file travels inside as an attachment and its description in ``config.napari_csunet``:
  :mod:`.importer` turns the package back into exactly the model that was exported.
- bioimage.io's ``parent`` can only name a model published on bioimage.io; a fine-tune's parent
  (a local model file) is named in ``config.napari_csunet.parent`` and in the model card instead.
- No ``maintainers``: bioimage.io checks GitHub user names online, and an export never goes online;
  its validation advises adding one before uploading to bioimage.io (the export prints that advice).
- The rdf.yaml is written by us (plain YAML) and then validated and tested by ``bioimageio.spec``
  and ``bioimageio.core`` when they are installed (``napari-csunet[export]``); nothing is downloaded.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import EXTRA_HINT, ExportError

__all__ = ["PackageResult", "export_bioimageio", "validate_package", "test_package", "CONFIG_KEY", "MODEL_FILE",
           "RDF_NAME", "CSUNET_CITATION", "NASA_CITATION", "WEIGHT_FILES"]

CONFIG_KEY = "napari_csunet"
MODEL_FILE = "model.safetensors"
RDF_NAME = "rdf.yaml"
WEIGHT_FILES = {"torchscript": "weights_torchscript.pt", "onnx": "weights.onnx"}
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
PACKAGE_FORMAT = 1  # of config.napari_csunet
CSUNET_CITATION = {"text": "Alrfou, Zhao & Kordijazi: CS-UNet, a flexible segmentation algorithm for microscopy "
                           "images (arXiv 2308.13917; CVPR Workshops 2024)",
                   "doi": "10.48550/arXiv.2308.13917", "url": "https://arxiv.org/abs/2308.13917"}
NASA_CITATION = {"text": "Stuckner, Harder & Smith: Microstructure segmentation with deep learning encoders "
                         "pre-trained on a large microscopy dataset, npj Computational Materials 8, 200 (2022)",
                 "url": "https://github.com/nasa/pretrained-microscopy-models"}
TAGS = ["semantic-segmentation", "2d", "materials-science", "microscopy", "electron-microscopy", "cs-unet",
        "swin-transformer", "pytorch", "onnx", "napari-csunet"]


@dataclass
class PackageResult:
    """What an export wrote and what checked it."""

    path: Path
    weights: list[str]
    validated: bool | None = None  # None: not validated
    warnings: list[str] = field(default_factory=list)  # bioimage.io's advice (FAIR fields)
    test_passed: bool | None = None  # None: not run (or bioimageio.core not installed)
    test_log: str = ""
    onnx_agreement: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "weights": self.weights, "validated": self.validated, "warnings": self.warnings,
                "test_passed": self.test_passed, "onnx_agreement": self.onnx_agreement}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _identifier(name: str, fallback: str) -> str:
    """A bioimage.io identifier (letters, digits, underscores) for a class name."""
    ident = re.sub(r"\W+", "_", name, flags=re.ASCII).strip("_").lower()
    return ident if ident and not ident[0].isdigit() else fallback


def channel_names(class_names: Sequence[str]) -> list[str]:
    """Unique identifiers for the output channels, in class order (``class_<i>`` where a name has none)."""
    out: list[str] = []
    for i, name in enumerate(class_names, start=1):
        ident = _identifier(name, f"class_{i}")
        out.append(ident if ident not in out else f"{ident}_{i}")
    return out


def default_image(info: Any) -> np.ndarray:
    """A shipped sample micrograph to compute the test tensors on (the EBC one for EBC models)."""
    import tifffile

    from ..plugin.samples import _EBC, _SUPER, DATA_DIR

    text = json.dumps([info.name, info.description, info.provenance.get("recipe", "")]).lower()
    return tifffile.imread(DATA_DIR / f"{_EBC if 'ebc' in text else _SUPER}.tif")


def _axes(info: Any, pixel_size_um: float | None, channels: list[str], output: bool) -> list[dict[str, Any]]:
    """(batch, channel, y, x); input sides any multiple of the networks' 256, outputs the input's size."""
    from ..models.config import TILE_MULTIPLE

    space: list[dict[str, Any]] = []
    for axis in ("y", "x"):
        size = {"tensor_id": INPUT_ID, "axis_id": axis} if output else {"min": TILE_MULTIPLE, "step": TILE_MULTIPLE}
        a: dict[str, Any] = {"type": "space", "id": axis, "size": size}
        if pixel_size_um:
            a.update(scale=float(pixel_size_um), unit="micrometer")
        space.append(a)
    return [{"type": "batch"}, {"type": "channel", "channel_names": channels}, *space]


def _parent(info: Any) -> dict[str, Any] | None:
    """The model this one was fine-tuned from, by name (local files have no bioimage.io id)."""
    started = info.provenance.get("started_from")
    if not started:
        return None
    return {"name": Path(str(started)).stem, "mode": info.provenance.get("mode"),
            "steps": info.provenance.get("run_steps")}


def _metric_lines(provenance: dict[str, Any]) -> list[str]:
    lines = []
    for key, what in (("metrics", "validation"), ("test_metrics", "test")):
        m = provenance.get(key) or {}
        if "miou" in m:
            per = ", ".join(f"{k} {v:.3f}" for k, v in (m.get("iou_per_class") or {}).items())
            lines.append(f"| {what} | {m['miou']:.3f} | {m.get('pixel_accuracy', float('nan')):.3f} | {per} |")
    return lines


def model_card(info: Any, pixel_size_um: float | None, agreement: dict[str, Any], weights: list[str]) -> str:
    """The package's README.md: what the model is, how to feed it, how it was trained and checked."""
    p = info.provenance
    classes = "\n".join(f"| {i} | {n} | `{c}` | {i - 1} |" for i, (n, c) in
                        enumerate(zip(info.class_names, info.class_colors, strict=True), start=1))
    parent = _parent(info)
    metrics = _metric_lines(p)
    size = f"{pixel_size_um:g} µm per pixel" if pixel_size_um else "not recorded (the axes carry no unit)"
    agree = (f"ONNX Runtime's argmax agrees with napari-csunet's predictor (float32) on "
             f"{100 * agreement['agreement']:.3f} % of the pixels of a {agreement['tile'][0]}² tile of the test "
             "image.") if agreement else ""
    lines = [
        f"# {info.name or 'CS-UNet model'}", "", info.description or "A CS-UNet phase segmentation model.", "",
        "Exported by napari-csunet from its model file "
        f"(`{MODEL_FILE}`, attached). Architecture: `{info.config.arch}` (preset `{info.preset}`), CNN encoder "
        f"`{info.config.cnn}`, Swin-T depths {list(info.config.swin.depths) if info.config.swin else '-'}.", "",
        "## Classes", "", "| label | class | colour | output channel |", "|---|---|---|---|", classes, "",
        "## Input and output", "",
        f"- Input `{INPUT_ID}`: (batch, {info.config.in_chans} channel(s), y, x), sides multiples of 256. "
        "Grey micrographs; colour images are converted to luminance first.",
        "- Preprocessing: each image is standardised by its own mean and standard deviation "
        "(`zero_mean_unit_variance` over channel, y, x). Tiles of a large image must use the whole "
        "image's statistics, as napari-csunet does.",
        f"- Output `{OUTPUT_ID}`: class probabilities (softmax inside the graph); the label of a pixel is "
        "the argmax + 1.",
        f"- Pixel size of the training images: {size}.",
        f"- Weights: {', '.join(weights)}. ONNX opset 17, dynamic batch, height and width.",
        "- Large images: tile with an overlap of at least 64 pixels and blend, or use napari-csunet "
        "(`csunet models --import` this package).", "",
        "## Training", "",
        f"- Mode: {p.get('mode') or 'unknown'}; recipe: {p.get('recipe') or '-'}; steps: {p.get('steps') or '-'}.",
        f"- Started from: {parent['name'] if parent else 'pretrained encoders / scratch'}.",
        f"- Training images: {len(p.get('train_images') or [])}; validation images: {len(p.get('val_images') or [])}.",
        f"- Training data fingerprint: `{p.get('data_fingerprint') or '-'}`.",
        f"- Test data: {p.get('test_data') or 'none recorded'}.", "",
        "## Validation", "",
        "Mean IoU (per-class IoU averaged over classes) and pixel accuracy, as recorded in the model file:", "",
        "| data | mean IoU | pixel accuracy | IoU per class |", "|---|---|---|---|",
        *(metrics or ["| none recorded | - | - | - |"]), "",
        "The test tensors were computed by napari-csunet's predictor (float32, one 512² tile). " + agree, "",
        "Validate on your own data before trusting the numbers: segment a few labelled images of your "
        "material and compare per-class IoU.", "",
        "## Citation", "", f"- {CSUNET_CITATION['text']}, {CSUNET_CITATION['url']}",
    ]
    nasa = _trained_on_nasa(info)
    if nasa:
        whose = "Training data" if nasa == "trained" else "Training data of the model it was fine-tuned from"
        lines.append(f"- {whose}: {NASA_CITATION['text']} (MIT licence), {NASA_CITATION['url']}")
    return "\n".join(lines) + "\n"


def _trained_on_nasa(info: Any, depth: int = 0) -> str | None:
    """"trained" (a starter recipe on NASA's data), "started" (a fine-tune of such a model, by its
    description or its parent's file where that is still on disk), or None."""
    from ..models.modelfile import ModelFileError, read_model_info

    p = info.provenance
    if str(p.get("recipe") or "").startswith("starter-") or "nasa" in str(p.get("test_data") or "").lower():
        return "trained" if depth == 0 else "started"
    if "nasa" in (info.description or "").lower():
        return "started"
    parent = Path(str(p.get("started_from") or ""))
    if depth < 4 and parent.suffix == ".safetensors" and parent.is_file():
        try:
            return "started" if _trained_on_nasa(read_model_info(parent), depth + 1) else None
        except ModelFileError:
            return None
    return None


def _cover(tile: np.ndarray, labels: np.ndarray, colors: list[str], path: Path) -> None:
    """A 2:1 cover: the test image beside its segmentation overlay."""
    from PIL import Image

    from ..cli.segment import overlay

    plain = overlay(tile, np.zeros_like(labels), colors, alpha=0.0)
    Image.fromarray(np.concatenate([plain, overlay(tile, labels, colors)], axis=1)).save(path, optimize=True)


def _test_tensors(model: Any, info: Any, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input (1, C, H, W) raw float32, output (1, K, H, W) probabilities, labels): our predictor
    in float32 on one tile."""
    from ..engine.predictor import Segmenter
    from ..images.reading import to_model_channels

    side = tile.shape[0]
    seg = Segmenter(model, info, device="cpu", amp=False, tile=side, overlap=0.0, batch_size=1)
    pred = seg.predict(tile, want_probs=True)
    assert pred.probs is not None
    raw = to_model_channels(tile, info.config.in_chans)[None].astype(np.float32)
    return raw, pred.probs.astype(np.float32)[None], pred.labels


def _samples(files: dict[str, Path], tile: np.ndarray, raw: np.ndarray, probs: np.ndarray) -> None:
    """The FAIR sample tensors: the grey tile as stored (a TIFF anyone can open), or the input's
    channels where the model takes colour or the tile was converted; and its probabilities."""
    import tifffile

    tifffile.imwrite(files["sample_input"], tile if tile.ndim == 2 and raw.shape[1] == 1 else raw[0])
    tifffile.imwrite(files["sample_output"], probs[0])


def _rdf(info: Any, files: dict[str, Path], weights: list[str], pixel_size_um: float | None,
         authors: Sequence[str], license: str, agreement: dict[str, Any]) -> dict[str, Any]:
    import torch

    from .. import __version__
    from .graph import DYNAMIC_AXES, OPSET

    def ref(key: str) -> dict[str, str]:
        return {"source": files[key].name, "sha256": _sha256(files[key])}

    weight_entries: dict[str, Any] = {}
    if "torchscript" in weights:
        weight_entries["torchscript"] = {**ref("torchscript"), "pytorch_version": torch.__version__.split("+")[0]}
    if "onnx" in weights:
        weight_entries["onnx"] = {**ref("onnx"), "opset_version": OPSET,
                                  **({"parent": "torchscript"} if "torchscript" in weights else {})}
    cite = [CSUNET_CITATION] + ([NASA_CITATION] if _trained_on_nasa(info) else [])
    in_channels = ["grey"] if info.config.in_chans == 1 else ["red", "green", "blue"][:info.config.in_chans]
    model_json = json.loads(info.to_json())
    return {
        "type": "model", "format_version": "0.5.4",
        "name": f"CS-UNet {info.name or 'model'}"[:128],
        "description": (info.description or f"CS-UNet segmentation into {', '.join(info.class_names)}")[:1024],
        "authors": [{"name": a} for a in authors],
        "cite": cite, "license": license, "tags": TAGS,
        "documentation": files["readme"].name, "covers": [files["cover"].name],
        "attachments": [ref("model")],
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [{
            "id": INPUT_ID, "description": "micrograph, raw pixel values",
            "axes": _axes(info, pixel_size_um, in_channels, output=False),
            "test_tensor": ref("test_input"), "sample_tensor": ref("sample_input"), "data": {"type": "float32"},
            "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                              {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"],
                                                                           "eps": 1e-6}}]}],
        "outputs": [{
            "id": OUTPUT_ID, "description": "class probabilities; label = argmax + 1 ("
                                            + ", ".join(f"{i} {n}" for i, n in enumerate(info.class_names, 1)) + ")",
            "axes": _axes(info, pixel_size_um, channel_names(info.class_names), output=True),
            "test_tensor": ref("test_output"), "sample_tensor": ref("sample_output"),
            "data": {"type": "float32", "range": [0.0, 1.0]}}],
        "weights": weight_entries,
        "config": {CONFIG_KEY: {
            "package_format": PACKAGE_FORMAT, "exported_by": f"napari-csunet {__version__}",
            "model_file": files["model"].name, "model_sha256": _sha256(files["model"]),
            "class_names": list(info.class_names), "class_colors": list(info.class_colors),
            "parent": _parent(info), "onnx": {"opset": OPSET, "dynamic_axes": {"input": DYNAMIC_AXES}},
            "onnx_agreement": agreement.get("agreement"), "model_info": model_json}},
    }


def export_bioimageio(model: str | Path, out: str | Path, *, image: np.ndarray | None = None,
                      pixel_size_um: float | None = None, authors: Sequence[str] = ("napari-csunet user",),
                      license: str = "BSD-3-Clause", weights: Sequence[str] = ("torchscript", "onnx"),
                      validate: bool = True, test: bool = True) -> PackageResult:
    """Write ``model`` (a model file, or a starter/user model name) as a bioimage.io package.

    ``out`` ending in ``.zip`` is a zip package, otherwise a folder (created; must be empty).
    ``image``: the micrograph the test tensors are computed on (default: a shipped sample).
    ``pixel_size_um``: the training images' pixel size (default: the model file's record, if any).
    """
    from . import load_exportable
    from .graph import centre_tile, export_onnx, export_torchscript, onnx_agreement

    unknown = set(weights) - set(WEIGHT_FILES)
    if unknown or not weights:
        raise ExportError(f"weights must be among {sorted(WEIGHT_FILES)}, got {list(weights)}")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ExportError(f"a pixel size must be a positive number of micrometres, got {pixel_size_um}")
    for needed, module in (("onnx" in weights, "onnx"), (validate, "bioimageio.spec"), (test, "bioimageio.core")):
        if needed:
            _require(module)  # before minutes of work, not after
    net, info, path = load_exportable(model)
    if pixel_size_um is None:
        pixel_size_um = info.provenance.get("pixel_size_um")
    out = Path(out)
    zipped = out.suffix.lower() == ".zip"
    if not zipped and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder; choose a new folder or a .zip path")

    tile = centre_tile(default_image(info) if image is None else np.asarray(image), 512)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".csunet-export-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        files = {k: tmp / v for k, v in {"model": MODEL_FILE, "test_input": "test_input.npy",
                                         "test_output": "test_output.npy", "sample_input": "sample_input.tif",
                                         "sample_output": "sample_output.tif", "cover": "cover.png",
                                         "readme": "README.md", "rdf": RDF_NAME}.items()}
        files.update({w: tmp / WEIGHT_FILES[w] for w in weights})
        shutil.copyfile(path, files["model"])
        raw, probs, labels = _test_tensors(net, info, tile)
        np.save(files["test_input"], raw)
        np.save(files["test_output"], probs)
        _samples(files, tile, raw, probs)
        _cover(tile, labels, list(info.class_colors), files["cover"])
        if "torchscript" in weights:
            export_torchscript(net, info, files["torchscript"])
        agreement: dict[str, Any] = {}
        if "onnx" in weights:
            export_onnx(net, info, files["onnx"])
            try:
                agreement = onnx_agreement(files["onnx"], net, info, tile)
            except ImportError:  # onnxruntime missing: the package is still valid, unchecked here
                agreement = {}
        files["readme"].write_text(model_card(info, pixel_size_um, agreement, list(weights)), encoding="utf-8")
        _write_yaml(files["rdf"], _rdf(info, files, list(weights), pixel_size_um, authors, license, agreement))
        result = PackageResult(out, list(weights), onnx_agreement=agreement)
        if validate:
            result.warnings = validate_package(files["rdf"])
            result.validated = True
        if test:
            result.test_passed, result.test_log = test_package(files["rdf"])
        _place(tmp, out, zipped)
    return result


def _write_yaml(path: Path, content: dict[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _place(folder: Path, out: Path, zipped: bool) -> None:
    """Move the finished package into place: a zip written atomically, or the folder renamed."""
    from ..atomic import atomic_path

    if zipped:
        with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, f.name)
        return
    if out.exists():
        out.rmdir()  # checked empty above
    folder.rename(out)
    folder.mkdir()  # the TemporaryDirectory cleans up after itself


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{module} is not installed: {EXTRA_HINT}") from None


def validate_package(source: str | Path) -> list[str]:
    """bioimage.io's static validation (format, files and hashes): its warnings (e.g. FAIR advice);
    raises ExportError with the summary when the package is invalid."""
    spec = _require("bioimageio.spec")
    descr = spec.load_description(str(source), perform_io_checks=True)
    if isinstance(descr, spec.InvalidDescr):
        raise ExportError(f"bioimage.io validation failed:\n{_summary_text(descr.validation_summary)}")
    return [f"{'.'.join(map(str, w.loc)) or 'package'}: {w.msg}" for d in descr.validation_summary.details
            for w in d.warnings]


def test_package(source: str | Path, devices: Sequence[str] = ("cpu",)) -> tuple[bool, str]:
    """bioimage.io's own dynamic test (``bioimageio.core.test_model``) on CPU: (passed, summary)."""
    core = _require("bioimageio.core")
    summary = core.test_model(str(source), devices=list(devices))
    return summary.status == "passed", _summary_text(summary)


def _summary_text(summary: Any) -> str:
    lines = [f"{summary.name}: {summary.status}"]
    for d in summary.details:
        lines.append(f"  {d.status:7} {d.name}")
        lines.extend(f"          error at {'.'.join(map(str, e.loc))}: {e.msg}" for e in d.errors)
    return "\n".join(lines)
