"""Inference benchmark: tiled throughput, tiling overhead, NASA's recipe, memory, seams, FLOP/s.

    nice -n 10 .venv/bin/python benchmarks/inference.py --json            # csunet-small, 2048^2
    .venv/bin/python benchmarks/inference.py --model csunet-r50-swint --size 4096 --json   # a GPU
    .venv/bin/python benchmarks/inference.py --memory-only 16384 --json   # engine memory at scale
    .venv/bin/python benchmarks/inference.py --mosaic 32768 --json        # a zarr larger than memory

Prints one JSON object. Every ratio is measured in the same run on the same device:

- ``mpx_per_s``: a real Super1 micrograph mirror-tiled to ``--size``^2, engine defaults (tile and
  batch from the image and device, overlap 64 px; CUDA and CPUs with bf16 instructions: bf16
  autocast; CUDA and CPUs: channels-last, `--nchw` for NCHW), the fastest of ``--repeats`` (``first_seconds``: the first run,
  which faults its memory in; later runs reuse the heap :mod:`napari_csunet.engine.allocator` keeps); ``--compile``
  compiles the tiled runs only (compare its ``mpx_per_s`` with an eager run's);
- ``tiling_overhead``: tiled time / raw time, raw = the bare forward pass over the same pixels cut
  into non-overlapping 512^2 tiles in batches (1.0 = tiling costs nothing);
- ``vs_nasa_recipe``: our throughput / the throughput of NASA's recipe (512 tiles, half-tile stride);
- ``peak_rss_mb``: the process's peak resident memory after the large image (ru_maxrss);
- ``seam_agreement``: share of pixels where a 1024^2 image predicted whole (one tile) and tiled
  (tile 256) agree, with the starter model (else csunet-tiny trained here ``--train-steps``);
- ``flop_efficiency``: model FLOP/s achieved while tiling (torch.utils.flop_counter on a 512^2
  tile, scaled by pixels: convolutions and windowed attention cost the same per pixel) over the
  matrix-multiply FLOP/s measured here in the engine's precision (``flop_efficiency_vs_fp32``:
  over the float32 rate, which is what a bf16 engine is compared with when it is faster).

``--mosaic SIZE`` fabricates a SIZE^2 uint8 zarr (the micrograph mirror-tiled, chunk by chunk) and
segments it with ``Segmenter.predict_to`` into a chunked zarr of labels, reporting ``peak_rss_mb``
and ``mpx_per_s``; the model is a 1x1 convolution (engine cost only) unless ``--model`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_csunet.engine import allocator
from napari_csunet.engine.predictor import Segmenter, pick_device
from napari_csunet.engine.tiling import CONTEXT_PX
from napari_csunet.images.datasets import SUPER_CLASSES, find_samples
from napari_csunet.images.reading import image_stats, standardize, to_model_channels
from napari_csunet.models import build_model, count_parameters
from napari_csunet.models.catalog import STARTER_DIR
from napari_csunet.models.modelfile import ModelInfo
from napari_csunet.models.registry import get_preset

ROOT = Path(__file__).resolve().parents[1]
SHARED_SUPER1 = ROOT.parent / "shared" / "data" / "nasa" / "Super1"
STARTER = STARTER_DIR / "starter-superalloy.safetensors"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def super1_samples():
    """Real Super1 test micrographs with masks: the shared NASA data, else the repository's copy."""
    if (SHARED_SUPER1 / "test").is_dir():
        return find_samples(SHARED_SUPER1, "test")
    return find_samples(ROOT / "tests" / "data" / "super1_test", "test")


def mosaic(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size grey image (and its labels): one real Super1 test micrograph, mirror-tiled.

    One micrograph, not several: images differ strongly in brightness and each is normalised as a
    whole, so a patchwork of different micrographs would be out of distribution for any model.
    """
    image, labels = super1_samples()[0].load()
    grey = to_model_channels(image, 1)[0].astype(np.uint8)
    pad = ((0, max(0, size - grey.shape[0])), (0, max(0, size - grey.shape[1])))
    return (np.ascontiguousarray(np.pad(grey, pad, mode="symmetric")[:size, :size]),
            np.pad(labels, pad, mode="symmetric")[:size, :size])


def model_and_info(spec: str) -> tuple[torch.nn.Module, ModelInfo]:
    if Path(spec).suffix == ".safetensors":
        from napari_csunet.models.modelfile import load_model_file

        return load_model_file(spec)
    config = get_preset(spec).config
    return build_model(config), ModelInfo(config, list(SUPER_CLASSES.names), preset=spec, name=spec)


def matmul_flops(device: torch.device, dtype: torch.dtype, seconds: float = 1.5) -> float:
    """Dense matrix-multiply FLOP/s of this device in ``dtype`` (the practical peak)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    reps, elapsed = 0, 0.0
    sync(device)
    t = time.perf_counter()
    while elapsed < seconds:
        for _ in range(4):
            torch.mm(a, b)
        reps += 4
        sync(device)
        elapsed = time.perf_counter() - t
    return 2 * n**3 * reps / elapsed


def model_flops(model: torch.nn.Module, in_chans: int, device: torch.device, tile: int = 512) -> int:
    """FLOPs of one ``tile``^2 forward pass (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_chans, tile, tile, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def raw_forward(seg: Segmenter, image: np.ndarray, tile: int = 512, batch: int = 4,
                model: torch.nn.Module | None = None) -> tuple[Any, int]:
    """(a function running the bare ``model`` (default ``seg.model``) over ``image`` in tiles, tiles)."""
    model = seg.model if model is None else model
    x = standardize(to_model_channels(image, seg.in_chans), image_stats(to_model_channels(image, seg.in_chans)))
    h, w = x.shape[1:]
    tiles = [x[:, i:i + tile, j:j + tile] for i in range(0, h, tile) for j in range(0, w, tile)]
    batches = [torch.from_numpy(np.stack(tiles[b:b + batch])) for b in range(0, len(tiles), batch)]
    amp = torch.autocast(seg.device.type, dtype=seg.amp_dtype) if seg.amp_dtype else torch.autocast("cpu", enabled=False)

    def run() -> None:
        with torch.inference_mode(), amp:
            for batch in batches:
                xb = batch.to(seg.device)
                if seg.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                model(xb).float().softmax(1)

    return run, len(tiles)


def trained_model(device: str, steps: int) -> tuple[Path, str]:
    """The starter model if shipped, else csunet-tiny trained here by the training backend."""
    if STARTER.exists():
        return STARTER, f"starter model {STARTER.name}"
    from csunet_train.config import TrainConfig
    from csunet_train.events import silent
    from csunet_train.job import run_job

    out = Path(tempfile.mkdtemp()) / "seam-model.safetensors"
    if (SHARED_SUPER1 / "train").is_dir():
        data, split, names = SHARED_SUPER1, "train", ["spot3_0d_3"]
    else:
        data, split, names = ROOT / "tests" / "data" / "super1_test", "test", ["spot2_0d_4"]
    cfg = TrainConfig(out=str(out), preset="csunet-tiny", data_dir=str(data), split=split, names=names,
                      steps=steps, eval_every=steps, device=device, seed=0)
    done = run_job(cfg, silent)
    return out, (f"csunet-tiny trained here for {done['steps']} steps on {data.name}/{split}/{names[0]} "
                 f"(no starter model shipped); {done['train_time_s']:.0f} s")


def seam_check(device: str, steps: int) -> dict[str, Any]:
    """Tiles of 256 (16 tiles, the most seams a 1024^2 image can have) at the default overlap in
    pixels, half of it and none, against one whole 1024^2 tile."""
    path, how = trained_model(device, steps)
    image, labels = mosaic(1024)
    whole = Segmenter.from_file(path, device=device, tile=1024, batch_size=1).predict(image).labels
    result = {"seam_model": how, "seam_model_accuracy": float((whole == labels)[labels > 0].mean()),
              "seam_overlap_px": CONTEXT_PX}
    for key, px in (("seam_agreement", CONTEXT_PX), ("seam_agreement_half_overlap", CONTEXT_PX // 2),
                    ("seam_agreement_no_overlap", 0)):
        tiled = Segmenter.from_file(path, device=device, tile=256, overlap_px=px, batch_size=4).predict(image).labels
        result[key] = float((tiled == whole).mean())
    return result


class PixelNet(torch.nn.Module):
    """A 1x1 convolution with CS-UNet's size rule: the engine's own cost, the network's left out."""

    size_multiple = 256

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def memory_only(size: int) -> dict[str, Any]:
    """Engine memory on a huge image held in memory (input and labels arrays) with a 1x1-conv model."""
    info = ModelInfo(get_preset("csunet-tiny").config, list(SUPER_CLASSES.names), name="1x1-conv")
    seg = Segmenter(PixelNet(), info, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    before = rss_mb()
    t, pred = timed(lambda: seg.predict(image), seg.device)
    layout, _ = seg.plan(image.shape)
    return {"mode": "memory-only", "model": "1x1 conv (engine cost only)", "image_px": [size, size],
            "image_mb": image.nbytes / 2**20, "labels_mb": pred.labels.nbytes / 2**20,
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(rss_mb(), 1), "seconds": round(t, 1),
            "mpx_per_s": size * size / 1e6 / t, "tile": list(layout.tile), "tiles": layout.num_tiles}


def mosaic_zarr(path: Path, size: int) -> Any:
    """A size^2 uint8 zarr of the Super1 micrograph mirror-tiled, written chunk by chunk (its
    1024^2 period is one chunk, so no whole-image array is ever made)."""
    import zarr

    period, _ = mosaic(1024)
    arr = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(1024, 1024), dtype="uint8")
    for y in range(0, size, 1024):
        for x in range(0, size, 1024):
            arr[y:y + 1024, x:x + 1024] = period[:min(1024, size - y), :min(1024, size - x)]
    return arr


def mosaic_run(args: argparse.Namespace) -> dict[str, Any]:
    """Segment a fabricated zarr larger than this process should hold, into a chunked zarr."""
    from napari_csunet.engine.mosaic import segment_mosaic

    device = pick_device(args.device)
    if args.model_given:
        model, info = model_and_info(args.model)
    else:
        model, info = PixelNet(), ModelInfo(get_preset("csunet-tiny").config, list(SUPER_CLASSES.names), name="1x1-conv")
    seg = Segmenter(model, info, device=device, tile=args.tile, overlap=args.overlap, batch_size=args.batch,
                    amp=not args.no_amp,
                    channels_last=False if args.nchw else None)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        mosaic_zarr(Path(tmp) / "mosaic.zarr", args.mosaic)
        write_s = time.perf_counter() - t0
        layout, batch = seg.plan((args.mosaic, args.mosaic))
        rss_before = rss_mb()
        t, summary = timed(lambda: segment_mosaic(seg, Path(tmp) / "mosaic.zarr", Path(tmp) / "labels.zarr"), device)
        disk = sum(f.stat().st_size for f in (Path(tmp) / "labels.zarr").rglob("*") if f.is_file())
    mpx = args.mosaic**2 / 1e6
    return {"mode": "mosaic", "model": info.name if args.model_given else "1x1 conv (engine cost only)",
            "device": str(device), "image_px": [args.mosaic] * 2, "input": "zarr uint8, chunks 1024^2",
            "output": "zarr uint8 labels, chunks 1024^2", "tile": list(layout.tile), "batch": batch,
            "tiles": layout.num_tiles, "tiled_work_ratio": layout.num_tiles * layout.tile[0] * layout.tile[1] / mpx / 1e6,
            "seconds": round(t, 1), "mpx_per_s": mpx / t, "peak_rss_mb": round(rss_mb(), 1),
            "rss_before_mb": round(rss_before, 1), "labels_on_disk_mb": round(disk / 2**20, 1),
            "fabricate_input_s": round(write_s, 1), "area_fractions": summary["area_fractions"],
            "load_average_1min": round(os.getloadavg()[0], 2)}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = pick_device(args.device)
    model, info = model_and_info(args.model)
    seg = Segmenter(model, info, device=device, tile=args.tile, overlap=args.overlap, batch_size=args.batch,
                    amp=not args.no_amp,
                    channels_last=False if args.nchw else None)
    image, _ = mosaic(args.size)
    layout, batch = seg.plan(image.shape)
    compile_s = None
    if args.compile:  # compiled for the one tile shape the defaults chose (the references stay eager)
        seg.model = torch.compile(seg.model)
        compile_s, _ = timed(lambda: seg.predict(image[:layout.tile[0], :layout.tile[1]]), device)
    else:
        seg.predict(image[:512, :512])  # warm-up: allocator, cuDNN autotuning, lazy imports
    rss_before = rss_mb()
    first, _ = timed(lambda: seg.predict(image), device)
    peak = rss_mb()
    mpx = image.size / 1e6
    run_raw, raw_tiles = raw_forward(seg, image, batch=args.raw_batch, model=model)
    nasa = Segmenter(model, info, device=device, tile=512, overlap=0.5, batch_size=args.raw_batch, amp=not args.no_amp,
                    channels_last=False if args.nchw else None)
    variants = {"tiled": lambda: seg.predict(image), "raw": run_raw, "nasa": lambda: nasa.predict(image)}
    times: dict[str, list[float]] = {"tiled": [first], "raw": [], "nasa": []}
    for r in range(args.repeats):  # interleaved rounds, fastest of each: fair on a machine shared with others
        for key, fn in variants.items():
            if not (key == "tiled" and r == 0):
                times[key].append(timed(fn, device)[0])
    t_tiled, t_raw, t_nasa = (min(times[k]) for k in ("tiled", "raw", "nasa"))
    flops_512 = model_flops(model, seg.in_chans, device)
    flops_px = flops_512 / 512**2
    mm_dtype = seg.amp_dtype or torch.float32
    mm = matmul_flops(device, mm_dtype)
    mm32 = matmul_flops(device, torch.float32) if mm_dtype != torch.float32 else None
    tiles, (th, tw) = layout.num_tiles, layout.tile
    achieved = flops_px * th * tw * tiles / t_tiled
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "device_type": device.type, "precision": str(mm_dtype).replace("torch.", ""),
        "channels_last": seg.channels_last, "compiled": bool(args.compile), "compile_s": compile_s,
        "model": info.name or args.model, "params": count_parameters(model),
        "image_px": [args.size, args.size], "tile": [th, tw], "overlap_px": seg.overlap_px if seg.overlap is None
        else round(seg.overlap * th), "batch": batch, "tiles": tiles, "seconds": round(t_tiled, 2),
        "repeats": args.repeats, "mpx_per_s": mpx / t_tiled, "first_seconds": round(first, 2),
        "first_mpx_per_s": mpx / first, "heap_linger_s": allocator.LINGER_S if allocator.heap_reuse_available() else None,
        "raw_mpx_per_s": mpx / t_raw, "raw_tiles_512": raw_tiles, "raw_batch": args.raw_batch,
        "tiling_overhead": t_tiled / t_raw, "tiled_work_ratio": tiles * th * tw / image.size,
        "nasa_recipe_mpx_per_s": mpx / t_nasa, "nasa_recipe_tiles": nasa.num_tiles(image.shape),
        "vs_nasa_recipe": t_nasa / t_tiled,
        "peak_rss_mb": round(peak, 1), "rss_before_large_image_mb": round(rss_before, 1),
        "image_mb": round(image.nbytes / 2**20, 1),
        "gflop_per_mpx": flops_px * 1e6 / 1e9, "achieved_gflop_per_s": achieved / 1e9,
        "matmul_gflop_per_s": mm / 1e9, "flop_efficiency": achieved / mm,
        "flop_efficiency_vs_fp32": achieved / mm32 if mm32 else achieved / mm,
        "raw_flop_efficiency": flops_512 * raw_tiles / t_raw / mm,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device.type == "cuda":
        result["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if not args.no_seam:
        result.update(seam_check(str(device), args.train_steps))
    result["notes"] = {
        "tiling_overhead": "tiled time / bare forward time over the same pixels in non-overlapping 512^2 tiles (1.0 = free)",
        "tiled_work_ratio": "pixels of all tiles / pixels of the image (what the tile layout alone costs)",
        "vs_nasa_recipe": "our throughput / NASA's recipe (512 tiles, stride 256) on the same image and model",
        "flop_efficiency": "model FLOPs (torch.utils.flop_counter, 2 per multiply-add) per second while tiling / "
                           f"measured {result['precision']} matmul FLOP/s",
        "flop_efficiency_vs_fp32": "the same model FLOP/s over the measured float32 matmul FLOP/s",
        "first_seconds": "the first prediction of the large image (its memory faulted in); seconds: the fastest "
                         "of the repeats, which reuse the heap kept after the previous prediction (napari_csunet.engine.allocator)",
        "seam_agreement": f"share of pixels where tile 256 (overlap {CONTEXT_PX} px, blended) equals one 1024^2 tile",
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="csunet-small", help="preset (random weights) or model file")
    p.add_argument("--size", type=int, default=2048, help="side of the large image (default 2048)")
    p.add_argument("--tile", type=int, help="tile side (default: chosen from the image and device)")
    p.add_argument("--overlap", type=float, help="overlap as a fraction of the tile (default: 64 px)")
    p.add_argument("--batch", type=int, help="tiles per batch (default: sized to memory)")
    p.add_argument("--raw-batch", type=int, default=4, help="batch of the bare-forward and NASA references")
    p.add_argument("--no-amp", action="store_true", help="float32 (default: the engine's mixed precision)")
    p.add_argument("--nchw", action="store_true", help="NCHW tensors (default: the engine's choice, NHWC on CPU/CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first (time reported apart)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=2, help="rounds of timing each variant; the fastest counts")
    p.add_argument("--train-steps", type=int, default=150, help="steps for the seam model when none is shipped")
    p.add_argument("--no-seam", action="store_true", help="skip the seam check (and its training)")
    p.add_argument("--memory-only", type=int, metavar="SIZE", help="only measure engine memory on a SIZE^2 image")
    p.add_argument("--mosaic", type=int, metavar="SIZE", help="segment a fabricated SIZE^2 zarr into a zarr")
    p.add_argument("--tmp", help="folder for the --mosaic zarrs (default: the system's temporary folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the default output too)")
    args = p.parse_args(argv)
    args.model_given = any(a == "--model" or a.startswith("--model=") for a in (argv or sys.argv[1:]))
    warnings.simplefilter("ignore", UserWarning)
    result = (memory_only(args.memory_only) if args.memory_only else mosaic_run(args) if args.mosaic
              else benchmark(args))
    json.dump(result, sys.stdout, indent=2 if not args.json else None)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
