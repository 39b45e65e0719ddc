"""The Fine-tune tab's *Show what it changes*: a layer per open image that marks the pixels whose
class a fine-tuned model changes, drawn in the class it changes them to.

An offered model comes with "look at those areas with it, then keep it or revert"; these layers
are those areas. They are outputs (``OUTPUT`` metadata): not images to segment, not labels to
correct. Asking again replaces them (and only them: a layer of the user's with the same name stays).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import napari
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QPushButton

from ..loop.compare import Comparison, changes_text, compare_models
from ..plugin.layerdata import labels_kwargs
from .common import OUTPUT, StatusLine
from .other_images import MAX_OTHERS, other_open_images
from .serial_worker import SerialWorker
from .session import ModelSession

__all__ = ["CHANGES", "ChangesButton", "changes_layer_name", "show_changes"]

#: metadata key of a changes layer (the fine-tuned model's file name): ours to replace
CHANGES = "csunet_changes"


def changes_layer_name(image_name: str) -> str:
    return f"{image_name} changes"


def show_changes(viewer: napari.Viewer, images: Sequence[tuple[Image, np.ndarray]], comparison: Comparison,
                 model: str = "") -> list[Labels]:
    """Replace the changes layers of an earlier comparison by one per image (in the order of
    ``images``: the layer and the pixels that were compared) that is still open with those pixels."""
    for old in [lay for lay in viewer.layers if lay.metadata.get(CHANGES) is not None]:
        viewer.layers.remove(old)  # stale: another model, or an image compared before
    layers = []
    for (image, pixels), change in zip(images, comparison.changes, strict=True):
        if image not in viewer.layers or image.data is not pixels:  # closed, or other pixels, meanwhile
            continue
        kwargs = labels_kwargs(comparison.class_names, comparison.class_colors, changes_layer_name(image.name))
        kwargs["metadata"] = {**kwargs["metadata"], OUTPUT: True, CHANGES: model}
        ndim = change.changed.ndim
        layers.append(viewer.add_labels(change.changed, scale=image.scale[-ndim:], translate=image.translate[-ndim:],
                                        **(kwargs | {"opacity": 0.7})))  # a user's layer of that name stays ("[1]")
    return layers


class ChangesButton(QObject):
    """*Show what it changes* / *Stop comparing*: both models segment the open images (up to
    ``MAX_OTHERS + 1``, newest first) on ``worker``, the model held busy meanwhile (one thing on the
    device at a time), then :func:`show_changes`. ``models()`` names (before, fine-tuned) or None;
    ``ended()`` runs when a comparison is over, whatever its end."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, worker: SerialWorker, status: StatusLine,
                 models: Callable[[], tuple[Path, Path] | None], ended: Callable[[], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self.worker, self.status = viewer, session, worker, status
        self.models, self.ended = models, ended
        self.running = False
        self._cancel = threading.Event()
        self.button = QPushButton("Show what it changes")
        self.button.setToolTip("segment the open images with the fine-tuned model and the one before it, and mark "
                               "the pixels whose class changes (a layer per image, in the new class)")
        self.button.clicked.connect(lambda: self.stop() if self.running else self.start())

    def update(self, idle: bool) -> None:
        """Enabled to stop a comparison, or to start one when the owner is idle and has two models."""
        self.button.setEnabled(self.running or (idle and self.models() is not None))
        self.button.setText("Stop comparing" if self.running else "Show what it changes")

    def start(self) -> bool:
        from ..engine.predictor import Cancelled
        from .calibration import databar_of

        models = self.models()
        if models is None or self.running or self.session.busy:
            self.status.error("nothing to compare: no fine-tune has made a new model" if models is None
                              else "wait: the model is busy (training, loading or segmenting)")
            return False
        images = other_open_images(self.viewer, (), limit=MAX_OTHERS + 1)
        if not images:
            self.status.error("no open image to compare the models on: open a micrograph (2D, in memory)")
            return False
        jobs = [(layer.name, layer.data, self.session.records.of_image(layer)) for layer in images]
        settings = self.session.settings
        kwargs = {"device": settings.device, "amp": settings.mixed_precision}
        cancel = self._cancel
        cancel.clear()
        self.running = True
        self.session.set_busy(True)
        self.status.info(f"segmenting {len(images)} open image(s) with {models[1].name} and {models[0].name} …")

        session = self.session  # busy until the end: its model is ours to use on the worker thread
        current = session.segmenter is not None and session.path == models[0] and not session.unsaved
        old = session.segmenter if current else models[0]

        def task() -> Comparison:  # the worker thread: the data bar is found there too, as the Segment tab does
            return compare_models(old, models[1], [(name, data, databar_of(record, data)) for name, data, record in jobs],
                                  kwargs, cancel=cancel.is_set)

        def finish() -> None:
            self.running = False
            self.session.set_busy(False)
            self.ended()

        def shown(comparison: Comparison) -> None:
            finish()
            show_changes(self.viewer, [(layer, data) for layer, (_, data, _) in zip(images, jobs, strict=True)],
                         comparison, models[1].name)
            self.status.info(f"what {models[1].name} changes against {models[0].name}: {changes_text(comparison.changes)}"
                             " (the 'changes' layers: each changed pixel in its new class)")

        def failed(exc: Exception) -> None:
            finish()
            if isinstance(exc, Cancelled):
                self.status.info("comparison stopped")
            else:
                self.status.error(f"could not compare the models: {exc}")

        self.worker.submit(task, shown, failed)
        return True

    def stop(self) -> None:
        """Stop the comparison before the next batch of tiles (also when napari closes: the worker
        thread would otherwise keep Python from exiting until both models had segmented)."""
        self._cancel.set()
        if self.running:
            self.status.info("stopping the comparison …")
