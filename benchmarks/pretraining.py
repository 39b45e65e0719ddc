"""Does microscopy pretraining help? Few-shot fine-tunes from random weights vs a pretrained model.

    python scripts/pack_gpu_data.py labelled .gpu/lab          # NASA + labelled sets, compact
    python benchmarks/pretraining.py --data .gpu/lab --pretrained micro-tiny --json

For each protocol, the same fine-tune (steps, batch, crop, learning rate, seed) runs from (a) random
weights (``csunet-tiny``), (b) the pretrained model, (c) the pretrained model first adapted by
masked image modelling on the protocol's unlabelled non-test images, and (d) the pretrained model
with encoders at 0.1x the learning rate (the GUI's old default for pretrained encoders). Every run
keeps its last model (no checkpoint is chosen on test data) and is scored on the protocol's test
images with the product's own predictor. Prints one JSON object: per protocol ``miou_random``,
``miou_pretrained``, ``miou_adapted``, ``iou_paper_*``, ``gain`` (pretrained - random), plus
``steps``, ``seconds`` and ``device``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from protocols import protocols, samples

VARIANTS = ("random", "pretrained", "adapted", "pretrained_enc01")


def _finetune(args: dict[str, Any], variant: str, start: str | None, out: Path, train, class_names) -> dict[str, Any]:
    from csunet_train.config import TrainConfig
    from csunet_train.job import run_job

    cfg = TrainConfig(out=str(out), mode="finetune" if start else "train", model=start,
                      preset=None if start else "csunet-tiny", class_names=list(class_names), steps=args["steps"],
                      lr=args["lr"], crop=256, batch_size=args["batch_size"], eval_every=args["steps"],
                      encoder_lr_mult=0.1 if variant == "pretrained_enc01" else 1.0, device=args["device"],
                      seed=args["seed"], aug_strength=0.5, weights={"cnn": None, "swin": None})
    # validation on the training images, at the start and the end only: the last model is kept
    return run_job(cfg, lambda e: None, train=train, val=train)


def _adapt(args: dict[str, Any], pool, out: Path) -> dict[str, Any]:
    from csunet_train.pretrain import run_pretrain
    from csunet_train.pretrain_config import PretrainConfig

    cfg = PretrainConfig(out=str(out), images=[str(s.image) for s in pool], model=args["pretrained"],
                         steps=args["adapt_steps"], batch_size=16, lr=5e-4, val_images=0,
                         eval_every=args["adapt_steps"], device=args["device"], seed=args["seed"])
    return run_pretrain(cfg, lambda e: None)


def run_one(task: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """One protocol x variant: (adapt,) fine-tune, score on test. Runs in a worker process."""
    import torch

    from csunet_train.data import labelled_image
    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.measure.evaluation import evaluate_samples

    proto_name, variant, args = task
    torch.set_num_threads(args["threads"])
    data = Path(args["data"])
    proto = protocols([data], args["seed"])[proto_name]
    t0 = time.perf_counter()
    tmp = Path(args["tmp"]) / f"{proto_name}-{variant}"
    tmp.mkdir(parents=True, exist_ok=True)
    train_samples = samples(proto, "train")
    train = [labelled_image(*s.load(), name=s.image.stem) for s in train_samples]
    start = None if variant == "random" else args["pretrained"]
    adapt_s = 0.0
    if variant == "adapted":
        _adapt(args, samples(proto, "pool"), tmp / "adapted.safetensors")
        start, adapt_s = str(tmp / "adapted.safetensors"), time.perf_counter() - t0
    done = _finetune(args, variant, start, tmp / "model.safetensors", train, train_samples[0].spec.names)
    seg = Segmenter.from_file(tmp / "model.safetensors", device=args["device"])
    metrics = evaluate_samples(seg, samples(proto, "test"))
    return {"protocol": proto_name, "variant": variant, "steps": done["steps"], "seconds": time.perf_counter() - t0,
            "adapt_seconds": adapt_s, "train_seconds": done["train_time_s"], "device": str(seg.device),
            "miou": metrics["miou"], "iou_paper": metrics["iou_paper"], "iou_per_class": metrics.get("iou_per_class"),
            "train_images": list(proto.train), "test_images": len(proto.test), "pool_images": len(proto.pool)}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per protocol: the keys the issue asks for; overall: the mean gain."""
    by: dict[str, dict[str, Any]] = {}
    for r in results:
        row = by.setdefault(r["protocol"], {"steps": r["steps"], "device": r["device"], "seconds": {}})
        row[f"miou_{r['variant']}"] = r["miou"]
        row[f"iou_paper_{r['variant']}"] = r["iou_paper"]
        row["seconds"][r["variant"]] = round(r["seconds"], 1)
    for row in by.values():
        if "miou_random" in row and "miou_pretrained" in row:
            row["gain"] = row["miou_pretrained"] - row["miou_random"]
        if "miou_random" in row and "miou_adapted" in row:
            row["gain_adapted"] = row["miou_adapted"] - row["miou_random"]
    gains = [row["gain"] for row in by.values() if "gain" in row]
    return {"protocols": by, "mean_gain": sum(gains) / len(gains) if gains else None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with EBC2/ and Super1/ (NASA layout) and labelled sets")
    p.add_argument("--pretrained", default="micro-tiny", help="pretrained model file or name")
    p.add_argument("--protocols", help="comma-separated subset (default: every protocol whose data is there)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--adapt-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (worker processes)")
    p.add_argument("--results", help="also append each finished run as a JSON line to this file")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    from napari_csunet.models.catalog import resolve_model

    kind, path = resolve_model(args.pretrained)
    names = list(protocols([Path(args.data)], args.seed))
    if args.protocols:
        names = [n for n in args.protocols.split(",") if n in names]
    tmp = tempfile.TemporaryDirectory()
    shared = {"data": args.data, "pretrained": str(path or args.pretrained), "steps": args.steps, "lr": args.lr,
              "adapt_steps": args.adapt_steps, "batch_size": args.batch_size, "seed": args.seed,
              "device": args.device, "tmp": tmp.name, "threads": max(1, (os.cpu_count() or 1) // args.jobs)}
    tasks = [(n, v, shared) for v in args.variants.split(",") for n in names]
    results: list[dict[str, Any]] = []
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        for result in pool.map(run_one, tasks):
            results.append(result)
            print(f"{result['protocol']} {result['variant']}: mIoU {result['miou']:.4f} ({result['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
            if args.results:
                with open(args.results, "a") as fh:
                    fh.write(json.dumps(result) + "\n")
    summary = summarise(results) | {"pretrained": shared["pretrained"], "steps": args.steps,
                                    "adapt_steps": args.adapt_steps, "lr": args.lr, "batch_size": args.batch_size,
                                    "wall_s": time.perf_counter() - t0, "runs": results}
    print(json.dumps(summary, default=str) if args.json else json.dumps(summary, indent=1, default=str))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
