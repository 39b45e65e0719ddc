"""How long does napari's GUI thread stall while the plugin loads a model, segments, adds to the
training set, fine-tunes and measures?

Drives the real dock widget (buttons' callbacks, the real inference worker and training child) on
a 2048 x 2048 micrograph and measures the lateness of a 10 ms QTimer on the GUI thread: any
lateness is time the user could not pan, zoom or click. Prints one JSON object with --json: the
longest stall of each phase (``max_stall_ms_{load,segment,add,finetune,inspect}``). ``--trace``
adds where the GUI thread was during the longest stalls (a watchdog thread samples its stack).

    xvfb-run -a .venv/bin/python benchmarks/gui_responsiveness.py --json

Without a display it re-runs itself under xvfb-run. The model is a csunet-tiny (or --preset) with
random weights: responsiveness does not depend on what the weights say. Stalls scale with what
else runs on the machine: the JSON records the load average; ``worst_stalls_*`` say when (seconds
into the phase) the longest stalls happened; ``gc_full_ms_*`` the length of each full pass of Python's
garbage collector in the phase (it holds the GIL: the GUI thread waits). The segment phase includes napari creating the first
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
import threading
import time
import traceback
from pathlib import Path

import numpy as np

TICK_MS = 10
PHASES = ("dock", "load", "segment", "add", "finetune", "inspect")


def _ensure_display() -> None:
    if os.environ.get("DISPLAY") or os.environ.get("CSUNET_BENCH_CHILD") or sys.platform != "linux":
        return
    if shutil.which("xvfb-run") is None:
        sys.exit("no display and no xvfb-run: run under a display or install xvfb")
    env = dict(os.environ, CSUNET_BENCH_CHILD="1")
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    sys.exit(subprocess.run(cmd, env=env).returncode)


def _model_file(folder: Path, preset: str) -> Path:
    """Written by a child process: torch is first imported by the plugin's load, as in a user's session."""
    path = folder / f"bench-{preset}.safetensors"
    subprocess.run([sys.executable, __file__, "--make-model", str(path), "--preset", preset], check=True)
    return path


def _write_model_file(path: Path, preset: str) -> None:
    import torch

    from napari_csunet.models import build_model, get_preset
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    torch.manual_seed(0)
    config = get_preset(preset).config
    save_model_file(path, build_model(config), ModelInfo(config, ["matrix", "secondary", "tertiary"],
                                                         preset=preset, name=f"bench-{preset}"))


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
        self.profile_dir: Path | None = None
        self.profiler = None
        #: Python's cyclic garbage collections per phase, [generation, ms]: a full (generation 2) pass
        #: holds the GIL, so it stalls the GUI thread whichever thread triggered it
        self.collections: dict[str, list[list[float]]] = {}
        self._gc_started = 0.0
        import gc

        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.phase is not None:
            ms = (time.perf_counter() - self._gc_started) * 1000
            self.collections.setdefault(self.phase, []).append([info["generation"], round(ms, 1)])

    def start(self, phase: str) -> None:
        print(f"gui_responsiveness: {phase} …", file=sys.stderr, flush=True)
        self._dump_profile()
        if self.profile_dir is not None:
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()
        self.phase = phase
        self.lateness.setdefault(phase, [])
        self.when.setdefault(phase, [])
        self.last = self.t0[phase] = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self._dump_profile()
        self.timer.stop()
        self.phase = None

    def _dump_profile(self) -> None:
        """``--profile DIR``: the GUI thread's calls during the phase that ends, in ``DIR/<phase>.prof``."""
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(str(self.profile_dir / f"{self.phase}.prof"))
            self.profiler = None

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


class StallTracer:
    """A thread that samples the GUI thread's stack while it is late by more than ``over_ms``: where
    each phase's stalls were spent, as (phase, innermost frames of the plugin or napari) -> samples."""

    def __init__(self, meter: StallMeter, over_ms: float = 30.0, every_ms: float = 5.0) -> None:
        self.meter, self.over, self.every = meter, over_ms / 1000, every_ms / 1000
        self.gui = threading.main_thread().ident
        self.samples: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="stall-tracer", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            phase = self.meter.phase
            if phase is None or time.perf_counter() - self.meter.last < self.over:
                continue
            frame = sys._current_frames().get(self.gui)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "napari_csunet" in f.filename or "/napari/" in f.filename][-3:]
            key = (phase, " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(ours))
                   + f" | {Path(stack[-1].filename).name}:{stack[-1].lineno} {stack[-1].name}")
            self.samples[key] = self.samples.get(key, 0) + 1

    def top(self, n: int = 6) -> dict[str, list[list]]:
        self._stop.set()
        out: dict[str, list[list]] = {}
        for (phase, where), count in sorted(self.samples.items(), key=lambda kv: -kv[1]):
            if len(out.setdefault(phase, [])) < n:
                out[phase].append([round(count * self.every * 1000), where])
        return out


def _wait(app, until, timeout_s: float, what: str) -> float:
    t0 = time.perf_counter()
    while not until():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - t0


def _settler(app, seconds: float = 0.5):
    """Keep the event loop (and the meter) running a moment after a phase: its first redraws count."""
    def settle() -> None:
        t_end = time.perf_counter() + seconds
        _wait(app, lambda: time.perf_counter() > t_end, seconds + 5, "")
    return settle


def run(args: argparse.Namespace) -> dict:
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    tmp = Path(tempfile.mkdtemp(prefix="csunet-bench-"))
    for key, sub in (("CSUNET_MODELS_DIR", "models"), ("CSUNET_ANNOTATIONS_DIR", "annotations"),
                     ("CSUNET_CONFIG_DIR", "config")):
        os.environ[key] = str(tmp / sub)
    model = _model_file(tmp, args.preset)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_csunet.plugin.samples import superalloy

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    reps = -(-args.size // 512)
    image = viewer.add_image(np.tile(superalloy()[0][0], (reps, reps))[: args.size, : args.size], name="bench")
    meter = StallMeter()
    if args.profile:
        meter.profile_dir = Path(args.profile)
        meter.profile_dir.mkdir(parents=True, exist_ok=True)
    tracer = StallTracer(meter) if args.trace else None
    settle = _settler(app)
    settle()

    meter.start("dock")  # the dock's widgets, and what it imports ahead in the background (torch)
    _, w = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    dock_s = _wait(app, lambda: not w.warm_up.is_alive(), 300, "the dock's warm-up")
    settle()

    meter.start("load")  # torch, the model file, the model on its device: on a worker thread
    w.model_panel.open_file(str(model))
    load_s = _wait(app, lambda: w.session.segmenter is not None and not w.session.busy, 300, "loading the model")
    settle()

    meter.start("segment")  # includes napari making the session's first Labels layer
    w.segment_panel.segment([image])
    segment_s = _wait(app, lambda: not w.segment_panel.running, 1800, "segmenting")
    settle()

    labels = viewer.layers["bench labels"]
    labels.data[100:400, 100:400] = 3
    labels.refresh()
    meter.start("add")  # the button: the image, its labels and mask written on a worker thread
    w.correct_panel.add_btn.click()
    add_s = _wait(app, lambda: len(w.session.annotations) > 0 and not w.correct_panel.writer.busy, 120,
                  "adding to the training set")
    settle()

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
    if ft.offered:  # painted pixels only: nothing fair judged it, so it is offered; the user takes it
        ft.use_new_model()
    # then: the new model loads, the 2048^2 image is segmented again
    reload_s = _wait(app, lambda: not ft.running and not w.session.busy and not w.segment_panel.running
                     and w.session.path != model and ft.resegmented is not None, 1800, "reloading and re-segmenting")
    settle()

    meter.start("inspect")  # statistics and plots on a worker thread, the table on the GUI thread
    w.inspect_panel.labels.choose("bench labels")
    if w.inspect_panel.compute() is None:
        raise RuntimeError(w.inspect_panel.status.text())
    inspect_s = _wait(app, lambda: w.inspect_panel.worker is None, 600, "measuring")
    settle()
    meter.stop()

    lateness = {phase: np.array(meter.lateness[phase]) for phase in PHASES}
    every = np.concatenate(list(lateness.values()))
    result = {
        **{f"max_stall_ms_{phase}": round(float(lateness[phase].max()), 1) for phase in PHASES},
        "p99_stall_ms": round(float(np.percentile(every, 99)), 1),
        **{f"p99_stall_ms_{phase}": round(float(np.percentile(lateness[phase], 99)), 1) for phase in PHASES},
        "stalls_over_50ms": int((every > 50).sum()), "stalls_over_100ms": int((every > 100).sum()),
        **{f"worst_stalls_{phase}": meter.worst(phase) for phase in PHASES},
        **{f"gc_full_ms_{phase}": [ms for gen, ms in meter.collections.get(phase, []) if gen == 2] for phase in PHASES},
        "ticks": int(every.size), "tick_ms": TICK_MS,
        "goal_ms": 50,
        "dock_s": round(dock_s, 2), "load_s": round(load_s, 2), "segment_s": round(segment_s, 2), "add_s": round(add_s, 2),
        "finetune_s": round(finetune_s, 2), "reload_and_resegment_s": round(reload_s, 2),
        "inspect_s": round(inspect_s, 2),
        "image": [args.size, args.size], "preset": args.preset, "steps": args.steps,
        "device": str(w.session.segmenter.device), "train_device": (ft.last_started or {}).get("device"),
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": load_at_start,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "qt_api": os.environ.get("QT_API") or __import__("qtpy").API_NAME,
    }
    if tracer is not None:
        result["where_stalled_ms"] = tracer.top()
    _report(result, args.json)  # before closing the viewer: a crash on the way out loses nothing
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--preset", default="csunet-tiny")
    parser.add_argument("--size", type=int, default=2048, help="side of the square test image")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps")
    parser.add_argument("--trace", action="store_true", help="also say where the GUI thread was during stalls")
    parser.add_argument("--profile", metavar="DIR", help="write the GUI thread's cProfile of each phase to "
                        "DIR/<phase>.prof (slows Python code: for finding causes, not for the numbers)")
    parser.add_argument("--make-model", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_model:
        _write_model_file(Path(args.make_model), args.preset)
        return 0
    _ensure_display()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
