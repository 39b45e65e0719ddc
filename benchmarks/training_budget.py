"""Training throughput and quality of a recipe within a time budget: train, then score the test split.

    python benchmarks/training_budget.py --recipe super3 --budget-s 600 --preset csunet-tiny --weights none --json

Prints one JSON object: recipe, device, budget_s, steps, train_images_per_s, step_overhead (a
loop step, data loading included, over a bare forward+backward of one batch, timed interleaved in
the same process after training; ``run_step_overhead`` uses the run's mean step time instead) and ``metrics``, the test-split metrics (mIoU, per-class IoU and the paper's
micro-averaged IoU, ``iou_paper``). Training runs with ``time_budget_s``: the cosine decay
follows the clock and ends inside the budget however fast (or loaded) the machine is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from csunet_train.config import TrainConfig, load_recipe
from csunet_train.data import load_data
from csunet_train.job import run_job
from csunet_train.loop import build_optimizer, train_step
from csunet_train.losses import segmentation_loss
from csunet_train.sampling import CropDataset, prepare_image
from napari_csunet.engine.device import amp_dtype, pick_device
from napari_csunet.images.datasets import find_samples


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def overhead_timings(cfg: TrainConfig, model: torch.nn.Module, loader: torch.utils.data.DataLoader,
                     device: torch.device, reps: int = 8) -> dict[str, float]:
    """Fastest seconds of a loop step (next batch from the loader, copy, optimiser step, loss read),
    of a bare forward+backward and of a bare optimiser step on one fixed batch, interleaved. The
    minimum (as ``timeit`` advises) is the least disturbed by other work on a shared machine; the
    first round is a warm-up."""
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, [], 1.0)
    model.train()
    batches = iter(loader)
    x, y = (t.to(device) for t in next(batches))

    def loop_step() -> None:
        bx, by = (t.to(device, non_blocking=True) for t in next(batches))
        float(train_step(model, bx, by, optimizer, scaler, dtype, cfg.grad_clip))

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        segmentation_loss(logits, y).backward()

    def bare_step() -> None:
        train_step(model, x, y, optimizer, scaler, dtype, cfg.grad_clip)

    times: dict[str, list[float]] = {"loop": [], "fwd_bwd": [], "step": []}
    for _ in range(reps + 1):
        for key, fn in (("loop", loop_step), ("fwd_bwd", fwd_bwd), ("step", bare_step)):
            times[key].append(_timed(fn))
    best = {k: min(v[1:]) for k, v in times.items()}
    return {"interleaved_loop_step_s": best["loop"], "bare_forward_backward_s": best["fwd_bwd"],
            "bare_train_step_s": best["step"]}


def test_metrics(model_path: Path, data_dir: str, split: str, device: str) -> dict[str, Any]:
    """The ``csunet evaluate --json`` object: tiled inference of each test image, summed confusion."""
    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.measure.evaluation import evaluate_samples

    seg = Segmenter.from_file(model_path, device=device)
    samples = find_samples(data_dir, split)
    result = evaluate_samples(seg, samples)
    return {"model": seg.name, "data": str(data_dir), "split": split, "device": str(seg.device),
            "images": len(samples), **result}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", required=True, help="super1, super3, ... or a recipe file")
    p.add_argument("--budget-s", type=float, required=True, help="wall-clock budget for training")
    p.add_argument("--data-root", help="NASA's data (default ../shared/data/nasa)")
    p.add_argument("--preset", help="override the recipe's preset (e.g. csunet-tiny on a CPU)")
    p.add_argument("--weights", help="override the recipe's weights: none, or cnn=SRC,swin=SRC")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--max-steps", type=int, help="cap the steps (default: the recipe's steps)")
    p.add_argument("--num-workers", type=int, help="loader workers (default: the recipe's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--test-split", default="test")
    p.add_argument("--out", help="keep the trained model here (default: a temporary file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--verbose", action="store_true", help="training events on stderr")
    return p.parse_args(argv)


def _weights(text: str | None) -> dict[str, str | None] | None:
    if text is None:
        return None
    if text == "none":
        return {"cnn": None, "swin": None}
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {"cnn": pairs.get("cnn"), "swin": pairs.get("swin")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]  # other work on the machine skews every timing
    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out) if args.out else Path(tmp.name) / "model.safetensors"
    cfg = load_recipe(args.recipe, args.data_root, out=str(out), preset=args.preset, weights=_weights(args.weights),
                      batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every, steps=args.max_steps,
                      num_workers=args.num_workers, device=args.device)
    cfg.time_budget_s = 0.95 * args.budget_s - (time.perf_counter() - t0)  # the rest: last validation, save
    events: list[dict[str, Any]] = []

    def emit(event: dict[str, Any]) -> None:
        events.append(event)
        if args.verbose:
            print(json.dumps(event), file=sys.stderr, flush=True)

    done = run_job(cfg, emit)
    trained_s = time.perf_counter() - t0
    # a bare forward+backward of one batch of the same crops, same process, for the overhead ratio
    from napari_csunet.models.modelfile import load_model_file

    device = pick_device(cfg.device)
    data = load_data(cfg)
    prepared = [prepare_image(it, data.in_chans, cfg.crop, cfg.seed + i) for i, it in enumerate(data.train)]
    crops = CropDataset(prepared, cfg.crop, 10 * cfg.batch_size, cfg.aug_strength, cfg.class_balance, cfg.seed + 1)
    loader = torch.utils.data.DataLoader(crops, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda")
    after = overhead_timings(cfg, load_model_file(out, device)[0], loader, device)
    metrics = test_metrics(out, cfg.data_dir, args.test_split, str(device))
    loop_step_s = done["train_time_s"] / max(done["steps"], 1)
    started = next(e for e in events if e["event"] == "started")
    result = {
        "recipe": cfg.recipe, "preset": cfg.preset, "weights": cfg.weights, "device": started["device"],
        "budget_s": args.budget_s, "steps": done["steps"], "max_steps": cfg.steps, "end": done["reason"],
        "batch_size": cfg.batch_size, "crop": cfg.crop, "lr": cfg.lr, "num_workers": cfg.num_workers,
        "train_images": started["train_images"],
        "train_images_per_s": done["steps"] * cfg.batch_size / max(done["train_time_s"], 1e-9),
        "loop_step_s": loop_step_s, **after,
        "step_overhead": after["interleaved_loop_step_s"] / after["bare_forward_backward_s"],
        "step_overhead_vs_train_step": after["interleaved_loop_step_s"] / after["bare_train_step_s"],
        "run_step_overhead": loop_step_s / after["bare_forward_backward_s"],
        "train_wall_s": trained_s, "best_step": done["best_step"], "val_best_metrics": done["best_metrics"],
        "metrics": metrics,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]}, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
    else:
        print(f"{result['recipe']} on {result['device']}: {result['steps']} steps in {trained_s:.0f} s, "
              f"{result['train_images_per_s']:.2f} img/s, overhead x{result['step_overhead']:.2f}; test mIoU "
              f"{metrics['miou']:.4f}, paper IoU {metrics['iou_paper']:.4f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
