"""``csunet segment`` (batch segmentation of files, folders and globs) and ``csunet evaluate``.

A bad file never stops a batch: it gets one line on stderr naming the file and the problem, the
others are written, and the exit code is 1. Under ``torchrun`` (``WORLD_SIZE``/``RANK`` set) each
rank segments ``files[rank::world]`` and rank 0 gathers the rows and writes the one summary.csv;
with one process torch.distributed is never touched. torch is imported only inside the handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_path
from ..colors import hex_rgb
from ..engine.device import launch_ranks, rank_device
from ..engine.lazy import is_lazy_input
from ..engine.mosaic import mosaic_row
from ..images.databar import predict_outside
from ..images.reading import IMAGE_SUFFIXES, read_image
from ..measure.measurements import DEFAULT_MIN_AREA, calibration_for, measure
from ..measure.report import batch_tables, write_batch_tables
from ..safetext import shown
from .errors import GracefulStop
from .outputs import check_out_dir, out_lock

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..engine.predictor import Segmenter

__all__ = ["register", "expand_inputs", "overlay", "output_stems"]

_OUTPUT_ENDINGS = ("_labels", "_probs", "_overlay")


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file, starter/user model name, or preset (random weights)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--tile", type=int, help="tile side in pixels, a multiple of 256 (default: chosen per image "
                   "from the device's memory)")
    p.add_argument("--overlap", type=float, help="tile overlap as a fraction of the tile (default: 64 px)")
    p.add_argument("--batch", type=int, help="tiles per forward pass (default: sized to the device's memory)")
    p.add_argument("--tta", action="store_true", help="average over flips (4x slower, smoother)")
    p.add_argument("--no-amp", action="store_true",
                   help="float32 (default: bf16/fp16 autocast on GPUs, bf16 on CPUs with bf16 instructions)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images, folders or globs into label TIFFs, overlays and a CSV",
                       description="Segment micrographs; writes <stem>_labels.tif, <stem>_overlay.png, optionally "
                                   "<stem>_probs.tif, and summary.csv (area fractions, particle statistics); "
                                   "zarr/OME-Zarr and TIFFs over 64 Mpx are read lazily into <stem>_labels.zarr.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, zarr/OME-Zarr, folders or glob patterns")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--probs", action="store_true", help="also write per-class probabilities (float16 TIFF)")
    p.add_argument("--no-overlay", action="store_true", help="skip the colour overlay PNGs")
    p.add_argument("--pixel-size", type=_positive, metavar="UM", help="µm per pixel for every image (default: from "
                   "each file's metadata or sidecar, else numbers in px)")
    p.add_argument("--no-databar", action="store_true", help="do not look for an SEM data bar (default: its rows "
                   "are left out of segmentation and statistics, label 0)")
    p.add_argument("--matrix", metavar="CLASS", help="the matrix class, not counted as particles (default: the "
                   "largest class of each image)")
    p.add_argument("--min-size", type=lambda v: int(_positive(v)), default=None, metavar="PX",
                   help="smallest particle counted, in pixels (default 9: 3 x 3)")
    p.add_argument("--report", action="store_true", help="also write report.html: tables, plots, overlays")
    _engine_args(p)
    p.set_defaults(func=_segment)

    e = sub.add_parser("evaluate", help="score a model on a labelled dataset (IoU, paper IoU, accuracy)",
                       description="Evaluate on NASA's layout (<split>/ + <split>_annot/) or images/ + masks/.")
    e.add_argument("--data", required=True, type=Path, help="dataset folder")
    e.add_argument("--split", default="test", help="split folder in NASA's layout (default test)")
    e.add_argument("--zero-is-class", action="store_true", default=None,
                   help="label maps use 0 for a real class (automatic for NASA's layout)")
    _engine_args(e)
    e.set_defaults(func=_evaluate)


# -- inputs and outputs ------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") \
        and not path.stem.endswith(_OUTPUT_ENDINGS)


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """(image files in a stable order, one error line per input that matched nothing)."""
    files: list[Path] = []
    errors: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not is_lazy_input(path):
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
            errors += [] if found else [f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder"]
        elif path.exists():
            found = [path]
        elif glob.has_magic(item):
            found = sorted(p for p in map(Path, glob.glob(item, recursive=True)) if p.is_file() and _is_image(p))
            errors += [] if found else [f"{item}: no images match this pattern"]
        else:
            found, errors = [], errors + [f"{path}: no such file or folder"]
        files += [p for p in found if p not in files]
    return files, errors


def output_stems(files: list[Path]) -> list[str]:
    """Output name stems, unique even when two folders hold files of the same name."""
    stems, seen = [], set()
    for f in files:
        stem, n = f.stem, 1
        while stem in seen:
            n += 1
            stem = f"{f.stem}-{n}"
        seen.add(stem)
        stems.append(stem)
    return stems


def overlay(image: np.ndarray, labels: np.ndarray, colors: list[str], alpha: float = 0.4) -> np.ndarray:
    """uint8 RGB: the image contrast-stretched (0.5-99.5 percentiles) with class colours blended on."""
    from ..engine.predictor import split_planes

    planes, stack = split_planes(image)
    if stack:  # one picture per stack: the middle slice
        plane, labels = planes[len(planes) // 2], labels[len(planes) // 2]
    else:
        plane = planes[0]
    x = plane.astype(np.float32)
    step = max(1, int(np.sqrt(x.shape[0] * x.shape[1] / 4e6)))
    lo, hi = np.percentile(x[::step, ::step], (0.5, 99.5))
    grey = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = grey[..., None].repeat(3, -1) if grey.ndim == 2 else grey
    palette = np.array([(0, 0, 0)] + [hex_rgb(c) for c in colors], dtype=np.float32)
    return ((1 - alpha) * rgb + alpha * palette[labels]).round().astype(np.uint8)


def _write_outputs(out: Path, stem: str, image: np.ndarray, pred: Any, info: Any, args: argparse.Namespace,
                   pixel_size_um: float | None = None) -> dict[str, str]:
    import skimage.io
    import tifffile

    from ..plugin.writer import write_labels

    meta = {"metadata": {"class_names": list(info.class_names), "class_colors": list(info.class_colors)},
            "pixel_size_um": pixel_size_um}
    written = {"labels": write_labels(str(out / f"{stem}_labels.tif"), pred.labels, meta)[0]}
    if pred.probs is not None:
        path = out / f"{stem}_probs.tif"
        with atomic_path(path, suffix=".tif") as tmp:
            tifffile.imwrite(tmp, pred.probs, compression="zlib", metadata={"axes": "CYX" if pred.probs.ndim == 3 else "ZCYX"})
        written["probs"] = str(path)
    if not args.no_overlay:
        path = out / f"{stem}_overlay.png"
        with atomic_path(path, suffix=".png") as tmp:
            skimage.io.imsave(tmp, overlay(image, pred.labels, list(info.class_colors)), check_contrast=False)
        written["overlay"] = str(path)
    return written


def _segmenter(args: argparse.Namespace, device: str | torch.device | None = None) -> Segmenter:
    from ..engine.predictor import Segmenter

    return Segmenter.from_spec(args.model, device=device or args.device, tile=args.tile, overlap=args.overlap,
                               batch_size=args.batch, amp=not args.no_amp)


def _say_error(message: str) -> None:
    print(f"error: {shown(message)}", file=sys.stderr, flush=True)  # file names may hold ESC/CR


def _named(path: Path, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (ValueError, OSError, MemoryError)):  # not one of the expected bad-input errors
        text = f"{type(exc).__name__}: {text}"
    return text if str(path) in text else f"{path}: {text}"


# -- distributed helpers (torchrun) ------------------------------------------------------------------

def _gather(obj: Any, world: int) -> list[Any]:
    """All ranks' ``obj`` on rank 0 (``[obj]`` without torch.distributed for a single process)."""
    if world == 1:
        return [obj]
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():  # joined after the work, so slow ranks never time out a collective
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    parts = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, parts, dst=0)
    dist.destroy_process_group()
    return parts or []


# -- segment -----------------------------------------------------------------------------------------

def _segment_files(seg: Any, files: list[Path], stems: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per image. Ctrl-C or SIGTERM ends the batch after the current image (a second one at
    once), setting ``args.interrupted``, so the summary of the images done is still written."""
    results: list[dict[str, Any]] = []
    killed = False
    with GracefulStop("the current image") as stop:
        try:
            _segment_each(seg, files, stems, args, results, lambda: stop.requested)
        except KeyboardInterrupt:  # the second signal
            killed = True
    args.interrupted = killed or stop.requested
    return results


def _segment_each(seg: Any, files: list[Path], stems: list[str], args: argparse.Namespace,
                  results: list[dict[str, Any]], stopping: Callable[[], bool]) -> None:
    from tqdm import tqdm

    with tqdm(total=len(files), unit="image", disable=None, file=sys.stderr) as bar:
        for path, stem in zip(files, stems, strict=True):
            if stopping():
                break
            start = time.perf_counter()
            tiles = tqdm(unit="tile", leave=False, disable=None, file=sys.stderr, desc=path.name)

            def progress(done: int, total: int, tiles: Any = tiles) -> None:
                tiles.total = total
                tiles.update(done - tiles.n)

            try:
                if is_lazy_input(path):  # larger than memory: tiles read lazily, labels into chunked zarr
                    results.append(mosaic_row(seg, path, args.out, stem, args.probs, args.tta, progress))
                    bar.update(1)
                    continue
                image = read_image(path)
                size, databar = calibration_for(path, image, args.pixel_size, not args.no_databar)
                pred = predict_outside(lambda im, p=path: seg.predict(im, want_probs=args.probs, tta=args.tta, progress=progress,
                                                                      name=str(p)), image, databar)
                written = _write_outputs(args.out, stem, image, pred, seg.info, args, size.mean_um if size else None)
                measured = measure(pred.labels, seg.info.class_names, size, databar, args.matrix,
                                   args.min_size or DEFAULT_MIN_AREA)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                _say_error(_named(path, exc))
                results.append({"input": str(path), "error": _named(path, exc)})
            else:
                results.append({"input": str(path), "shape": list(pred.labels.shape), **written,
                                "pixel_size_um": size.mean_um if size else None,
                                "databar": databar.to_dict() if databar else None,
                                "seconds": round(time.perf_counter() - start, 3),
                                **batch_tables(path.name, measured, size, databar,
                                               overlay(image, pred.labels, list(seg.info.class_colors))
                                               if args.report else None)})
            finally:
                tiles.close()
            bar.update(1)


def _segment(args: argparse.Namespace) -> int:
    world, rank, _ = launch_ranks()
    files, input_errors = expand_inputs(args.inputs)
    check_out_dir(args.out)  # before the model loads; OutputError is the command's one-line error
    with out_lock(args.out) if rank == 0 else contextlib.nullcontext():  # two runs never mix one folder
        return _segment_into(args, world, rank, files, input_errors)


def _segment_into(args: argparse.Namespace, world: int, rank: int, files: list[Path], input_errors: list[str]) -> int:
    stems = output_stems(files)
    if rank == 0:
        for message in input_errors:
            _say_error(message)
    # under torchrun each rank takes its own GPU; a plain process resolves its device as the model
    # loads, after the file's header is checked (a hostile file never imports torch)
    device = rank_device(args.device) if world > 1 else None
    seg = _segmenter(args, device)  # a bad model or device: the command's one-line error
    if args.matrix is not None and args.matrix not in seg.info.class_names:
        _say_error(f"--matrix {args.matrix!r} is not one of the model's classes {list(seg.info.class_names)}")
        return 2
    mine = _segment_files(seg, files[rank::world], stems[rank::world], args)
    parts = _gather(mine, world)
    if rank != 0:
        return 1 if any("error" in r for r in mine) else 0
    order = {str(f): i for i, f in enumerate(files)}
    results = sorted((r for part in parts for r in part), key=lambda r: order[r["input"]])
    summary = args.out / "summary.csv"
    written = write_batch_tables(args.out, results, seg.info, seg.name, args.report)
    failed = sum("error" in r for r in results) + len(input_errors)
    if args.json:
        from .main import print_json

        print_json({"model": seg.name, "device": str(seg.device), "world_size": world, "out": str(args.out),
                    "summary": str(summary), **written, "images": results, "input_errors": input_errors,
                    "segmented": len(results) - sum("error" in r for r in results), "failed": failed})
    else:
        done = [r for r in results if "error" not in r]
        for r in done:
            print(shown(f"{r['input']} -> {r['labels']} ({r['seconds']:.1f} s)"))
        print(f"segmented {len(done)} image(s) with {seg.name} on {seg.device}, {failed} failed; summary: {summary}")
    if getattr(args, "interrupted", False):
        _say_error(f"interrupted after {len(results)} of {len(files)} image(s); {summary} lists those done")
        return 130
    return 1 if failed else 0


# -- evaluate ----------------------------------------------------------------------------------------

def _print_metrics(result: dict[str, Any]) -> None:
    def pct(v: float | None) -> str:
        return "   n/a" if v is None else f"{100 * v:6.2f}"

    print(f"{'image':<40} {'acc %':>6} {'mIoU %':>6} {'paper IoU %':>11}")
    for r in result["per_image"]:
        print(f"{Path(r['image']).name:<40} {pct(r['pixel_accuracy'])} {pct(r['miou'])} {pct(r['iou_paper']):>11}")
    print(f"{'overall (summed confusion)':<40} {pct(result['pixel_accuracy'])} {pct(result['miou'])} "
          f"{pct(result['iou_paper']):>11}")
    print("per-class IoU %: " + ", ".join(f"{n} {pct(v).strip()}" for n, v in result["iou_per_class"].items()))
    for key in ("iou_paper", "miou"):
        print(f"note: {key} = {result['note'][key]}")


def _evaluate(args: argparse.Namespace) -> int:
    from ..images.datasets import find_samples
    from ..measure.evaluation import evaluate_samples

    # bad data or model: the command's one-line error (napari_csunet.cli.errors), exit code 2
    samples = find_samples(args.data, args.split, zero_is_class=args.zero_is_class)
    seg = _segmenter(args)
    result = evaluate_samples(seg, samples, skip_bad=True, tta=args.tta)
    for bad in result["failed"]:
        _say_error(bad["error"])
    split = args.split if (args.data / args.split).is_dir() else None
    result = {"model": seg.name, "data": str(args.data), "split": split, "device": str(seg.device),
              "images": len(samples), **result}
    if args.json:
        from .main import print_json

        print_json(result)
    else:
        _print_metrics(result)
    return 1 if result["failed"] else 0
