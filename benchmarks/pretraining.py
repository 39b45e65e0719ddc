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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VARIANTS = ("random", "pretrained", "adapted", "pretrained_enc01")


@dataclass(frozen=True)
class Protocol:
    """Images by stem: ``train`` are labelled, ``pool`` may be used unlabelled, ``test`` scores."""

    name: str
    root: str
    train_split: str | None  # NASA layout: the split folders; None: images/ + masks/
    test_split: str | None
    train: tuple[str, ...]
    test: tuple[str, ...]
    pool: tuple[str, ...]


def _stems(names) -> tuple[str, ...]:
    return tuple(Path(n).stem for n in names)


def protocols(data: Path, seed: int) -> dict[str, Protocol]:
    """The paper's EBC 4-shot and Super3 1-shot, and 4-shot on each labelled set that is there."""
    import numpy as np

    out: dict[str, Protocol] = {}

    def nasa_split(name: str, split: str) -> tuple[str, ...]:
        return tuple(sorted(p.stem for p in (data / name / split).glob("*.*")))

    if (data / "EBC2").is_dir():
        pool = nasa_split("EBC2", "train") + nasa_split("EBC2", "val")
        out["ebc2-4shot"] = Protocol("ebc2-4shot", "EBC2", "train", "test", nasa_split("EBC2", "train"),
                                     nasa_split("EBC2", "test"), pool)
    if (data / "Super1").is_dir():
        pool = nasa_split("Super1", "train") + nasa_split("Super1", "val")
        out["super3-1shot"] = Protocol("super3-1shot", "Super1", "train", "test", ("spot7_180d_3",),
                                       nasa_split("Super1", "test"), pool)
    for name, key in (("tbm-grains", "tbm-4shot"), ("tem-dislocation-loops", "tem-4shot"),
                      ("nanocomposite-agglomerates", "nanocomposite-4shot")):
        splits_file = data / name / "splits.json"
        if not splits_file.exists():
            continue
        splits = {k: _stems(v) for k, v in json.loads(splits_file.read_text()).items()}
        labelled = splits.get("train") or next(iter(splits.values()))
        rng = np.random.default_rng(seed)
        train = tuple(sorted(rng.choice(labelled, 4, replace=False).tolist()))
        every = sorted({s for v in splits.values() for s in v})
        test = splits.get("test") if "train" in splits else tuple(s for s in every if s not in train)
        pool = tuple(s for s in every if s not in set(test))
        out[key] = Protocol(key, name, None, None, train, tuple(test), pool)
    return out


def _samples(data: Path, proto: Protocol, which: str):
    from napari_csunet.datasets import find_samples

    names = getattr(proto, which)
    split = proto.train_split if which == "train" else proto.test_split
    if which == "pool" and proto.train_split:  # NASA layout: the pool spans the train and val folders
        found = [s for sp in ("train", "val") for s in find_samples(data / proto.root, sp)]
        return [s for s in found if s.image.stem in set(names)]
    return find_samples(data / proto.root, split, names=list(names))


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
    from napari_csunet.analysis import evaluate_samples
    from napari_csunet.inference import Segmenter

    proto_name, variant, args = task
    torch.set_num_threads(args["threads"])
    data = Path(args["data"])
    proto = protocols(data, args["seed"])[proto_name]
    t0 = time.perf_counter()
    tmp = Path(args["tmp"]) / f"{proto_name}-{variant}"
    tmp.mkdir(parents=True, exist_ok=True)
    train_samples = _samples(data, proto, "train")
    train = [labelled_image(*s.load(), name=s.image.stem) for s in train_samples]
    start = None if variant == "random" else args["pretrained"]
    adapt_s = 0.0
    if variant == "adapted":
        _adapt(args, _samples(data, proto, "pool"), tmp / "adapted.safetensors")
        start, adapt_s = str(tmp / "adapted.safetensors"), time.perf_counter() - t0
    done = _finetune(args, variant, start, tmp / "model.safetensors", train, train_samples[0].spec.names)
    seg = Segmenter.from_file(tmp / "model.safetensors", device=args["device"])
    metrics = evaluate_samples(seg, _samples(data, proto, "test"))
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
    from napari_csunet.model_catalog import resolve_model

    kind, path = resolve_model(args.pretrained)
    names = list(protocols(Path(args.data), args.seed))
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
