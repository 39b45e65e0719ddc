"""Take docs/screenshot.png: napari with the plugin docked on the superalloy sample, segmented.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py

Uses the starter model ``starter-superalloy`` (or ``--model FILE``), shows the Inspect tab with
the phase fractions, and saves the whole window (canvas and dock) atomically (``--every-tab DIR``:
each tab too, and any widget cut off at the dock's width is said on stderr). With
``--finetune STEPS`` it goes round the whole loop first: NASA's labels stand in for the user's
corrections, are added to the training set, the model is fine-tuned in the child process and the
image segmented again (use ``--tab Fine-tune`` to see the loss/IoU plot).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wait(app, until, timeout_s: float, what: str) -> None:
    t0 = time.perf_counter()
    while not until():
        if time.perf_counter() - t0 > timeout_s:
            raise SystemExit(f"screenshot: {what} did not finish within {timeout_s:.0f} s")
        app.processEvents()
        time.sleep(0.01)


def _pause(app, seconds: float) -> None:
    """Let napari draw for ``seconds``."""
    end = time.perf_counter() + seconds
    _wait(app, lambda: time.perf_counter() > end, seconds + 5, "drawing")


def _finetune(app, viewer, widget, args: argparse.Namespace) -> None:
    """NASA's labels as the corrections -> training set -> fine-tune -> new model -> segment again."""
    from napari_csunet.plugin import samples

    ((truth, _, _),) = getattr(samples, f"{args.sample}_labels")()
    from napari_csunet._qt.training_set import WHOLE_IMAGE

    layer = viewer.layers[widget.correct_panel.layer().name]
    layer.data = truth.copy()
    widget.correct_panel.region.set_value(WHOLE_IMAGE)  # every label is right: a fully corrected image
    if widget.correct_panel.add_to_training_set() is None:
        raise SystemExit(f"screenshot: {widget.correct_panel.status.text()}")
    panel = widget.finetune_panel
    panel.form.steps.value = args.finetune
    if not panel.start():
        raise SystemExit(f"screenshot: {panel.status.text()}")
    _wait(app, lambda: not panel.running, 3600, "fine-tuning")
    if panel.offered:  # nothing fair judged it: offered, not made current; take it, as a user would
        panel.use_new_model()
    _wait(app, lambda: not widget.session.busy and not widget.segment_panel.running, 600, "re-segmenting")
    print(panel.status.text(), "|", panel.result.text())


def _queue(app, widget, accept: int) -> None:
    """The Correct tab's queue: regions ranked by uncertainty, ``accept`` of them accepted as is."""
    box = widget.correct_panel.queue
    widget.correct_panel.set_labels_layer(widget.viewer.layers[widget.correct_panel.layer().name])
    if not box.rank():
        raise SystemExit(f"screenshot: {widget.correct_panel.status.text()}")
    _wait(app, lambda: box.queue is not None and not widget.segment_panel.running, 600, "ranking the queue")
    for _ in range(accept):
        box.accept()
    print(box.left.text(), "|", box.where.text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starter-superalloy", help="model file or starter model name")
    parser.add_argument("--sample", default="superalloy", help="napari-csunet sample key")
    parser.add_argument("--image", help="open this image file instead of a sample (pixel size, data bar from it)")
    parser.add_argument("--tab", default="Inspect", help="the dock tab to show")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--every-tab", metavar="DIR", help="also save DIR/<tab>.png of every tab (after --out)")
    parser.add_argument("--size", default="1500x900", help="window size WxH")
    parser.add_argument("--finetune", type=int, default=0, metavar="STEPS", help="fine-tune this many steps first")
    parser.add_argument("--queue", type=int, default=-1, metavar="ACCEPT",
                        help="rank the correction queue and accept this many regions (with --tab Correct)")
    args = parser.parse_args()

    if args.finetune or args.queue >= 0:  # keep the demo's annotations and fine-tuned model out of the user's folders
        scratch = Path(tempfile.mkdtemp(prefix="csunet-screenshot-"))
        os.environ["CSUNET_ANNOTATIONS_DIR"] = str(scratch / "annotations")
        os.environ["CSUNET_MODELS_DIR"] = str(scratch / "models")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_csunet.models.catalog import resolve_model

    kind, path = resolve_model(args.model)
    if kind != "file":
        raise SystemExit(f"screenshot: {args.model!r} is a preset, not a trained model file; pass --model FILE")
    viewer = napari.Viewer(title="napari-csunet")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)
    app = QApplication.instance()
    (image,) = viewer.open(args.image, plugin="napari") if args.image else viewer.open_sample("napari-csunet", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    widget.model_panel.open_file(str(path))
    _wait(app, lambda: widget.session.segmenter is not None and not widget.session.busy, 300, "loading the model")
    widget.segment_panel.segment([image])
    _wait(app, lambda: not widget.segment_panel.running, 600, "segmenting")
    if args.finetune:
        _finetune(app, viewer, widget, args)
    if args.queue >= 0:
        _queue(app, widget, args.queue)
    if widget.inspect_panel.compute() is not None:
        _wait(app, lambda: widget.inspect_panel.worker is None, 300, "measuring")
    titles = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
    widget.tabs.setCurrentIndex(titles.index(args.tab))
    viewer.layers.selection.active = viewer.layers[f"{image.name} labels"]
    _pause(app, 1.0)
    _save(viewer, widget, Path(args.out))
    if args.every_tab:
        for i, title in enumerate(titles):
            widget.tabs.setCurrentIndex(i)
            _pause(app, 0.5)
            _save(viewer, widget, Path(args.every_tab) / f"{title.lower()}.png")
    viewer.close()
    return 0


def _save(viewer, widget, out: Path) -> None:
    """The whole window, atomically; and any widget of the shown tab that is cut off, said on stderr."""
    from napari_csunet._qt.main_widget import clipped_widgets
    from napari_csunet.atomic import atomic_path

    for line in clipped_widgets(widget.tabs.currentWidget()):
        print(f"screenshot: {widget.tabs.tabText(widget.tabs.currentIndex())} tab: cut off: {line}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        viewer.screenshot(str(tmp), canvas_only=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
