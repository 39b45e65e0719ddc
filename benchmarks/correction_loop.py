"""The correction loop, headless: does one round of corrections make the model better, never worse?

    nice .venv/bin/python benchmarks/correction_loop.py --json --out out/correction_loop.json --resume \
        --data ../shared/data/nasa/EBC2,../shared/data/nasa/Super1 \
        --data ../shared/data/labelled/tbm-grains,../shared/data/labelled/nanocomposite-agglomerates \
        --images 4 --seeds 0,1,2
    .venv/bin/python benchmarks/correction_loop.py --json --steps 3 --images 1 --seeds 0 --other 1 \
        --data ../shared/data/nasa/EBC2                                     # smoke test
    .venv/bin/python benchmarks/correction_loop.py --json --set distill_weight=0 ...  # an experiment

A simulated user, with the product's own pieces (issue 19, point 6): the starting model segments an
image (:class:`~napari_csunet.engine.predictor.Segmenter`), the ``--boxes`` squares where it is most wrong
are painted to the ground truth and marked reviewed (:class:`~napari_csunet.images.annotations.AnnotationStore`
with the raw prediction and the boxes as regions), and the Fine-tune tab's job
(:func:`~napari_csunet.loop.finetune_job.finetune_job_spec` with its defaults, ``--steps``/``--set`` override)
runs in a training child (:class:`~napari_csunet.loop.training_job.TrainingJob`), which decides whether the new
model becomes current. Then the candidate it saved re-segments the image. Scores against the truth:
``inside`` the boxes, ``outside`` them, and pooled over ``other_images`` of the set (candidate's
raw prediction, the model the job saved: the fine-tuned one or the blend it judged, ``blend``;
``current_after``: what the user ends with, the candidate only if it was kept).
``seconds``: Start -> the image re-segmented by the candidate (every run, kept or not).
``--unlabelled N`` other images of the set go with the job without labels (``unlabelled``), as the
Fine-tune tab gives the other open images: never the annotated or the scored ones.

Images annotated: a set's test split (EBC2: plus its val split, to reach ``--images``), or, for a
set with no split (an ``images/`` + ``masks/`` folder whose splits.json has only "all"), every other
image of the sorted names; the rest fine-tune the base model. ``--model`` default: the starter of
EBC*/Super* sets, else a base model fine-tuned from ``micro-tiny`` on the set's training images,
cached under ``--cache``. Results are written to ``--out`` after every run; ``--resume`` skips runs
already there. Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from napari_csunet.loop.training_job import JobSpec

ROOT = Path(__file__).resolve().parents[1]
#: a kept run "regressed" where outside-box or other-image mIoU fell by more than this
REGRESSION = 0.005
#: the base model for sets without a starter: micro-tiny fine-tuned on the set's training images
BASE_DEFAULTS: dict[str, Any] = {"steps": 300, "crop": 256, "batch_size": 4, "lr": 1e-3, "distill_weight": 0.0}
STARTERS = {"EBC": "starter-ebc", "Super": "starter-superalloy"}
AREAS = ("inside", "outside", "other_images")


def box_side(shape: Sequence[int]) -> int:
    """160 px on images of at least 640 px (as a user boxes a 1024² micrograph), else about a quarter
    of the shorter side in multiples of 16 (a 256² tile gets 64 px)."""
    short = min(shape[:2])
    return 160 if short >= 640 else max(16, int(round(short / 4 / 16)) * 16)


def worst_boxes(pred: np.ndarray, truth: np.ndarray, n: int = 3, side: int = 160, stride: int = 16) -> list[tuple[int, int]]:
    """Top-left corners of ``n`` non-overlapping ``side``² boxes holding the most wrong (labelled) pixels."""
    wrong = np.pad(((pred != truth) & (truth > 0)).astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = pred.shape
    rows, cols = np.arange(0, h - side + 1, stride), np.arange(0, w - side + 1, stride)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    counts = wrong[r + side, c + side] - wrong[r, c + side] - wrong[r + side, c] + wrong[r, c]
    boxes: list[tuple[int, int]] = []
    for flat in np.argsort(counts, axis=None, kind="stable")[::-1]:
        top, left = int(r.flat[flat]), int(c.flat[flat])
        if all(abs(top - t) >= side or abs(left - lft) >= side for t, lft in boxes):
            boxes.append((top, left))
        if len(boxes) == n:
            break
    return boxes


def split_pool(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """A set without splits: (every other sorted name to train the base model on, the rest to annotate)."""
    ordered = sorted(names)
    return ordered[0::2], ordered[1::2]


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items evenly spaced over ``items`` (all of them when there are no more)."""
    if n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def scores(cm_before: np.ndarray, cm_after: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """mIoU and pixel accuracy before/after from two confusion matrices of the same pixels."""
    from napari_csunet.measure.metrics import metrics_from_confusion

    out: dict[str, float | None] = {}
    for when, cm in (("before", cm_before), ("after", cm_after)):
        m = metrics_from_confusion(cm, names)
        out[f"miou_{when}"], out[f"accuracy_{when}"] = m["miou"], m["pixel_accuracy"]
    return out


def change(area: dict[str, Any] | None, key: str = "miou", after: str = "after") -> float | None:
    """``<key>_<after> - <key>_before`` of one area of a run (None where it was not measured)."""
    if not area or area.get(f"{key}_{after}") is None or area.get(f"{key}_before") is None:
        return None
    return area[f"{key}_{after}"] - area[f"{key}_before"]


def is_regression(run: dict[str, Any], tolerance: float = REGRESSION) -> bool:
    """A kept model whose outside-box or other-image mIoU fell by more than ``tolerance``."""
    return bool(run.get("kept")) and any((change(run.get(a)) or 0.0) < -tolerance for a in ("outside", "other_images"))


def annotated_group(pool: Sequence[Any], first: Any, n: int) -> list[Any]:
    """``first`` and the next ``n - 1`` images of ``pool`` (wrapping round): one round's annotated images."""
    if not 1 <= n <= len(pool):
        raise SystemExit(f"--together {n}: between 1 and the {len(pool)} images of the pool")
    at = pool.index(first)
    return [pool[(at + j) % len(pool)] for j in range(n)]


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(statistics.median(vals)), 1) if vals else None


def means(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean changes (candidate: "after"; what the user ends with: "current_after") over ``runs``."""
    out: dict[str, Any] = {"runs": len(runs), "kept": sum(bool(r.get("kept")) for r in runs)}
    for area in AREAS:
        for key in ("miou", "accuracy"):
            out[f"{area}_{key}_change"] = _mean(change(r.get(area), key) for r in runs)
            if area != "inside":
                out[f"{area}_{key}_change_current"] = _mean(change(r.get(area), key, "current_after") for r in runs)
    out["inside_accuracy_after"] = _mean((r.get("inside") or {}).get("accuracy_after") for r in runs)
    return out


def summarize(runs: Sequence[dict[str, Any]], tolerance: float = REGRESSION) -> dict[str, Any]:
    """The issue's summary: means, kept runs that made things worse, timings, verdicts, per dataset."""
    regressed = [r for r in runs if is_regression(r, tolerance)]
    verdicts: dict[str, int] = {}
    for r in runs:
        verdicts[str(r.get("verdict"))] = verdicts.get(str(r.get("verdict")), 0) + 1
    by_set: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_set.setdefault(r["dataset"], []).append(r)
    return means(runs) | {
        "regressions_kept": len(regressed),
        "regressed_runs": [f"{r['dataset']}/{r['image']}/seed {r['seed']}" for r in regressed],
        "seconds_p50": _median(r.get("seconds") for r in runs),
        "first_update_s_p50": _median(r.get("first_update_s") for r in runs),
        "verdicts": verdicts,
        "per_dataset": {name: means(rs) | {"seconds_p50": _median(r.get("seconds") for r in rs)}
                        for name, rs in by_set.items()},
    }


def parse_sets(values: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` (VALUE as JSON where it parses, else a string) -> job overrides."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. distill_weight=0")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def log(message: str) -> None:
    print(f"correction_loop: {message}", file=sys.stderr, flush=True)


# -- the product's pieces -------------------------------------------------------------------------


def run_job(spec: JobSpec | dict[str, Any], workdir: Path, on_event: Callable[[dict[str, Any], float], None] | None = None
            ) -> dict[str, Any]:
    """Run a training job in a child process as the GUI does; the ``done`` event (raises on error)."""
    from napari_csunet.loop.training_job import TrainingJob

    t0 = time.perf_counter()
    seen: list[dict[str, Any]] = []

    def handle(ev: dict[str, Any]) -> None:
        seen.append(ev)
        if on_event is not None:
            on_event(ev, time.perf_counter() - t0)

    job = TrainingJob(spec, handle, workdir=workdir)
    job.start()
    job.wait()
    done = next((e for e in seen if e["event"] == "done"), None)
    if done is None:
        error = next((e for e in seen if e["event"] == "error"), {})
        raise RuntimeError(f"training job failed: {error.get('kind')}: {error.get('message')}")
    done["warnings"] = [e.get("message") for e in seen if e["event"] == "warning"]
    return done


class DataSet:
    """One labelled folder: the images annotated (with truth), those that train its base model, its classes."""

    def __init__(self, root: Path, images: int) -> None:
        from napari_csunet.images.datasets import find_samples

        self.root, self.name, self.notes = root, root.name, []
        self.train_split, self.train_names = "train", None
        if (root / "test").is_dir():  # NASA's layout
            self.pool = find_samples(root, "test")
            if len(self.pool) < images and (root / "val").is_dir():
                extra = find_samples(root, "val")[: images - len(self.pool)]
                self.pool += extra
                self.notes.append(f"{self.name}: its test split has {len(self.pool) - len(extra)} images; "
                                  f"the first {len(extra)} image(s) of its val split were annotated too (a starter may have "
                                  "picked its checkpoint on them, never trained on them)")
        else:
            splits = json.loads((root / "splits.json").read_text()) if (root / "splits.json").exists() else {}
            everything = [s.image.stem for s in find_samples(root, None)]
            if splits.get("test"):
                annotated = [Path(n).stem for n in splits["test"]]
                self.train_names = [Path(n).stem for n in splits.get("train", [])] or None
            else:
                self.train_names, annotated = split_pool(everything)
                self.notes.append(f"{self.name}: no split; base model trained on every other image "
                                  f"({len(self.train_names)}), the other {len(annotated)} annotated")
            self.pool = find_samples(root, None, names=annotated)
        self.spec = self.pool[0].spec
        # images of the material a user would also have open (given without labels): the other
        # splits, those that trained the starting model last
        pooled = {s.image for s in self.pool}
        other_splits = (["val", "train"] if (root / "test").is_dir() else [])
        self.extra = [s for split in other_splits if (root / split).is_dir()
                      for s in find_samples(root, split) if s.image not in pooled]
        if self.train_names:
            self.extra += find_samples(root, None, names=self.train_names)

    def unlabelled_for(self, annotated: Sequence[Any], others: Sequence[Any], n: int) -> list[str]:
        """``n`` image files neither annotated in this run nor scored as its other images."""
        scored = {*(s.image for s in annotated), *(s.image for s in others)}
        return [str(s.image) for s in [*self.pool, *self.extra] if s.image not in scored][:n]

    def default_model(self) -> str | None:
        """The starter for NASA's sets (by folder name), None where a base model must be trained."""
        return next((m for prefix, m in STARTERS.items() if self.name.startswith(prefix)), None)


def base_model(data: DataSet, cache: Path, steps: int, scratch: Path) -> dict[str, Any]:
    """micro-tiny fine-tuned on ``data``'s training images (cached: reruns reuse it)."""
    from napari_csunet.atomic import atomic_path
    from napari_csunet.models.catalog import model_stem, resolve_model

    path = cache / f"{model_stem(data.name)}-micro-tiny-{steps}steps.safetensors"
    record = path.with_suffix(".json")
    if path.exists() and record.exists():
        return json.loads(record.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n")  # a cache, never committed
    log(f"{data.name}: training its base model from micro-tiny ({steps} steps) …")
    tmp = scratch / "base" / path.name
    spec = {"mode": "finetune", "model": str(resolve_model("micro-tiny")[1]), "data_dir": str(data.root),
            "split": data.train_split, "names": data.train_names, "device": "cpu", "out": str(tmp),
            "name": path.stem, "eval_every": max(1, steps // 5), "seed": 0} | BASE_DEFAULTS | {"steps": steps}
    if data.spec.names:
        spec["class_names"] = list(data.spec.names)
    done = run_job(spec, scratch / "base-job")
    with atomic_path(path, suffix=".safetensors") as out:
        out.write_bytes(tmp.read_bytes())
    info = {"path": str(path), "started_from": "micro-tiny", "steps": done["steps"], "settings": BASE_DEFAULTS | {"steps": steps},
            "train_images": f"{len(data.train_names)} named in splits.json" if data.train_names else f"split {data.train_split!r}", "best_step": done.get("best_step"),
            "val_metrics": done.get("best_metrics"), "seconds": round(done.get("elapsed_s") or 0.0, 1)}
    record.write_text(json.dumps(info, indent=1))
    return info


class Loop:
    """The runs of one dataset: the starting model, its predictions (computed once), one run per image and seed."""

    def __init__(self, data: DataSet, model: Path, args: argparse.Namespace, scratch: Path) -> None:
        from napari_csunet.engine.predictor import Segmenter

        self.data, self.model, self.args, self.scratch = data, model, args, scratch
        self.start = Segmenter.from_file(model, device="cpu")
        self.names = list(data.spec.names) or list(self.start.info.class_names)
        self.colors = list(data.spec.colors) or list(self.start.info.class_colors)
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def load(self, sample: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, truth, the starting model's prediction) of one sample, kept for the next seeds."""
        from napari_csunet.images.databar import clear_databar, detect_databar

        key = sample.image.stem
        if key not in self._loaded:
            image, truth = sample.load()
            bar = detect_databar(image)
            self._loaded[key] = (image, clear_databar(truth, bar), self.predict(self.start, image, key))
        return self._loaded[key]

    @staticmethod
    def predict(segmenter: Any, image: np.ndarray, name: str) -> np.ndarray:
        """Labels as the Segment button makes them: an SEM data bar is not analysed (0, as in the truth)."""
        from napari_csunet.images.databar import detect_databar, predict_outside

        return predict_outside(lambda im: segmenter.predict(im, name=name), image, detect_databar(image)).labels

    def confusion(self, pred: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Counts over ``where`` (all pixels by default) with this set's classes; truth 0 is not scored."""
        from napari_csunet.measure.metrics import confusion_matrix

        return confusion_matrix(pred if where is None else pred[where], truth if where is None else truth[where],
                                len(self.names))

    def corrected(self, sample: Any) -> dict[str, Any]:
        """The simulated user's work on one image: the worst boxes painted to the truth."""
        image, truth, before = self.load(sample)
        side = box_side(truth.shape)
        boxes = worst_boxes(before, truth, self.args.boxes, side)
        inside = np.zeros(truth.shape, bool)
        for r, c in boxes:
            inside[r:r + side, c:c + side] = True
        labels = np.where(inside & (truth > 0), truth, before).astype(np.uint8)
        return {"sample": sample, "image": image, "truth": truth, "before": before, "side": side, "boxes": boxes,
                "inside": inside, "labels": labels}

    def run(self, annotated: Sequence[Any], others: Sequence[Any], seed: int) -> dict[str, Any]:
        """One simulated round on the ``annotated`` images (usually one): paint the worst boxes of
        each, fine-tune once, re-segment, score (inside and outside pooled over them)."""
        from napari_csunet.engine.predictor import Segmenter
        from napari_csunet.images.annotations import AnnotationStore
        from napari_csunet.loop.finetune_job import finetune_job_spec
        from napari_csunet.models.catalog import model_stem

        work = [self.corrected(sample) for sample in annotated]
        sample, side, boxes = annotated[0], work[0]["side"], work[0]["boxes"]
        with tempfile.TemporaryDirectory(prefix="run-", dir=self.scratch) as tmp:
            store = AnnotationStore(Path(tmp) / "annotations")
            for w in work:
                store.add(w["image"], w["labels"], name=w["sample"].image.stem, class_names=self.names,
                          class_colors=self.colors, prediction=w["before"],
                          regions=[[r, c, r + w["side"], c + w["side"]] for r, c in w["boxes"]])
            unlabelled = self.data.unlabelled_for(annotated, others, self.args.unlabelled)
            params = (({"steps": self.args.steps} if self.args.steps else {}) | {"seed": seed}
                      | ({"unlabelled": unlabelled} if unlabelled else {}) | self.args.overrides)
            spec = finetune_job_spec(self.model, store.pairs(), self.names, Path(tmp) / "candidate.safetensors",
                                     class_colors=self.colors, device="cpu", **params)
            times: dict[str, float] = {}

            def on_event(ev: dict[str, Any], t: float) -> None:
                if ev["event"] == "step":
                    times.setdefault("first_step_s", t)
                elif ev["event"] == "eval" and ev.get("step", 0) > 0:
                    times.setdefault("first_update_s", t)

            t0 = time.perf_counter()
            done = run_job(spec, Path(tmp) / "job", on_event)
            candidate = Segmenter.from_file(done["path"], device="cpu")
            if self.args.keep_models is not None:  # for analysis after the run
                self.args.keep_models.mkdir(parents=True, exist_ok=True)
                kept_as = self.args.keep_models / f"{model_stem(self.data.name)}-{model_stem(sample.image.stem)}-s{seed}.safetensors"
                kept_as.write_bytes(Path(done["path"]).read_bytes())
            afters = [self.predict(candidate, w["image"], w["sample"].image.stem) for w in work]
            seconds = time.perf_counter() - t0
            other_cms = [(self.confusion(b, t), self.confusion(self.predict(candidate, i, s.image.stem), t))
                         for s in others for i, t, b in [self.load(s)]]
        decision = done.get("decision") or {}
        kept = bool(decision.get("keep"))
        befores = [w["before"] for w in work]

        def pooled(preds: Sequence[np.ndarray], inside: bool) -> np.ndarray:
            return sum(self.confusion(p, w["truth"], w["inside"] if inside else ~w["inside"])
                       for w, p in zip(work, preds, strict=True))

        areas = {"inside": scores(pooled(befores, True), pooled(afters, True), self.names),
                 "outside": scores(pooled(befores, False), pooled(afters, False), self.names),
                 "other_images": scores(sum(b for b, _ in other_cms), sum(a for _, a in other_cms), self.names)
                 if other_cms else None}
        for area in ("outside", "other_images"):
            if areas[area] is not None:
                areas[area] |= {f"{k}_current_after": areas[area][f"{k}_after" if kept else f"{k}_before"]
                                for k in ("miou", "accuracy")}
        new = decision.get("new")
        return {"dataset": self.data.name, "image": "+".join(s.image.stem for s in annotated), "seed": seed,
                "model": str(self.model), "boxes": [[r, c, r + side, c + side] for r, c in boxes], "box_side": side,
                "painted_pixels": sum(int(np.count_nonzero(w["labels"] != w["before"])) for w in work), **areas,
                "other_image_names": [s.image.stem for s in others],
                "unlabelled_images": [Path(u).stem for u in unlabelled],
                "kept": kept, "verdict": decision.get("verdict"), "reason": decision.get("reason"),
                "reported": {"miou_before": new["before"]["miou"], "miou_after": new["after"]["miou"],
                             "pixels": new["pixels"], "per_class_pixels": new.get("per_class_pixels"),
                             "noise": new.get("noise"), "iou_per_class_before": new["before"]["iou_per_class"],
                             "iou_per_class_after": new["after"]["iou_per_class"]} if new else None,
                "elsewhere": decision.get("elsewhere"),
                **{k: decision[k] for k in ("blend", "blends", "tried") if k in decision},
                "missing_classes": decision.get("missing_classes"), "best_step": done.get("best_step"),
                "steps": done.get("steps"), "seconds": round(seconds, 1),
                "first_update_s": _round(times.get("first_update_s")), "first_step_s": _round(times.get("first_step_s")),
                "job_warnings": done.get("warnings")}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def load_results(path: Path | None, resume: bool) -> dict[str, Any]:
    """The results so far (``--resume``), else an empty record."""
    if resume and path is not None and path.exists():
        return json.loads(path.read_text())
    return {"runs": []}


def save_results(result: dict[str, Any], path: Path | None) -> None:
    """Write the results with their summary (atomically: a killed run keeps what was done)."""
    result["summary"] = summarize(result["runs"])
    if path is not None:
        from napari_csunet.atomic import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result, indent=1))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", action="append", required=True,
                        help="labelled folder(s), repeatable or comma-separated (NASA layout or images/ + masks/)")
    parser.add_argument("--model", default=None, help="starting model (name or file); default: see the module doc")
    parser.add_argument("--images", type=int, default=4, help="images annotated per set (one run each)")
    parser.add_argument("--other", type=int, default=3, help="at most this many other images scored per run")
    parser.add_argument("--together", type=int, default=1, help="images annotated in one round (the run's image "
                        "and the next ones of the pool; inside/outside pooled over them)")
    parser.add_argument("--boxes", type=int, default=3, help="worst boxes painted to the truth per image")
    parser.add_argument("--unlabelled", type=int, default=3,
                        help="other images of the set given without labels, as the Fine-tune tab gives the other "
                             "open images (never the annotated or the scored ones; 0: none)")
    parser.add_argument("--seeds", default="0,1,2", help="the fine-tune's seeds, comma-separated")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: the Fine-tune tab's)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job setting, e.g. distill_weight=0 (repeatable)")
    parser.add_argument("--base-steps", type=int, default=BASE_DEFAULTS["steps"],
                        help="steps of the base model trained for sets without a starter")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache", help="base models kept here")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here after every run")
    parser.add_argument("--resume", action="store_true", help="skip the runs already in --out")
    parser.add_argument("--keep-models", type=Path, default=None, help="copy each run's fine-tuned model here")
    parser.add_argument("--json", action="store_true", help="print the JSON object on one line")
    args = parser.parse_args(argv)
    args.data = [Path(p).resolve() for item in args.data for p in item.split(",") if p]  # the job child runs elsewhere
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.overrides = parse_sets(args.sets)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = load_results(args.out, args.resume)
    done = {(r["dataset"], r["image"], r["seed"]) for r in result["runs"]}
    with tempfile.TemporaryDirectory(prefix="csunet-correction-loop-") as scratch_dir:
        scratch = Path(scratch_dir)
        for var, sub in (("CSUNET_MODELS_DIR", "models"), ("CSUNET_ANNOTATIONS_DIR", "annotations"),
                         ("CSUNET_CONFIG_DIR", "config")):
            os.environ[var] = str(scratch / sub)  # the user's folders stay untouched
        from napari_csunet.loop.finetune_job import finetune_defaults
        from napari_csunet.models.catalog import resolve_model

        result |= {"benchmark": "correction_loop", "command": " ".join(sys.argv),
                   "job": finetune_defaults() | ({"steps": args.steps} if args.steps else {}) | args.overrides,
                   "boxes": args.boxes, "seeds": args.seeds, "metric": "mIoU (mean of per-class IoU) and pixel "
                   "accuracy against the ground truth, raw argmax predictions; other_images pooled"}
        result.setdefault("datasets", {})
        result.setdefault("notes", [])
        for root in args.data:
            data = DataSet(root, args.images)
            result["notes"] += [n for n in data.notes if n not in result["notes"]]
            name = args.model or data.default_model()
            base = None if name else base_model(data, args.cache, args.base_steps, scratch)
            model = Path(base["path"]) if base else resolve_model(name)[1]
            loop = Loop(data, model, args, scratch)
            chosen = spread(data.pool, args.images)
            result["datasets"][data.name] = {"root": str(root), "model": str(model), "base_model": base,
                                             "class_names": loop.names, "annotated": [s.image.stem for s in chosen],
                                             "pool": [s.image.stem for s in data.pool]}
            for sample in chosen:
                group = annotated_group(data.pool, sample, args.together)
                others = [s for s in data.pool if s not in group][: args.other]
                name = "+".join(s.image.stem for s in group)
                for seed in args.seeds:
                    if (data.name, name, seed) in done:
                        continue
                    log(f"{data.name} {name} seed {seed} …")
                    run = loop.run(group, others, seed)
                    log(f"  {run['verdict']}, kept {run['kept']}, {run['seconds']} s, outside mIoU "
                        f"{run['outside']['miou_before']:.3f} -> {run['outside']['miou_after']:.3f}")
                    result["runs"].append(run)
                    save_results(result, args.out)
        save_results(result, args.out)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
