"""Seconds from a correction to an updated prediction, and the GUI thread's longest stall meanwhile.

    xvfb-run -a .venv/bin/python benchmarks/live_update.py --json

The real dock widget on a 1024² micrograph (the EBC sample, NASA EBC2 test image) with a
csunet-tiny model file (``starter-ebc`` by default): segment with uncertainty, rank the
correction queue, switch the live update on, paint NASA's labels into the first region (as napari's
brush writes pixels: ``data_setitem``). The clock runs from the paint to the re-segmented
image (saving the annotation, the training child with the live defaults, model load, segmenting
again); a second later the user presses Next. Stalls are the lateness of a 10 ms timer on the GUI
thread (see gui_responsiveness.py) from 0.1 s after the paint on (``max_stall_ms``), and in that
first 0.1 s (``paint_max_stall_ms``: napari drawing the painted pixels); ``napari_pan_stall_ms`` is
napari's own redraw after a camera move, the floor of any stall that changes the canvas.
The JSON records the machine's load average: both numbers grow with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_responsiveness import StallMeter, _ensure_display, _wait  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="csunet-live-"))
    for key, sub in (("CSUNET_MODELS_DIR", "models"), ("CSUNET_ANNOTATIONS_DIR", "annotations"),
                     ("CSUNET_CONFIG_DIR", "config")):
        os.environ[key] = str(tmp / sub)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_csunet.models.catalog import resolve_model
    from napari_csunet.plugin.samples import ebc, ebc_labels

    viewer = napari.Viewer(show=True)
    try:
        return _measure(args, viewer, QApplication.instance(), resolve_model, ebc, ebc_labels)
    finally:
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args: argparse.Namespace, viewer, app, resolve_model, ebc, ebc_labels) -> dict:
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    _, w = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    ((pixels, meta, _),) = ebc()
    image = viewer.add_image(pixels, name="ebc")
    w.model_panel.open_file(str(resolve_model(args.model)[1]))
    _wait(app, lambda: w.session.segmenter is not None and not w.session.busy, 300, "loading the model")
    w.segment_panel.want_uncertainty.setChecked(True)
    w.segment_panel.segment([image])
    segment_s = _wait(app, lambda: not w.segment_panel.running, 1800, "segmenting")
    w.correct_panel.set_labels_layer(viewer.layers["ebc labels"])
    box, live = w.correct_panel.queue, w.correct_panel.live
    if not box.rank():
        raise RuntimeError(w.correct_panel.status.text())
    live.params = {"steps": args.steps} if args.steps else {}
    live.toggle.setChecked(True)
    model_before = w.session.path
    layer = viewer.layers["ebc labels"]
    r0, c0, r1, c1 = box.queue.region().box
    truth = ebc_labels()[0][0][r0:r1, c0:c1]
    marks: dict[str, float] = {}

    def mark(what: str) -> None:
        marks.setdefault(what, round(time.perf_counter() - t0, 2))

    box.corrected.connect(lambda: mark("saved"))
    live._relay.event.connect(lambda ev: mark(f"child {ev.get('event')}"))
    w.session.changed.connect(lambda: mark("model loaded"))
    w.segment_panel.segmented.connect(lambda _written: mark("segmented"))
    meter = StallMeter()
    t0 = time.perf_counter()
    meter.start("paint")  # the user corrects the region: NASA's labels, as napari's brush writes them
    rows, cols = np.nonzero(truth != layer.data[r0:r1, c0:c1])
    layer.data_setitem((rows + r0, cols + c0), truth[rows, cols])
    _wait(app, lambda: time.perf_counter() > t0 + 0.1, 5, "")  # napari shows the painted pixels
    meter.start("live")  # the region is saved 0.3 s after the last stroke; the live update starts
    _wait(app, lambda: time.perf_counter() > t0 + 1.0, 5, "")
    t_next = time.perf_counter()
    box.next()  # the user moves on to the next region meanwhile
    next_ms = (time.perf_counter() - t_next) * 1000
    _wait(app, lambda: live.live.cycles >= 1 or "not saved" in w.correct_panel.status.text(), 120, "the save")
    _wait(app, lambda: not live.live.running, 3600, "the live update")
    total_s = time.perf_counter() - t0
    t_end = time.perf_counter() + 0.5
    _wait(app, lambda: time.perf_counter() > t_end, 5, "")
    meter.start("pan")  # napari alone: the canvas moved to another region (what every Next redraws)
    viewer.camera.center = (viewer.camera.center[0] + 256, viewer.camera.center[1] + 256)
    t_end = time.perf_counter() + 0.5
    _wait(app, lambda: time.perf_counter() > t_end, 5, "")
    meter.stop()
    lateness = np.array(meter.lateness["live"])
    return {
        "seconds_correction_to_updated_prediction": round(total_s, 1),
        "updated": w.session.path != model_before, "state": live.state.text(),
        "next_call_ms": round(next_ms, 1),
        "max_stall_ms": round(float(lateness.max()), 1),
        "paint_max_stall_ms": round(float(np.max(meter.lateness["paint"])), 1),
        "napari_pan_stall_ms": round(float(np.max(meter.lateness["pan"])), 1),
        "p99_stall_ms": round(float(np.percentile(lateness, 99)), 1),
        "worst_stalls": meter.worst("live"), "ticks": int(lateness.size), "tick_ms": 10,
        "seconds_into_the_cycle": marks, "train_steps": (live.last_done or {}).get("steps"),
        "train_s": (live.last_done or {}).get("train_time_s"),
        "child_s": (live.last_done or {}).get("elapsed_s"), "best_step": (live.last_done or {}).get("best_step"),
        "load_average_1min_at_start": load_at_start,
        "first_segment_s": round(segment_s, 1), "image": meta.get("name", "ebc"), "shape": list(pixels.shape),
        "model": args.model, "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default="starter-ebc", help="a csunet-tiny model file or starter name")
    parser.add_argument("--steps", type=int, default=None, help="training steps of one live update (default: "
                        "napari_csunet.loop.live_update.LIVE_OVERRIDES)")
    args = parser.parse_args()
    _ensure_display()
    result = run(args)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
