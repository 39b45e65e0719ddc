"""A new material in a few labelled images: today's fine-tuning recipe against a new one, at an
equal CPU budget per run.

    OMP_NUM_THREADS=1 python benchmarks/fewshot.py --json --budget-s 150 --seeds 0,1,2 \\
        --recipes today,defaults --results out/fewshot.jsonl --resume
    python benchmarks/fewshot.py --json --data DIR --shots 4 --recipes today,defaults   # any labelled set

Protocols (``benchmarks/protocols.py``): EBC2 4-shot, Super1 1-shot (spot7_180d_3) and 4-shot on
each set of ``../shared/data/labelled``; the training images of a set are a seeded choice, the
test images are its test split. Every run is ``csunet finetune --model micro-tiny`` on the
protocol's training images, as a new user would start, with one recipe's settings; the images of
the set that are neither training nor test images are given as ``--unlabelled`` (a user usually
has them). The budget is the run's own CPU seconds (``budget_clock: cpu``, one thread), so runs
that share the machine with other work still get the same computation; the learning-rate
schedule follows that clock. Each model is scored on the test images with the product's predictor.

Recipes: ``today`` is the recipe before issue 20, written out; ``defaults`` is whatever
``TrainConfig`` defaults to now; ``--variant NAME:key=value,...`` adds today's recipe with changes
(for choosing). Prints one JSON object: per run ``miou``, ``iou_per_class``, ``min_class_iou``,
``train_class_share``, ``seconds``, ``steps`` (with ``--tta-eval`` also ``miou_tta``: the same model
scored with test-time augmentation); per protocol and recipe the mean over seeds; and a
``summary`` with each recipe's mean gain over ``today``, its spread over seeds, and the classes with
at least 0.5 % of the training pixels that stay below IoU 0.20.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from protocols import protocols, samples, set_protocol

HERE = Path(__file__).resolve().parent
DEFAULT_ROOTS = (HERE.parent.parent / "shared" / "data" / "nasa", HERE.parent.parent / "shared" / "data" / "labelled")

#: the recipe before issue 20 (TrainConfig's defaults then), so "today" keeps its meaning when they change
TODAY: dict[str, Any] = {
    "lr": 5e-4, "crop": 256, "batch_size": 4, "aug_strength": 0.5, "encoder_lr_mult": 0.1, "class_balance": 0.5,
    "val_fraction": 0.2, "holdout": "strip", "eval_every": 50, "weight_decay": 1e-4, "balanced_ce": False,
    "semi_weight": 0.0, "new_head_lr": 5e-4, "new_head_encoder_lr_mult": 0.1, "new_head_val_fraction": 0.2,
}
#: a rare class: at least this share of the training pixels must reach ``MIN_CLASS_IOU``
RARE_SHARE, MIN_CLASS_IOU = 0.005, 0.20
STEPS_CAP = 100_000  # the budget ends a run, not the steps


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` -> (NAME, today's recipe with those changes)."""
    name, _, changes = text.partition(":")
    recipe = dict(TODAY)
    for part in filter(None, changes.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected key=value, got {part!r}")
        recipe[key] = _value(value)
    return name, recipe


def class_share(train) -> dict[str, float]:
    """Each class's share of the labelled training pixels."""
    import numpy as np

    counts: dict[int, int] = {}
    for item in train:
        values, n = np.unique(item.labels[item.labels > 0], return_counts=True)
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + c
    total = max(sum(counts.values()), 1)
    return {str(k): c / total for k, c in sorted(counts.items())}


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """One protocol x recipe x seed: fine-tune within the budget, score the test images (worker)."""
    import torch

    from csunet_train.config import TrainConfig
    from csunet_train.data import labelled_image
    from csunet_train.job import run_job
    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.measure.evaluation import evaluate_samples

    torch.set_num_threads(task["threads"])
    proto = task["protocol"]
    recipe = dict(task["recipe"])
    known = set(TrainConfig.__dataclass_fields__)
    ignored = {k: v for k, v in recipe.items() if k not in known}  # settings this version does not have
    recipe = {k: v for k, v in recipe.items() if k in known}
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    out = Path(task["tmp"]) / f"{proto.name}-{task['recipe_name']}-{task['seed']}.safetensors"
    train_samples = samples(proto, "train")
    train = [labelled_image(*s.load(), name=s.image.stem) for s in train_samples]
    unlabelled = [str(s.image) for s in samples(proto, "unlabelled")] if task["use_unlabelled"] else []
    cfg = TrainConfig(out=str(out), mode="finetune", model=task["start"], class_names=list(train_samples[0].spec.names),
                      steps=STEPS_CAP, time_budget_s=task["budget_s"], budget_clock="cpu", seed=task["seed"],
                      device=task["device"], threads=task["threads"], unlabelled=unlabelled, **recipe)
    events: list[dict[str, Any]] = []
    done = run_job(cfg, events.append, train=train)
    train_cpu = time.process_time() - cpu0
    seg = Segmenter.from_file(out, device=task["device"])
    metrics = evaluate_samples(seg, samples(proto, "test"))
    names = list(metrics["class_names"])
    per_class = metrics["iou_per_class"]
    share = {names[int(k) - 1]: v for k, v in class_share(train).items() if int(k) <= len(names)}
    present = [v for v in per_class.values() if v is not None]
    with_tta = {}
    if task["tta_eval"]:  # the same model, its predictions averaged over flips (the Segment tab's TTA)
        tta = evaluate_samples(seg, samples(proto, "test"), tta=True)
        kept = [v for v in tta["iou_per_class"].values() if v is not None]
        with_tta = {"miou_tta": tta["miou"], "iou_per_class_tta": tta["iou_per_class"],
                    "min_class_iou_tta": min(kept, default=None)}
    started = next((e for e in events if e.get("event") == "started"), {})
    return {
        "protocol": proto.name, "recipe": task["recipe_name"], "seed": task["seed"], "miou": metrics["miou"],
        "iou_paper": metrics.get("iou_paper"), "iou_per_class": per_class, "min_class_iou": min(present, default=None),
        "train_class_share": share, "steps": done["steps"], "end": done["reason"], "best_step": done["best_step"],
        "budget_s": task["budget_s"], "train_cpu_s": train_cpu, "seconds": time.perf_counter() - t0,
        "train_images": list(proto.train), "test_images": len(proto.test),
        "unlabelled_images": started.get("unlabelled_images", 0), "recipe_settings": task["recipe"], "ignored_settings": ignored,
        "warnings": [e["message"] for e in events if e.get("event") == "warning"], **with_tta,
    }


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(runs: list[dict[str, Any]], baseline: str = "today") -> dict[str, Any]:
    """Means over seeds per protocol and recipe; each recipe's gain over ``baseline`` (paired by
    protocol and seed) and its spread over seeds; rare classes left below the bar."""
    by: dict[str, dict[str, Any]] = {}
    for r in runs:
        row = by.setdefault(r["protocol"], {}).setdefault(r["recipe"], {"miou": [], "steps": [], "classes": {}})
        row["miou"].append(r["miou"])
        row["steps"].append(r["steps"])
        for c, v in r["iou_per_class"].items():
            row["classes"].setdefault(c, []).append(v)
    table = {p: {name: {"miou": _mean(row["miou"]), "seeds": len(row["miou"]), "steps": _mean(row["steps"]),
                        "iou_per_class": {c: _mean([x for x in v if x is not None]) for c, v in row["classes"].items()}}
                 for name, row in recipes.items()} for p, recipes in by.items()}
    base = {(r["protocol"], r["seed"]): r for r in runs if r["recipe"] == baseline}
    gains: dict[str, Any] = {}
    for name in sorted({r["recipe"] for r in runs} - {baseline}):
        paired = [(r, base[(r["protocol"], r["seed"])]) for r in runs
                  if r["recipe"] == name and (r["protocol"], r["seed"]) in base]
        if not paired:
            continue
        per_seed: dict[int, list[float]] = {}
        for r, b in paired:
            per_seed.setdefault(r["seed"], []).append(r["miou"] - b["miou"])
        seed_means = [statistics.fmean(v) for v in per_seed.values()]
        gains[name] = {"mean_gain": statistics.fmean(r["miou"] - b["miou"] for r, b in paired), "runs": len(paired),
                       "gain_per_seed": {str(s): statistics.fmean(v) for s, v in sorted(per_seed.items())},
                       "seed_spread": statistics.stdev(seed_means) if len(seed_means) > 1 else None}
    below = [{"protocol": r["protocol"], "recipe": r["recipe"], "seed": r["seed"], "class": c, "iou": v,
              "train_share": r["train_class_share"].get(c)}
             for r in runs for c, v in r["iou_per_class"].items()
             if (r["train_class_share"].get(c) or 0) >= RARE_SHARE and (v is None or v < MIN_CLASS_IOU)]
    tta = {}  # test-time augmentation at evaluation, paired on the same trained model
    for name in sorted({r["recipe"] for r in runs if "miou_tta" in r}):
        diffs = [r["miou_tta"] - r["miou"] for r in runs if r["recipe"] == name and "miou_tta" in r]
        tta[name] = {"mean_gain": statistics.fmean(diffs), "runs": len(diffs), "min": min(diffs), "max": max(diffs)}
    return {"protocols": table, "gain_over_" + baseline: gains, "tta_gain": tta, "classes_below": below,
            "bar": {"train_share": RARE_SHARE, "min_iou": MIN_CLASS_IOU}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", action="append", help="folders holding EBC2/, Super1/ and the labelled sets "
                   "(repeatable; default ../shared/data/nasa and ../shared/data/labelled)")
    p.add_argument("--data", help="one labelled set instead (NASA layout, or images/ + masks/ [+ splits.json])")
    p.add_argument("--shots", type=int, default=4, help="labelled training images with --data")
    p.add_argument("--protocols", help="comma-separated subset of the standard protocols")
    p.add_argument("--recipes", default="today,defaults", help="today, defaults and/or --variant names")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                   help="today's recipe with these job settings changed (e.g. lr1e3:lr=0.001)")
    p.add_argument("--start", default="micro-tiny", help="the model to fine-tune (name or file)")
    p.add_argument("--budget-s", type=float, default=300.0, help="CPU seconds of training per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--no-unlabelled", action="store_true", help="do not give the set's other images")
    p.add_argument("--tta-eval", action="store_true", help="also score each model with test-time augmentation "
                   "(miou_tta; summary tta_gain)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="threads per run (the budget counts all of them)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (worker processes)")
    p.add_argument("--results", help="append each finished run to this JSON-lines file")
    p.add_argument("--resume", action="store_true", help="skip runs already in --results")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from napari_csunet.models.catalog import resolve_model

    t0 = time.perf_counter()
    _, start = resolve_model(args.start)
    variants = dict(parse_variant(v) for v in args.variant)
    recipes: dict[str, dict[str, Any]] = {"today": dict(TODAY), "defaults": {}, **variants}
    chosen = args.recipes.split(",")
    unknown = [r for r in chosen if r not in recipes]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}: use today, defaults or a --variant name")
    seeds = [int(s) for s in args.seeds.split(",")]
    done: list[dict[str, Any]] = []
    if args.resume and args.results and Path(args.results).exists():
        done = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    finished = {(r["protocol"], r["recipe"], r["seed"]) for r in done}
    tmp = tempfile.TemporaryDirectory()
    tasks = []
    for seed in seeds:
        if args.data:
            found = {"data": set_protocol(Path(args.data), args.shots, seed)}
        else:
            found = protocols(args.data_root or DEFAULT_ROOTS, seed)
        names = args.protocols.split(",") if args.protocols else list(found)
        for name in names:
            if name not in found:
                raise SystemExit(f"no protocol {name!r} in the data (found {sorted(found)})")
            for recipe in chosen:
                if (found[name].name, recipe, seed) in finished:
                    continue
                tasks.append({"protocol": found[name], "recipe_name": recipe, "recipe": recipes[recipe], "seed": seed,
                              "start": str(start or args.start), "budget_s": args.budget_s, "device": args.device,
                              "threads": args.threads, "tmp": tmp.name, "use_unlabelled": not args.no_unlabelled,
                              "tta_eval": args.tta_eval})
    runs = list(done)
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        for result in pool.map(run_one, tasks):
            runs.append(result)
            print(f"{result['protocol']} {result['recipe']} seed {result['seed']}: mIoU {result['miou']:.4f}, "
                  f"{result['steps']} steps, {result['seconds']:.0f} s", file=sys.stderr, flush=True)
            if args.results:
                with open(args.results, "a") as fh:
                    fh.write(json.dumps(result, default=str) + "\n")
    report = {"budget_s": args.budget_s, "budget_clock": "cpu", "threads": args.threads, "start": args.start,
              "recipes": {r: recipes[r] for r in chosen}, "summary": summarise(runs), "runs": runs,
              "wall_s": time.perf_counter() - t0, "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(report, default=str) if args.json else json.dumps(report, indent=1, default=str))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
