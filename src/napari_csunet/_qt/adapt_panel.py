""""Adapt to my images": continue self-supervised pretraining on the user's unlabelled micrographs.

Runs ``csunet_train``'s pretraining job in the training child (napari stays responsive; Stop saves
what was learned). The adapted model is a new pretrained starting point: it appears in the Model
tab's "start from" list, selected, so the next new model for the user's classes starts from it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import napari
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QPushButton, QVBoxLayout, QWidget

from ..loop.training_job import TrainingJob, jobs_dir
from ..models.catalog import user_models_dir
from .common import (
    EventRelay,
    StatusLine,
    form_group,
    hbox,
    image_data,
    is_input_image,
    start_training_child,
)
from .config_form import config_form, form_rows

__all__ = ["AdaptPanel", "ADAPT_STEPS"]

#: a few minutes on a CPU: enough to see the reconstruction loss fall on the user's images
ADAPT_STEPS = 300


class AdaptPanel(QWidget):
    """Steps, Adapt on open images / on a folder, Stop, progress; ``adapted`` gives the new file."""

    adapted = Signal(str)

    def __init__(self, viewer: napari.Viewer, start_model, device, mixed_precision=lambda: True,
                 parent: QWidget | None = None) -> None:
        """``start_model()`` -> path of the pretrained model to continue; ``device()`` -> device name;
        ``mixed_precision()`` -> the Model tab's setting."""
        super().__init__(parent)
        self.viewer, self.start_model, self.device = viewer, start_model, device
        self.mixed_precision = mixed_precision
        self.job: TrainingJob | None = None
        from csunet_train.pretrain_config import PretrainConfig

        self.form = config_form(PretrainConfig, ("steps",), {"steps": ADAPT_STEPS})
        self.open_btn = QPushButton("Adapt on open images")
        self.open_btn.clicked.connect(lambda: self.adapt_on_open_images())
        self.folder_btn = QPushButton("On a folder…")
        self.folder_btn.clicked.connect(lambda: self.adapt_on_folder())
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        self.status = StatusLine("optional: teach the pretrained model your material's look, no labels needed")
        self._events = EventRelay(self._on_event, self)
        box = form_group("Adapt to my images (self-supervised)", [
            *form_rows(self.form), hbox(self.open_btn, self.folder_btn, self.stop_btn), self.status])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)

    @property
    def running(self) -> bool:
        return self.job is not None

    def adapt_on_open_images(self) -> bool:
        """Write the open micrographs to a job folder and adapt on them."""
        from ..images.adaptation_images import AdaptationError, write_images

        layers = [lay for lay in self.viewer.layers if isinstance(lay, napari.layers.Image) and is_input_image(lay)]
        folder = jobs_dir() / f"adapt-images-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            write_images([(lay.name, image_data(lay)) for lay in layers], folder)
        except AdaptationError as exc:
            self.status.error(str(exc))
            return False
        return self.start([folder])

    def adapt_on_folder(self, folder: str | None = None) -> bool:
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder of unlabelled micrographs")
            if not folder:
                return False
        return self.start([folder])

    def start(self, sources: list[Any]) -> bool:
        from csunet_train.config import ConfigError
        from csunet_train.pretrain_config import adaptation_job

        if self.running:
            self.status.error("an adaptation is already running")
            return False
        start = self.start_model()
        if start is None:
            self.status.error("no pretrained model to adapt: micro-tiny is missing from the installation")
            return False
        out = user_models_dir() / f"{Path(start).stem.split('-adapted-')[0]}-adapted-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            spec = adaptation_job(start, sources, f"{out}.safetensors", self.form.steps.value, self.device(),
                                  self.mixed_precision())
        except ConfigError as exc:
            self.status.error(f"cannot start: {exc}")
            return False
        self.job = start_training_child(spec, self._events.event.emit, self.status)
        if self.job is None:
            return False
        self._set_running(True)
        self.status.info(f"adapting {Path(start).stem} in a separate process …")
        return True

    def stop(self) -> None:
        """Ask the child to stop: it saves the model at the current step."""
        if self.job is not None:
            self.job.stop()
            self.stop_btn.setEnabled(False)
            self.status.info("stopping: saving what was learned …")

    def shutdown(self, *_: object) -> None:
        if self.job is not None:
            self.job.kill()

    def _set_running(self, running: bool) -> None:
        for button in (self.open_btn, self.folder_btn):
            button.setEnabled(not running)
        self.stop_btn.setEnabled(running)

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "started":
            self.status.info(f"adapting on {ev.get('train_images')} image(s) on {ev.get('device')} …")
        elif kind == "step":
            self.status.info(f"step {ev['step']}/{ev['steps']} · reconstruction loss {ev['loss']:.3f}", notify=False)
        elif kind == "warning":
            self.status.warning(ev["message"], notify=False)
        elif kind == "error":
            self.status.error(f"adaptation failed: {ev.get('message')}")
        elif kind == "done":
            gain = (ev.get("best_metrics") or {}).get("recon_gain")
            self.status.info(f"adapted model {Path(ev['path']).name} is ready"
                             + (f" (reconstruction gain {gain:.3f})" if gain is not None else "")
                             + ": build a new model for your classes from it, then fine-tune")
            self.adapted.emit(str(ev["path"]))
        elif kind == "exit":
            self.job = None
            self._set_running(False)
