"""How much should uncorrected predicted pixels count next to the corrections? A headless sweep.

    python benchmarks/pseudo_labels.py --weights 0,0.1,0.3,whole --steps 100 --json

The correction-loop scenario of ``benchmarks/correction_loop.py`` without the GUI (so it also runs
on a GPU server): ``starter-ebc`` segments the EBC sample (NASA EBC2 test image, never seen by
it), NASA's ground truth is copied into the three 160² boxes where it is most wrong, the boxes are
saved as accepted rectangles in an annotation set exactly as the Correct tab saves them, and the
model is fine-tuned by the training job for each ``pseudo_weight`` (``whole``: the "whole image"
choice, every uncorrected predicted pixel a full-weight label). Prints pixel accuracy and mIoU
against the ground truth inside and outside the boxes, before and after, as one JSON object.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from correction_loop import SIDE, scores, worst_boxes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starter-ebc")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--weights", default="0,0.1,0.3,whole", help="comma-separated pseudo_weight values, or 'whole'")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    scratch_dir = tempfile.TemporaryDirectory(prefix="csunet-pseudo-")  # removed when the run ends
    scratch = Path(scratch_dir.name)
    os.environ.setdefault("CSUNET_MODELS_DIR", str(scratch / "models"))
    from csunet_train.config import TrainConfig
    from csunet_train.events import silent
    from csunet_train.job import run_job
    from napari_csunet import samples
    from napari_csunet.annotations import AnnotationStore
    from napari_csunet.inference import Segmenter
    from napari_csunet.model_catalog import resolve_model

    model_path = resolve_model(args.model)[1]
    ((image, meta, _),) = samples.ebc()
    ((truth, _, _),) = samples.ebc_labels()
    start = Segmenter.from_file(model_path, device=args.device)
    names = list(start.info.class_names)
    before = start.predict(image).labels
    boxes = worst_boxes(before, truth)
    inside = np.zeros(truth.shape, bool)
    labels = before.copy()
    for r, c in boxes:
        labels[r:r + SIDE, c:c + SIDE] = truth[r:r + SIDE, c:c + SIDE]
        inside[r:r + SIDE, c:c + SIDE] = True
    regions = [[r, c, r + SIDE, c + SIDE] for r, c in boxes]

    def report(pred: np.ndarray) -> dict:
        return {"inside": scores(pred, truth, inside, names), "outside": scores(pred, truth, ~inside, names)}

    result = {"image": meta["name"], "model": args.model, "steps": args.steps, "boxes": regions,
              "device": str(start.device), "before": report(before), "runs": []}
    for weight in args.weights.split(","):
        whole = weight == "whole"
        store = AnnotationStore(scratch / f"annotations-{weight}")
        store.add(image, labels, name="ebc", class_names=names, prediction=before,
                  regions=[] if whole else regions, whole_image=whole)
        for seed in (int(s) for s in args.seeds.split(",")):
            out = scratch / f"ft-{weight}-{seed}.safetensors"
            cfg = TrainConfig(out=str(out), mode="finetune", model=str(model_path), pairs=store.pairs(),
                              steps=args.steps, lr=3e-4, crop=256, batch_size=4, eval_every=10, seed=seed,
                              device=args.device, pseudo_weight=0.0 if whole else float(weight))
            t0 = time.perf_counter()
            done = run_job(cfg, silent)
            after = Segmenter.from_file(out, device=args.device).predict(image).labels
            result["runs"].append({"pseudo_weight": weight, "seed": seed, "best_step": done["best_step"],
                                   "val_before": done["initial_metrics"], "val_best": done["best_metrics"],
                                   "after": report(after), "seconds": round(time.perf_counter() - t0, 1)})
            if not args.json:
                run = result["runs"][-1]
                print(weight, seed, "inside", run["after"]["inside"]["pixel_accuracy"], "outside",
                      run["after"]["outside"]["pixel_accuracy"], file=sys.stderr)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
