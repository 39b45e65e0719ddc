"""Seconds from a correction to an updated prediction, and the GUI thread's longest stall meanwhile.

    xvfb-run -a .venv/bin/python benchmarks/live_update.py --json

The real dock widget on a 1024² micrograph (the EBC sample, NASA EBC2 test image) with a
csunet-tiny model file (``starter-ebc`` by default): segment with uncertainty, rank the
correction queue, switch the live update on, paint NASA's labels into the first region and press
Next. The clock runs from Next to the re-segmented image (training child with the live defaults, model load, segmenting
again); stalls are the lateness of a 10 ms timer on the GUI thread (see gui_responsiveness.py).
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

    from napari_csunet.model_catalog import resolve_model
    from napari_csunet.samples import ebc, ebc_labels

    viewer = napari.Viewer(show=True)
    try:
        return _measure(args, viewer, QApplication.instance(), resolve_model, ebc, ebc_labels)
    finally:
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args: argparse.Namespace, viewer, app, resolve_model, ebc, ebc_labels) -> dict:
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
    live.params = {"steps": args.steps}
    live.toggle.setChecked(True)
    model_before = w.session.path
    layer = viewer.layers["ebc labels"]
    r0, c0, r1, c1 = box.queue.region().box
    data = layer.data.copy()
    data[r0:r1, c0:c1] = ebc_labels()[0][0][r0:r1, c0:c1]  # the user corrects the region: NASA's labels
    meter = StallMeter()
    meter.start("live")
    layer.data = data
    t0 = time.perf_counter()
    box.next()  # the painted region is saved; the live update starts
    accept_ms = (time.perf_counter() - t0) * 1000
    _wait(app, lambda: not live.live.running, 3600, "the live update")
    total_s = time.perf_counter() - t0
    t_end = time.perf_counter() + 0.5
    _wait(app, lambda: time.perf_counter() > t_end, 5, "")
    meter.stop()
    lateness = np.array(meter.lateness["live"])
    return {
        "seconds_correction_to_updated_prediction": round(total_s, 1),
        "updated": w.session.path != model_before, "state": live.state.text(),
        "next_call_ms": round(accept_ms, 1),
        "max_stall_ms": round(float(lateness.max()), 1), "p99_stall_ms": round(float(np.percentile(lateness, 99)), 1),
        "worst_stalls": meter.worst("live"), "ticks": int(lateness.size), "tick_ms": 10,
        "train_steps": args.steps, "train": (live.last_done or {}).get("train_time_s"),
        "first_segment_s": round(segment_s, 1), "image": meta.get("name", "ebc"), "shape": list(pixels.shape),
        "model": args.model, "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default="starter-ebc", help="a csunet-tiny model file or starter name")
    parser.add_argument("--steps", type=int, default=30, help="training steps of one live update")
    args = parser.parse_args()
    _ensure_display()
    result = run(args)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
