"""The correction loop in the real widget: does a short fine-tune on three corrected boxes help?

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/correction_loop_gui.py --json
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/correction_loop_gui.py --json --screenshot out/finetune.png

A user's session, scripted: napari with the plugin docked, the EBC sample (NASA EBC2 *test* image
040617#2_S127(2)0015, which ``starter-ebc`` never saw), ``starter-ebc`` loaded, Segment; then the
three 160² boxes where the starter is most wrong are "corrected" by copying NASA's ground truth
into them, marked reviewed with the Correct tab's *Mark painted areas as reviewed* (``--accept``:
or painted pixels only, the boxes as Shapes rectangles, the whole image), added to the training
set, and the model is fine-tuned in the training child (the panel's defaults; ``--steps``,
``--set KEY=VALUE``). Pixel accuracy and mIoU against the ground truth, inside and outside the
boxes, of the prediction before and after (the candidate's raw prediction when the panel offered
it without making it current), the panel's decision and its text are printed as one JSON object.
``--screenshot FILE`` saves the window after the fine-tune (``--tab`` picks the dock tab).
The same loop headless, on many images, datasets and seeds: ``benchmarks/correction_loop.py``.
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
from correction_loop import (  # benchmarks/ is on the path of a script run from it
    parse_sets,
    worst_boxes,
)

ROOT = Path(__file__).resolve().parents[1]
SIDE = 160


def scores(pred: np.ndarray, truth: np.ndarray, where: np.ndarray, names: list[str]) -> dict:
    """Pixel accuracy, mIoU and per-class IoU of ``pred`` on the pixels ``where``."""
    from napari_csunet.measure.metrics import segmentation_metrics

    m = segmentation_metrics(pred[where], truth[where], names)
    return {"pixel_accuracy": round(m["pixel_accuracy"], 4), "miou": round(m["miou"], 4),
            "iou_per_class": {k: None if v is None else round(v, 4) for k, v in m["iou_per_class"].items()},
            "pixels": m["pixels"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starter-ebc")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: the Fine-tune tab's)")
    parser.add_argument("--accept", choices=("painted", "marked", "rectangles", "whole"), default="marked",
                        help="what trains and judges: painted pixels only; 'Mark painted areas as reviewed' (one "
                             "click); the boxes drawn as Shapes rectangles; the whole image")
    parser.add_argument("--screenshot", default=None, help="PNG of the window after the fine-tune")
    parser.add_argument("--show-changes", action="store_true", help="then click 'Show what it changes' and "
                        "score the changed pixels against the truth (right before, right after)")
    parser.add_argument("--tab", default="Fine-tune", help="dock tab(s) to show, comma-separated (one PNG each)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job setting, e.g. distill_weight=0 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()

    scratch_dir = tempfile.TemporaryDirectory(prefix="csunet-correction-loop-")  # removed when the run ends
    scratch = Path(scratch_dir.name)
    os.environ["CSUNET_ANNOTATIONS_DIR"] = str(scratch / "annotations")  # the user's folders stay untouched
    os.environ["CSUNET_MODELS_DIR"] = str(scratch / "models")
    os.environ["CSUNET_CONFIG_DIR"] = str(scratch / "config")
    sys.path.insert(0, str(ROOT / "scripts"))
    import napari
    from qtpy.QtWidgets import QApplication
    from screenshot import _wait

    from napari_csunet._qt.training_set import PAINTED_ONLY, WHOLE_IMAGE
    from napari_csunet.atomic import atomic_path
    from napari_csunet.models.catalog import resolve_model
    from napari_csunet.plugin import samples

    t0 = time.perf_counter()
    viewer = napari.Viewer(title="napari-csunet: correction loop")
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    (image,) = viewer.open_sample("napari-csunet", "ebc")
    ((truth, _, _),) = samples.ebc_labels()
    _, w = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    w.model_panel.open_file(str(resolve_model(args.model)[1]))
    _wait(app, lambda: w.session.segmenter is not None and not w.session.busy, 300, "loading the model")
    names = list(w.session.info.class_names)
    w.segment_panel.segment([image])
    _wait(app, lambda: not w.segment_panel.running, 600, "segmenting")
    layer = viewer.layers[f"{image.name} labels"]
    before = w.session.records.for_labels(layer).prediction.copy()

    boxes = worst_boxes(before, truth, side=SIDE)
    inside = np.zeros(truth.shape, bool)
    for r, c in boxes:
        layer.data[r:r + SIDE, c:c + SIDE] = truth[r:r + SIDE, c:c + SIDE]
        inside[r:r + SIDE, c:c + SIDE] = True
    layer.refresh()
    w.correct_panel.set_labels_layer(layer)
    if args.accept == "rectangles":
        viewer.add_shapes([[[r, c], [r, c + SIDE], [r + SIDE, c + SIDE], [r + SIDE, c]] for r, c in boxes],
                          shape_type="rectangle", name="checked", edge_color="yellow", face_color="transparent",
                          edge_width=4)
        w.correct_panel.region.choose("checked")
    elif args.accept == "whole":
        w.correct_panel.region.choose(WHOLE_IMAGE)
    else:
        w.correct_panel.region.choose(PAINTED_ONLY)
        if args.accept == "marked":  # the Correct tab's one click: rectangles around the painted areas
            w.correct_panel.mark_painted_reviewed()
    corrected_layer = layer.data.copy()
    entry = w.correct_panel.add_to_training_set()
    if entry is None:
        raise SystemExit(f"correction_loop: {w.correct_panel.status.text()}")

    panel = w.finetune_panel
    if args.steps is not None:
        panel.form.steps.value = args.steps
    panel.overrides = parse_sets(args.sets)
    t_ft = time.perf_counter()
    if not panel.start():
        raise SystemExit(f"correction_loop: {panel.status.text()}")
    _wait(app, lambda: panel.last_done is not None and not panel.running, 3600, "fine-tuning")
    _wait(app, lambda: not w.session.busy and not w.segment_panel.running, 600, "re-segmenting")
    finetune_s = time.perf_counter() - t_ft
    done = panel.last_done
    after = w.session.records.for_labels(layer).prediction  # what the user sees: the new model's only when it became current
    candidate = None
    if done.get("path") and Path(done["path"]).exists():  # the fine-tuned model, current or offered
        from napari_csunet.engine.predictor import Segmenter

        candidate = Segmenter.from_file(done["path"]).predict(np.asarray(image.data)).labels
    outside = ~inside
    result = {
        "image": "EBC2/test 040617#2_S127(2)0015 (napari-csunet sample 'ebc'), 1024x1024",
        "model": args.model, "steps": panel.form.steps.value, "accept": args.accept, "overrides": panel.overrides, "boxes": [list(b) for b in boxes],
        "box_side": SIDE, "trained_pixels": entry.labelled, "painted_pixels": entry.painted,
        "metric": "pixel accuracy and mIoU (mean of per-class IoU) against NASA's ground truth, raw predictions",
        "before": {"inside": scores(before, truth, inside, names), "outside": scores(before, truth, outside, names),
                   "whole": scores(before, truth, np.ones_like(inside), names)},
        "after": {"inside": scores(after, truth, inside, names), "outside": scores(after, truth, outside, names),
                  "whole": scores(after, truth, np.ones_like(inside), names)},
        "candidate": None if candidate is None else {
            "inside": scores(candidate, truth, inside, names), "outside": scores(candidate, truth, outside, names)},
        "model_changed": not np.array_equal(after, before),
        "corrections_kept_on_screen": bool(np.array_equal(layer.data[inside], corrected_layer[inside])),
        "decision": done.get("decision"), "best_step": done.get("best_step"),
        "current_model": str(w.session.path), "new_model_current": str(w.session.path) == str(done.get("path")),
        "panel_result": panel.result.text(), "finetune_and_resegment_s": round(finetune_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    if args.show_changes:
        result["changes"] = show_changes(app, panel, viewer, image, before, truth, outside)
    if args.screenshot:
        titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
        viewer.layers.selection.active = layer
        shot = Path(args.screenshot)
        for i, tab in enumerate(args.tab.split(",")):
            w.tabs.setCurrentIndex(titles.index(tab))
            t_end = time.perf_counter() + 1.0
            _wait(app, lambda t_end=t_end: time.perf_counter() > t_end, 5, "drawing")
            target = shot if i == 0 else shot.with_name(f"{shot.stem}_{tab.lower().replace('-', '')}{shot.suffix}")
            with atomic_path(target, suffix=".png") as tmp:
                viewer.screenshot(str(tmp), canvas_only=False)
    viewer.close()
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def show_changes(app, panel, viewer, image, before: np.ndarray, truth: np.ndarray, outside: np.ndarray) -> dict | None:
    """'Show what it changes' as the user would click it; of the changed pixels (all, and outside the
    corrected boxes), how many the model before had right and how many the new class makes right."""
    from screenshot import _wait

    if not panel.changes_btn.isEnabled() or not panel.show_changes():
        return None
    _wait(app, lambda: not panel.comparing, 600, "comparing the models")
    changed = np.asarray(viewer.layers[f"{image.name} changes"].data)

    def rights(where: np.ndarray) -> dict:
        n = int(where.sum())
        return {"changed_pixels": n, "right_before": float(np.mean(before[where] == truth[where])) if n else None,
                "right_after": float(np.mean(changed[where] == truth[where])) if n else None}

    return {"status": panel.status.text(), **rights(changed > 0), "outside_boxes": rights((changed > 0) & outside)}


if __name__ == "__main__":
    sys.exit(main())
