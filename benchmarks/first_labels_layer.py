"""Where the GUI thread goes when the first Labels layer of a session appears.

    xvfb-run -a .venv/bin/python benchmarks/first_labels_layer.py        # napari as it comes
    xvfb-run -a .venv/bin/python benchmarks/first_labels_layer.py warm   # after the plugin's warm-up

Adds a 2048^2 Labels layer with our classes (features table, direct colormap) twice, timing each
``add_labels`` plus one event-loop pass on the GUI thread, and lists the top-level modules napari
imported during each (the first layer's one-time cost). cProfile of the first goes to stderr.
Prints one JSON object with the load average (the timings scale with it).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import threading
import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_csunet._qt.segment_panel import _hide_dominant, _warm_napari_imports
from napari_csunet.plugin.layerdata import labels_kwargs


def _settle(app: QApplication, n: int) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    warm = sys.argv[1:] == ["warm"]
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8), name="bench")
    _settle(app, 50)
    if warm:  # what the Segment panel's worker thread does before a result reaches the GUI
        worker = threading.Thread(target=_warm_napari_imports)
        worker.start()
        worker.join()
    labels = np.random.default_rng(1).integers(1, 4, (2048, 2048), dtype=np.uint8)
    out: dict = {"mode": "warm" if warm else "cold"}
    for n in ("first", "second"):
        kw = labels_kwargs(["a", "b", "c"], ["#ff0000", "#00ff00", "#0000ff"], f"{n} labels")
        kw["colormap"] = _hide_dominant(kw["colormap"], labels)
        before = set(sys.modules)
        profile = cProfile.Profile()
        t = time.perf_counter()
        profile.enable()
        viewer.add_labels(labels, **kw)
        app.processEvents()
        profile.disable()
        out[f"{n}_add_labels_ms"] = round((time.perf_counter() - t) * 1000, 1)
        out[f"{n}_new_top_level_modules"] = sorted(m for m in set(sys.modules) - before if "." not in m)
        if n == "first":
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(25)
            print(text.getvalue(), file=sys.stderr)
        _settle(app, 30)
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
