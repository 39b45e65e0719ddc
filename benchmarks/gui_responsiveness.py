"""How long does napari's GUI thread stall while the plugin segments and fine-tunes?

Drives the real dock widget (buttons' callbacks, the real inference worker and training child) on
a 2048 x 2048 micrograph and measures the lateness of a 10 ms QTimer on the GUI thread: any
lateness is time the user could not pan, zoom or click. Prints one JSON object with --json.

    xvfb-run -a .venv/bin/python benchmarks/gui_responsiveness.py --json

Without a display it re-runs itself under xvfb-run. The model is a csunet-tiny (or --preset) with
random weights: responsiveness does not depend on what the weights say. Stalls scale with what
else runs on the machine: the JSON records the load average; ``worst_stalls_*`` say when (seconds
into the phase) the longest stalls happened. The segment phase includes napari creating the first
Labels layer of the session (its layer controls and visuals: a one-time cost).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TICK_MS = 10


def _ensure_display() -> None:
    if os.environ.get("DISPLAY") or os.environ.get("CSUNET_BENCH_CHILD") or sys.platform != "linux":
        return
    if shutil.which("xvfb-run") is None:
        sys.exit("no display and no xvfb-run: run under a display or install xvfb")
    env = dict(os.environ, CSUNET_BENCH_CHILD="1")
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    sys.exit(subprocess.run(cmd, env=env).returncode)


def _model_file(folder: Path, preset: str) -> Path:
    import torch

    from napari_csunet.modelfile import ModelInfo, save_model_file
    from napari_csunet.models import build_model, get_preset

    torch.manual_seed(0)
    config = get_preset(preset).config
    path = folder / f"bench-{preset}.safetensors"
    save_model_file(path, build_model(config), ModelInfo(config, ["matrix", "secondary", "tertiary"],
                                                         preset=preset, name=f"bench-{preset}"))
    return path


class StallMeter:
    """A 10 ms timer on the GUI thread; lateness of each tick, grouped by phase."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.phase: str | None = None
        self.lateness: dict[str, list[float]] = {}
        self.when: dict[str, list[float]] = {}
        self.t0: dict[str, float] = {}
        self.last = time.perf_counter()

    def start(self, phase: str) -> None:
        self.phase = phase
        self.lateness.setdefault(phase, [])
        self.when.setdefault(phase, [])
        self.last = self.t0[phase] = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.phase = None

    def worst(self, phase: str, n: int = 5) -> list[list[float]]:
        """The ``n`` longest stalls of a phase as [seconds into the phase, ms]."""
        order = np.argsort(self.lateness[phase])[::-1][:n]
        return [[round(self.when[phase][i], 2), round(self.lateness[phase][i], 1)] for i in order]

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.phase is not None:
            self.lateness[self.phase].append(max(0.0, (now - self.last) * 1000 - TICK_MS))
            self.when[self.phase].append(now - self.t0[self.phase])
        self.last = now


def _wait(app, until, timeout_s: float, what: str) -> float:
    t0 = time.perf_counter()
    while not until():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="csunet-bench-"))
    for key, sub in (("CSUNET_MODELS_DIR", "models"), ("CSUNET_ANNOTATIONS_DIR", "annotations"),
                     ("CSUNET_CONFIG_DIR", "config")):
        os.environ[key] = str(tmp / sub)
    model = _model_file(tmp, args.preset)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_csunet.samples import superalloy

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _, w = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    reps = -(-args.size // 512)
    image = viewer.add_image(np.tile(superalloy()[0][0], (reps, reps))[: args.size, : args.size], name="bench")
    w.model_panel.open_file(str(model))
    _wait(app, lambda: w.session.segmenter is not None and not w.session.busy, 300, "loading the model")
    meter = StallMeter()

    meter.start("segment")
    w.segment_panel.segment([image])
    segment_s = _wait(app, lambda: not w.segment_panel.running, 1800, "segmenting")
    t_end = time.perf_counter() + 0.5  # the first redraws of the new layer
    _wait(app, lambda: time.perf_counter() > t_end, 5, "")
    meter.stop()

    labels = viewer.layers["bench labels"]
    labels.data[100:400, 100:400] = 3
    labels.refresh()
    if w.correct_panel.add_to_training_set() is None:
        raise RuntimeError(w.correct_panel.status.text())
    ft = w.finetune_panel
    ft.form.steps.value = args.steps
    ft.form.crop.value = 256
    ft.form.batch_size.value = 2
    meter.start("finetune")
    if not ft.start():
        raise RuntimeError(ft.status.text())
    finetune_s = _wait(app, lambda: ft.last_done is not None or (not ft.running and ft.status.kind == "error"),
                       3600, "fine-tuning")
    if ft.last_done is None:
        raise RuntimeError(ft.status.text())
    # then: the new model loads, the 2048^2 image is segmented again
    reload_s = _wait(app, lambda: not ft.running and not w.session.busy and not w.segment_panel.running
                     and w.session.path != model, 1800, "reloading and re-segmenting")
    meter.stop()

    seg, fin = np.array(meter.lateness["segment"]), np.array(meter.lateness["finetune"])
    both = np.concatenate([seg, fin])
    result = {
        "max_stall_ms_segment": round(float(seg.max()), 1),
        "max_stall_ms_finetune": round(float(fin.max()), 1),
        "p99_stall_ms": round(float(np.percentile(both, 99)), 1),
        "p99_stall_ms_segment": round(float(np.percentile(seg, 99)), 1),
        "p99_stall_ms_finetune": round(float(np.percentile(fin, 99)), 1),
        "stalls_over_100ms": int((both > 100).sum()),
        "worst_stalls_segment": meter.worst("segment"), "worst_stalls_finetune": meter.worst("finetune"),
        "ticks": int(both.size), "tick_ms": TICK_MS,
        "goal_ms": 100,
        "segment_s": round(segment_s, 2), "finetune_s": round(finetune_s, 2),
        "reload_and_resegment_s": round(reload_s, 2),
        "image": [args.size, args.size], "preset": args.preset, "steps": args.steps,
        "device": str(w.session.segmenter.device), "train_device": (ft.last_started or {}).get("device"),
        "cpus": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "qt_api": os.environ.get("QT_API") or __import__("qtpy").API_NAME,
    }
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--preset", default="csunet-tiny")
    parser.add_argument("--size", type=int, default=2048, help="side of the square test image")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps")
    args = parser.parse_args()
    _ensure_display()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
