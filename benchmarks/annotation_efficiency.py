"""Does the correction queue save brush time? A simulated user, queue vs random regions.

    nice python benchmarks/annotation_efficiency.py --json

For each dataset (NASA layout under ``--data-root``): a model that has not seen it (``micro-tiny``,
microscopy-pretrained, with a new output layer) is fine-tuned on ``--seed-regions`` random
``--region``² regions of the training images, ground truth copied in (shared by both curves).
Then, in ``--rounds`` rounds, the user "corrects" ``--k`` more regions (copies the ground truth
into them) chosen (a) by :mod:`napari_csunet.loop.correction_queue` from the current model's
uncertainty, (b) at random; after each round the model is fine-tuned further for ``--steps``
steps on every region labelled so far (the training backend in-process, as the live update does).
Each point is the test split's mIoU (mean over classes, argmax) vs labelled pixels.
``px_to_target_*``: labelled pixels at which a curve first reaches 95% of the random curve's final
mIoU (None: never). ``seconds_per_live_update``: mean seconds of one round's fine-tune plus the
re-prediction of one training image, in-process on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def center_crop(a: np.ndarray, side: int | None) -> np.ndarray:
    if not side:
        return a
    h, w = a.shape[:2]
    r, c = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return a[r:r + side, c:c + side]


def split_samples(root: Path, split: str) -> list:
    """A split of NASA's layout, or of an ``images/`` + ``masks/`` set named in its ``splits.json``
    (``../shared/data/labelled``; no ``val`` there: an empty list)."""
    from napari_csunet.images.datasets import find_samples

    if (root / split).is_dir() or not (root / "splits.json").exists():
        return find_samples(root, split)
    names = [Path(n).stem for n in json.loads((root / "splits.json").read_text()).get(split, [])]
    return find_samples(root, split, names=names) if names else []


def load_split(root: Path, split: str, count: int, crop: int | None = None,
               regions: tuple[int, int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (image, labels) pairs, or with ``regions`` (n, side) as many as hold n regions."""
    from napari_csunet.loop.correction_queue import tile_boxes

    out: list[tuple[np.ndarray, np.ndarray]] = []
    for sample in split_samples(root, split):
        if len(out) >= count if regions is None else sum(len(tile_boxes(i.shape, regions[1])) for i, _ in out) >= regions[0]:
            break
        image, labels = sample.load()
        out.append((center_crop(image, crop), center_crop(labels, crop)))
    return out


def first_reaching(curve: list[dict], target: float) -> int | None:
    return next((p["labelled_px"] for p in curve if p["miou"] is not None and p["miou"] >= target), None)


class Simulation:
    """One dataset: pool images with ground truth, test crops, and the fine-tune/evaluate steps."""

    def __init__(self, args: argparse.Namespace, root: Path, scratch: Path, seed: int) -> None:
        self.args, self.scratch, self.seed = args, scratch, seed
        self.pool = load_split(root, "train", 0, regions=(args.pool_regions, args.region))
        self.test = load_split(root, "test", args.test_images, args.test_crop)
        self.val = load_split(root, "val", 1, args.val_crop) if args.judge == "val" else []
        if args.judge == "val" and not self.val:
            raise SystemExit(f"{root}: no val split for --judge val; use --judge last")
        k = max(int(t.max()) for _, t in self.pool + self.test)
        self.names = [f"class {i + 1}" for i in range(k)]
        self.runs = 0
        self.seconds: list[float] = []

    def labelled(self, chosen: list[tuple[int, tuple[int, int, int, int]]]) -> list:
        from csunet_train.data import labelled_image

        items = []
        for i, (image, truth) in enumerate(self.pool):
            labels = np.zeros_like(truth)
            for j, (r0, c0, r1, c1) in chosen:
                if j == i:
                    labels[r0:r1, c0:c1] = truth[r0:r1, c0:c1]
            if labels.any():
                items.append(labelled_image(image, labels, f"pool{i}"))
        return items

    def finetune(self, model: str, chosen: list, steps: int) -> str:
        from csunet_train.config import TrainConfig
        from csunet_train.data import labelled_image
        from csunet_train.events import silent
        from csunet_train.job import run_job

        self.runs += 1
        out = str(self.scratch / f"m{self.runs}.safetensors")
        a = self.args
        last = a.judge == "last"
        cfg = TrainConfig(out=out, mode="finetune", model=model, steps=steps, eval_every=steps, crop=a.crop,
                          batch_size=a.batch, lr=a.lr, device="cpu", seed=self.seed, class_names=self.names,
                          freeze_cnn=a.freeze, freeze_swin=a.freeze, pseudo_weight=0.0, warmup_steps=0,
                          val_fraction=0.0 if last else 0.2)
        val = [] if last else [labelled_image(im, t, f"val{i}") for i, (im, t) in enumerate(self.val)]
        run_job(cfg, silent, train=self.labelled(chosen), val=val)
        return out

    def evaluate(self, model: str) -> float | None:
        from napari_csunet.engine.predictor import Segmenter
        from napari_csunet.measure.metrics import confusion_matrix, metrics_from_confusion

        seg = Segmenter.from_file(model, device="cpu", tile=512, batch_size=1)
        cm = sum(confusion_matrix(seg.predict(im).labels, t, len(self.names)) for im, t in self.test)
        return metrics_from_confusion(cm, self.names)["miou"]

    def pick_queue(self, model: str, chosen: list, k: int) -> list:
        """The k best regions of the pool by the queue's score: uncertainty, plus (unless
        ``--novelty 0``) novelty against every region labelled so far, updated after each pick."""
        from napari_csunet.engine.predictor import Segmenter
        from napari_csunet.loop.correction_queue import (
            NOVELTY_WEIGHT,
            rank_regions,
            region_features,
            score_with_novelty,
        )

        seg = Segmenter.from_file(model, device="cpu", tile=512, batch_size=1)
        weight = NOVELTY_WEIGHT if self.args.novelty is None else self.args.novelty
        labelled = np.concatenate([region_features(self.pool[i][0], [box]) for i, box in chosen]) if chosen \
            else np.zeros((0, 16), np.float32)
        candidates = []  # (region, image index, histogram)
        for i, (image, _) in enumerate(self.pool):
            t0 = time.perf_counter()
            unc = seg.predict(image, want_uncertainty=True).uncertainty
            if i == 0:
                self.seconds[-1] += time.perf_counter() - t0
            taken = {box for j, box in chosen if j == i}
            free = [r for r in rank_regions(unc, self.args.region) if r.box not in taken]
            feats = region_features(image, [r.box for r in free])
            candidates += [(r, i, f) for r, f in zip(free, feats, strict=True)]
        picks: list = []
        for _ in range(min(k, len(candidates))):
            score_with_novelty([c[0] for c in candidates], [c[2] for c in candidates], labelled, weight)
            region, i, feature = candidates.pop(int(np.argmax([c[0].score for c in candidates])))
            picks.append((i, region.box))
            labelled = np.concatenate([labelled, feature[None]])
        return picks

    def pick_random(self, rng: np.random.Generator, chosen: list, k: int) -> list:
        from napari_csunet.loop.correction_queue import tile_boxes

        free = [(i, box) for i, (im, _) in enumerate(self.pool) for box in tile_boxes(im.shape, self.args.region)
                if (i, box) not in chosen]
        return [free[j] for j in rng.choice(len(free), size=min(k, len(free)), replace=False)]

    def point(self, chosen: list, model: str) -> dict:
        px = sum((b[2] - b[0]) * (b[3] - b[1]) for _, b in chosen)
        return {"labelled_px": int(px), "regions": len(chosen), "miou": self.evaluate(model)}

    def curve(self, strategy: str, start: str, seed_set: list, first: dict) -> list[dict]:
        rng = np.random.default_rng(self.seed + 1)
        chosen, model, curve = list(seed_set), start, [first]
        for _ in range(self.args.rounds):
            t0 = time.perf_counter()
            self.seconds.append(0.0)
            new = (self.pick_queue(model, chosen, self.args.k) if strategy == "queue"
                   else self.pick_random(rng, chosen, self.args.k))
            chosen += new
            t1 = time.perf_counter()
            model = self.finetune(model, chosen, self.args.steps)
            self.seconds[-1] += time.perf_counter() - t1
            curve.append(self.point(chosen, model) | {"seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {strategy}: {curve[-1]}", file=sys.stderr)
        return curve


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Point-wise mean over seeds (every seed labels the same number of pixels per round)."""
    return [{"labelled_px": points[0]["labelled_px"], "regions": points[0]["regions"],
             "miou": float(np.mean([p["miou"] for p in points])), "miou_per_seed": [p["miou"] for p in points]}
            for points in zip(*curves, strict=True)]


def run_seed(args: argparse.Namespace, name: str, seed: int) -> tuple[list[dict], list[dict], list[float], dict]:
    from napari_csunet.models.catalog import resolve_model

    scratch_dir = tempfile.TemporaryDirectory(prefix=f"csunet-effort-{Path(name).name}-{seed}-")  # ~330 MB of models
    scratch = Path(scratch_dir.name)
    sim = Simulation(args, Path(args.data_root) / name, scratch, seed)  # an absolute name wins
    seed_set = sim.pick_random(np.random.default_rng(seed), [], args.seed_regions)
    start = sim.finetune(str(resolve_model(args.model)[1]), seed_set, args.seed_steps)
    first = sim.point(seed_set, start)
    print(f"{name} seed {seed}: {first}", file=sys.stderr)
    queue = sim.curve("queue", start, seed_set, first)
    queue_seconds = list(sim.seconds)
    rand = sim.curve("random", start, seed_set, first)
    meta = {"classes": sim.names, "pool_images": len(sim.pool), "test_images": len(sim.test)}
    return queue, rand, queue_seconds, meta


def run_dataset(args: argparse.Namespace, name: str) -> dict:
    t0 = time.perf_counter()
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, name, seed))
        print(json.dumps({"dataset": name, "seed": seed, "curve_queue": runs[-1][0], "curve_random": runs[-1][1]}),
              file=sys.stderr)  # kept in the log should a later dataset fail
    queue, rand = mean_curve([r[0] for r in runs]), mean_curve([r[1] for r in runs])
    seconds = [s for r in runs for s in r[2]]
    target = 0.95 * rand[-1]["miou"] if rand[-1]["miou"] is not None else None
    px_q, px_r = (first_reaching(c, target) if target is not None else None for c in (queue, rand))
    return {"dataset": name, **runs[0][3], "seeds": list(args.seeds),
            "curve_queue": queue, "curve_random": rand, "target_miou": target,
            "px_to_target_queue": px_q, "px_to_target_random": px_r,
            "ratio": round(px_q / px_r, 3) if px_q and px_r else None,
            "seconds_per_live_update": round(float(np.mean(seconds)), 1) if seconds else None,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--datasets", default="EBC2,Super1", help="names under --data-root, or paths")
    parser.add_argument("--data-root", default=str(shared / "nasa"))
    parser.add_argument("--model", default="micro-tiny", help="start: a model that has not seen these datasets")
    parser.add_argument("--region", type=int, default=256, help="side of a correction region (px)")
    parser.add_argument("--seed-regions", type=int, default=2, help="random regions labelled before round 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=1, help="regions corrected per round")
    parser.add_argument("--steps", type=int, default=10, help="fine-tune steps after each round")
    parser.add_argument("--seed-steps", type=int, default=20, help="fine-tune steps on the seed regions")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="freeze both encoders (what makes a live update fast)")
    parser.add_argument("--pool-regions", type=int, default=16, help="training images holding this many regions")
    parser.add_argument("--test-images", type=int, default=1)
    parser.add_argument("--test-crop", type=int, default=512, help="centre crop of each test image (0: whole)")
    parser.add_argument("--val-crop", type=int, default=256, help="centre crop of one val image (best checkpoint)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (seed regions, random picks, "
                        "training); the curves are their point-wise mean")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--novelty", type=float, default=None,
                        help="weight of the queue's novelty term (default: the product's, NOVELTY_WEIGHT; 0: "
                             "uncertainty only)")
    parser.add_argument("--judge", choices=("last", "val"), default="last",
                        help="after each round keep the last model (default), or the better of start/end on "
                             "one val image (a curve can freeze when an update is rejected)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.seeds = [int(x) for x in args.seeds.split(",")]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models_dir = tempfile.TemporaryDirectory(prefix="csunet-effort-models-")  # removed when the run ends
    os.environ.setdefault("CSUNET_MODELS_DIR", models_dir.name)
    t0 = time.perf_counter()
    results = [run_dataset(args, name) for name in args.datasets.split(",")]
    out = {"settings": vars(args), "datasets": results, "seconds": round(time.perf_counter() - t0, 1)}
    for key in ("px_to_target_queue", "px_to_target_random", "seconds_per_live_update"):
        out[key] = {r["dataset"]: r[key] for r in results}
    out["curve_queue"] = {r["dataset"]: r["curve_queue"] for r in results}
    out["curve_random"] = {r["dataset"]: r["curve_random"] for r in results}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
