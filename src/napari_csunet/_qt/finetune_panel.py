"""Fine-tune panel: train the current model on the annotation set in a child process.

The training backend runs as ``python -m csunet_train.job`` (never in napari's interpreter, never
on the GUI thread); its JSON-lines events drive a live loss / validation-IoU plot and a status
line. Validation is on held-out corrected/accepted pixels only. Stop saves the best model. When
the child is done and beat the current model, the new model becomes the current one, the image is
segmented again with the user's painted corrections kept on top, and the scores on the corrected
pixels before/after are shown; when it did not, the panel says so and keeps the current model.
A crash or an out-of-memory in the child shows its message; napari and the annotations are untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

from ..jobs import TrainingJob
from ..model_catalog import user_models_dir
from ..settings import save_settings
from .common import EventRelay, StatusLine, form_group, hbox, start_training_child
from .config_form import config_form, form_rows, form_values
from .finetune_text import before_after, duration, held_out, iou, stem
from .plot import TrainingPlot
from .segment_panel import IMAGE, PREDICTION, SegmentPanel, painted_pixels
from .session import ModelSession

__all__ = ["FinetunePanel", "DEFAULTS"]

#: loss weight of the uncorrected predicted pixels next to the corrected ones, as TrainConfig's
#: default (docs/training.md: 0.3 kept the rest of the image from getting worse; 0 did not)
PSEUDO_WEIGHT = 0.3

#: the TrainConfig fields the form offers (the rest: the job's defaults, or set below)
FORM_FIELDS = ("steps", "lr", "crop", "batch_size", "aug_strength", "freeze_cnn", "freeze_swin")

#: good defaults for a few corrected images (a CPU finishes them in minutes, a GPU in seconds)
DEFAULTS: dict[str, Any] = {"steps": 200, "lr": 3e-4, "crop": 256, "batch_size": 4, "aug_strength": 0.5,
                            "freeze_cnn": False, "freeze_swin": False, "pseudo_weight": PSEUDO_WEIGHT}


class FinetunePanel(QWidget):
    """Hyper-parameters, Start/Stop, live plot, status, before/after."""

    #: emitted with the new model file once it is loaded
    trained = Signal(str)

    def __init__(self, viewer: napari.Viewer, session: ModelSession, segment: SegmentPanel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self.segment_panel = viewer, session, segment
        from csunet_train.config import TrainConfig

        values = DEFAULTS | {k: v for k, v in session.settings.finetune.items() if k in DEFAULTS}
        self.form = config_form(TrainConfig, FORM_FIELDS, values)  # limits and help from TrainConfig
        self.pseudo_weight = float(values["pseudo_weight"])  # no widget: a setting for experts and benchmarks
        self.start_btn = QPushButton("Start fine-tuning")
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn = QPushButton("Stop (keep best)")
        self.stop_btn.clicked.connect(lambda: self.stop())
        self.stop_btn.setEnabled(False)
        self.plot = TrainingPlot()
        self.status = StatusLine("add corrected images in the Correct tab, then start")
        self.result = StatusLine()

        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Fine-tune on the training set",
                                    [*form_rows(self.form), hbox(self.start_btn, self.stop_btn)]))
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        layout.addWidget(self.result)
        layout.addStretch(1)

        self.job: TrainingJob | None = None
        self.last_done: dict[str, Any] | None = None
        self.last_started: dict[str, Any] | None = None
        self.last_scores: dict[str, Any] | None = None
        self._relay = EventRelay(self._on_event, self)
        session.busy_changed.connect(self._update_enabled)
        session.changed.connect(self._update_enabled)
        self._update_enabled()

    @property
    def running(self) -> bool:
        return self.job is not None

    def _update_enabled(self, *_: object) -> None:
        self.start_btn.setEnabled(not self.running and self.session.segmenter is not None and not self.session.busy)

    def params(self) -> dict[str, Any]:
        return form_values(self.form) | {"pseudo_weight": self.pseudo_weight}

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> bool:
        """Check everything, save an unsaved model first, then launch the child. True if started."""
        info, store = self.session.info, self.session.annotations
        if self.running:
            self.status.error("a fine-tuning job is already running")
            return False
        if info is None:
            self.status.error("no model: load or build one in the Model tab first")
            return False
        pairs = store.pairs()
        if not pairs:
            self.status.error("the training set is empty: correct an image and 'Add to training set' first")
            return False
        if store.class_names != list(info.class_names):
            self.status.error(f"the training set has classes {store.class_names} but the model has "
                              f"{list(info.class_names)}; load a model with these classes or start a new set")
            return False
        self.session.settings.finetune = self.params()
        save_settings(self.session.settings)
        if self.session.path is None or self.session.unsaved:
            base = user_models_dir() / f"{stem(info.name or info.preset or 'model')}-base.safetensors"
            self.status.info(f"saving the current model to {base} first …")
            return self.session.save(base, on_done=lambda: self._launch(pairs)) is not None
        return self._launch(pairs)

    def _launch(self, pairs: list[dict[str, str]]) -> bool:
        from csunet_train.config import ConfigError, TrainConfig

        info, store = self.session.info, self.session.annotations
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = stem(info.name or info.preset or "model").split("-ft-")[0]
        out = user_models_dir() / f"{base}-ft-{stamp}.safetensors"
        params = self.params()
        spec = {"mode": "finetune", "model": str(self.session.path), "pairs": pairs, "val_pairs": None,
                "class_names": list(info.class_names), "class_colors": store.class_colors or list(info.class_colors),
                "eval_every": max(1, min(50, params["steps"] // 10)), "device": self.session.settings.device,
                "amp": self.session.settings.mixed_precision, "out": str(out), "name": f"{base}-ft-{stamp}",
                "description": f"fine-tuned from {Path(self.session.path).name} on {len(pairs)} image(s)"} | params
        try:
            TrainConfig.from_dict(spec)
        except ConfigError as exc:
            self.status.error(f"cannot start: {exc}")
            return False
        self.plot.clear(params["steps"])
        self.result.info("")
        self.last_done, self.last_scores = None, None
        self.job = start_training_child(spec, self._relay.event.emit, self.status)
        if self.job is None:
            return False
        self.stop_btn.setEnabled(True)
        self._update_enabled()
        self.status.info(f"starting the training process ({len(pairs)} image(s)) …")
        return True

    def stop(self) -> None:
        """Ask the child to stop: it saves the best model so far and exits."""
        if self.job is not None:
            self.job.stop()
            self.stop_btn.setEnabled(False)
            self.status.info("stopping: saving the best model …")

    def shutdown(self, *_: object) -> None:
        """napari is closing: end the child (the annotations and saved checkpoints stay on disk)."""
        if self.job is not None:
            self.job.kill()

    # -- events --------------------------------------------------------------------------------

    def _on_event(self, ev: dict[str, Any]) -> None:
        handler = getattr(self, f"_ev_{ev['event']}", None)
        if handler is not None:
            handler(ev)

    def _ev_started(self, ev: dict) -> None:
        self.last_started = ev
        self.plot.clear(ev.get("steps") or self.form.steps.value)
        self.status.info(f"training on {ev.get('device')}: {ev.get('train_images')} training / "
                         f"{ev.get('val_images')} validation image(s)")

    def _ev_step(self, ev: dict) -> None:
        self.plot.add_loss(ev["step"], ev.get("loss"))
        speed = ev.get("images_per_s")
        self.status.info(f"step {ev['step']}/{ev.get('steps')} · loss {ev.get('loss') or float('nan'):.4f}"
                         + (f" · {speed:.1f} img/s" if speed else "") + f" · ETA {duration(ev.get('eta_s'))}")

    def _ev_eval(self, ev: dict) -> None:
        metrics = ev.get("metrics") or {}
        self.plot.add_val(ev["step"], metrics.get("miou"), bool(ev.get("best")))
        if ev["step"] == 0:
            self.result.info(f"before: {held_out(metrics)} {iou(metrics)}" if metrics else
                             "no validation: too few corrected pixels to hold some out")

    def _ev_checkpoint(self, ev: dict) -> None:
        if ev.get("metrics"):
            self.result.info(f"best so far at step {ev['step']}: {held_out(ev['metrics'])} {iou(ev['metrics'])}")

    def _ev_warning(self, ev: dict) -> None:
        self.status.warning(f"training: {ev.get('message')}")

    def _ev_error(self, ev: dict) -> None:
        self.status.error(f"training failed ({ev.get('kind', 'error')}): {ev.get('message')}")

    def _ev_done(self, ev: dict) -> None:
        self.last_done = ev
        before, best, steps = ev.get("initial_metrics"), ev.get("best_metrics"), ev.get("steps")
        how = f"{'stopped' if ev.get('stopped') else 'finished'} after {steps} steps"
        path = ev.get("path")
        if before and ev.get("best_step") == 0:  # validated, and nothing beat the current model
            if path and Path(path).exists() and self.session.path and Path(path) != Path(self.session.path):
                Path(path).unlink()  # the starting weights again: do not list an identical "new" model
            self.result.warning(f"no improvement on the held-out corrected pixels ({held_out(before)} "
                                f"{before_after(before, best)}, {how}): kept the current model "
                                f"{self.session.path.name if self.session.path else ''}. Correct more pixels "
                                "or train more steps", notify=True)
            self.status.info("the current model is unchanged")
            return
        if before:
            self.result.info(f"{held_out(before)} {before_after(before, best)} "
                             f"(best at step {ev.get('best_step')}, {how})")
        else:
            self.result.info(f"no held-out validation (too few corrected pixels): trained all steps and kept "
                             f"the last model ({how})")
        if not path or not Path(path).exists():
            self.status.error("training ended without saving a model (no step finished)")
            return
        self.status.info(f"loading the fine-tuned model {Path(path).name} …")
        if self.session.load_file(path, on_done=lambda: self._after_load(path)) is None:
            self.status.warning(f"the fine-tuned model is saved as {path}; load it from the Model tab")

    def _after_load(self, path: str) -> None:
        self.trained.emit(path)
        layers = self._images_to_resegment()
        self.status.info(f"new model {Path(path).name} is current" + ("; segmenting again …" if layers else ""))
        old = {layer.name: self.segment_panel.prediction_of(layer) for layer in layers}
        if layers and self.segment_panel.segment(
                layers, on_done=lambda written: self._resegmented(path, written, old), keep=self._corrections) is None:
            self.status.warning(f"new model {Path(path).name} is current; segment again in the Segment tab")

    def _corrections(self, layer) -> np.ndarray | None:
        """What stays on screen: pixels painted in ``layer`` and those the training set holds for its image."""
        painted = painted_pixels(layer)
        vouched = self.session.annotations.vouched(layer.metadata.get(IMAGE))
        if vouched is not None and vouched.shape == layer.data.shape:
            return vouched if painted is None else painted | vouched
        return painted

    def _resegmented(self, path: str, written: list, old: dict) -> None:
        names = ", ".join(layer.name for layer in written)
        self.status.info(f"new model {Path(path).name} is current" + (
            f"; segmented again: {names} (your painted corrections are kept; Revert shows the new prediction)"
            if names else ""))
        for layer in written:
            image = layer.metadata.get(IMAGE)
            before = self.session.annotations.score(image, old.get(image))
            after = self.session.annotations.score(image, layer.metadata.get(PREDICTION))
            if before is not None and after is not None:
                n = before["pixels"]
                self.result.info(self.result.text() + f"\non the {n:,} corrected/accepted px of {image} (training "
                                 f"and held-out): {before_after(before, after)}")
                self.last_scores = {"image": image, "pixels": n, "before": before, "after": after}

    def _images_to_resegment(self) -> list:
        """The image of the Correct tab's labels layer, else the Segment tab's choice."""
        layer = self.session.correcting
        name = layer.metadata.get(IMAGE) if layer is not None else None
        if name in self.viewer.layers:
            return [self.viewer.layers[name]]
        return self.segment_panel.targets()

    def _ev_exit(self, ev: dict) -> None:
        self.job = None
        self.stop_btn.setEnabled(False)
        self._update_enabled()
