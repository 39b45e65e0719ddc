"""What the panels share: the current model (kept warm on its device), the annotation set, one
record per image (:mod:`.records`) and the labels layer being corrected. Panels read
these here, never through one another nor through layer metadata.

Loading (torch import, building, weights, moving to the GPU) runs on a worker thread so napari
never freezes; every panel listens to ``changed`` to enable itself and show the classes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import QObject, QTimer, Signal

from ..images.annotations import AnnotationStore
from ..models.modelfile import ModelInfo
from ..settings import Settings, load_settings, save_settings
from .compat import avoid_triton_llvm_clash
from .records import ImageRecords
from .steps import Steps

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import napari.layers

__all__ = ["ModelSession", "Segmentation", "leave_a_core_for_the_gui", "BAR_AFTER_MS"]

#: a job of the session (loading, building, saving a model) gets a bar in napari's activity dock
#: when it is still running after this many ms
BAR_AFTER_MS = 1500


def leave_a_core_for_the_gui() -> None:
    """CPU inference on all cores starves napari's GUI thread; keep one core free (worker thread)."""
    import os

    import torch

    cores = os.cpu_count() or 2
    if torch.get_num_threads() >= cores:
        torch.set_num_threads(max(1, cores - 1))


class Segmentation(Protocol):
    """What segments image layers for the other panels (the Segment tab registers itself): the
    re-segmentation after a fine-tune or a live update, and for the correction queue, go through it."""

    @property
    def running(self) -> bool: ...

    def targets(self) -> list: ...

    def segment(self, layers: list | None = None, on_done: Callable[[list], None] | None = None,
                keep: Callable[[Any], Any] | None = None, uncertainty: bool = False) -> Any: ...


class ModelSession(QObject):
    """The :class:`~napari_csunet.engine.predictor.Segmenter` and what it was loaded from, the annotation
    set (``annotations``), the per-image records (``records``) and the labels layer the Correct tab
    works on (``correcting``)."""

    #: emitted on the main thread after a model was loaded, replaced or unloaded
    changed = Signal()
    #: emitted with a message when loading failed (the old model stays)
    failed = Signal(str)
    busy_changed = Signal(bool)
    #: emitted with the Labels layers one segmentation run wrote (whoever asked ``segmentation`` for it)
    segmented = Signal(list)
    #: (model file, the model file it was fine-tuned from, the judge's reason): a model better on the
    #: checks but not made current, for the user to decide on in the Fine-tune tab (the live update's)
    offered = Signal(str, str, str)

    def __init__(self, settings: Settings | None = None, annotations: AnnotationStore | None = None,
                 viewer: napari.Viewer | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or load_settings()
        self.annotations = annotations or AnnotationStore()
        #: one record per image: calibration, and once segmented its labels' facts (forgotten with the layers)
        self.records = ImageRecords(viewer)
        self.correcting = None  # the Labels layer chosen in the Correct tab (napari.layers.Labels | None)
        self.segmentation: Segmentation | None = None  # set by the Segment tab
        self.segmenter = None
        self.path: Path | None = None  # model file, None for an unsaved preset build
        self.unsaved = False
        self.busy = False
        self._worker = None
        self._settings_pending = False  # device/precision changed while busy
        #: GUI-thread work after a job, one per event-loop turn (napari's activity bar, the caller's follow-up)
        self.steps = Steps(self)

    @property
    def info(self) -> ModelInfo | None:
        return self.segmenter.info if self.segmenter is not None else None

    @property
    def device(self) -> str:
        return self.settings.device

    def class_names(self, labels: napari.layers.Labels | None = None) -> list[str]:
        """The classes of a labels layer (its record, or the file it was opened from), else the model's."""
        names = self.records.class_names(labels) if labels is not None else None
        if names:
            return names
        return list(self.info.class_names) if self.info is not None else []

    def class_colors(self, labels: napari.layers.Labels | None, n: int) -> list[str]:
        """The colours of classes 1..``n`` of a labels layer: its record's or file's, else its colormap's."""
        colors = self.records.class_colors(labels) if labels is not None else None
        if colors is not None and len(colors) == n:
            return colors
        if labels is not None:
            from napari.utils.colormaps.standardize_color import rgb_to_hex

            return [rgb_to_hex(labels.colormap.map(i + 1))[0][:7] for i in range(n)]
        return ["#808080"] * n

    def classes(self, labels: napari.layers.Labels | None) -> tuple[list[str], list[str]]:
        """A labels layer's class names and their colours, as saved with its corrections."""
        names = self.class_names(labels)
        return names, self.class_colors(labels, len(names))

    def corrections(self, labels: napari.layers.Labels,
                    vouched: dict[str, np.ndarray | None] | None = None) -> np.ndarray | None:
        """The pixels of ``labels`` a re-segmentation keeps as the user left them: painted over the
        model's prediction, and those the training set vouches for its image (``vouched``: read
        ahead, by image name; else read now). None when there are neither."""
        painted = self.records.painted(labels)
        image = self.records.image_of(labels)
        name = image.name if image is not None else None
        saved = vouched[name] if vouched is not None and name in vouched else self.annotations.vouched(name)
        if saved is not None and saved.shape == labels.data.shape:
            return saved if painted is None else painted | saved
        return painted

    def segment(self, layers: list, **kwargs: Any) -> Any:
        """Segment ``layers`` through :attr:`segmentation` (``Segmentation.segment``'s arguments);
        None when nothing is registered or it refused (busy)."""
        return self.segmentation.segment(layers, **kwargs) if self.segmentation is not None else None

    def describe(self) -> str:
        if self.segmenter is None:
            return "no model loaded"
        info = self.info
        where = str(self.path) if self.path else "not saved yet"
        return (f"{info.name or info.preset} · classes: {', '.join(info.class_names)} · "
                f"{self.segmenter.device} · {where}")

    def _segmenter_kwargs(self) -> dict[str, Any]:
        # tile and batch: chosen per image by the engine
        return {"device": self.settings.device, "amp": self.settings.mixed_precision}

    def _run(self, job: Callable[[], tuple[Any, Path | None, bool]],
             on_done: Callable[[], None] | None = None, what: str = "loading the model"):
        if self.busy:
            self.failed.emit("the model is busy (loading or segmenting); try again when it is done")
            return None
        avoid_triton_llvm_clash()  # before the worker imports torch/timm
        self.set_busy(True)
        results: list = []
        bars: list = []  # the timer that opens napari's bar, then the bar
        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(results.append)
        worker.errored.connect(lambda exc: self.failed.emit(_message(exc)))
        worker.finished.connect(lambda: self._finished(results, on_done, bars))
        self._worker = worker
        worker.start()

        def open_bar() -> None:  # indeterminate, in napari's activity dock
            if self._worker is worker:
                bars.append(progress(total=0, desc=f"CS-UNet: {what}"))

        # only for a job still running after BAR_AFTER_MS (a build, a download): making napari's bar
        # held the GUI thread 50-100 ms on a loaded CPU, longer than loading a model file takes
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.timeout.connect(open_bar)
        timer.start(BAR_AFTER_MS)
        bars.append(timer)
        return worker

    def _finished(self, results: list, on_done: Callable[[], None] | None, bars: list) -> None:
        """After the worker: not busy any more, then the new model, then (next turn) the caller's follow-up."""
        for bar in bars:
            if isinstance(bar, QTimer):
                bar.stop()
                bar.deleteLater()
            else:
                bar.close()
        self._worker = None
        self.set_busy(False)
        if results:
            self._loaded(*results[0], on_done=on_done)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busy_changed.emit(busy)
        if not busy and self._settings_pending:  # after the finished job has handed over its model
            self._settings_pending = False
            QTimer.singleShot(0, self._apply_settings)

    def _loaded(self, segmenter: Any, path: Path | None, unsaved: bool, on_done=None) -> None:
        self.segmenter, self.path, self.unsaved = segmenter, path, unsaved
        self.settings.last_model = str(path) if path else ""
        save_settings(self.settings)
        self.changed.emit()
        if on_done is not None:  # the panels' updates and the follow-up: not in one turn
            self.steps.then(on_done)

    def load_file(self, path: str | Path, on_done: Callable[[], None] | None = None):
        """Load a model file on a worker thread; returns the worker (None when busy)."""
        kwargs = self._segmenter_kwargs()

        def job():
            from ..engine.predictor import Segmenter

            leave_a_core_for_the_gui()
            return Segmenter.from_file(Path(path), **kwargs), Path(path), False

        return self._run(job, on_done, f"loading {Path(path).name}")

    def load_preset(self, preset: str, class_names: list[str], cnn: str | None, swin: str | None,
                    allow_download: bool, on_done: Callable[[], None] | None = None):
        """Build a preset (random decoder, chosen encoder weights) on a worker thread."""
        kwargs = self._segmenter_kwargs()

        def job():
            from ..engine.predictor import Segmenter
            from ..models.factory import create_model

            leave_a_core_for_the_gui()  # the weight report goes into info.sources, and so into the saved file
            model, info = create_model(preset, class_names, preset=True, cnn=cnn, swin=swin,
                                       allow_download=allow_download)
            return Segmenter(model, info, **kwargs), None, True

        what = f"building {preset}" + (" (downloading weights if needed)" if allow_download else "")
        return self._run(job, on_done, what)

    def load_pretrained(self, spec: str, class_names: list[str], on_done: Callable[[], None] | None = None):
        """A new model for ``class_names`` from a pretrained model file (output layer new), on a worker."""
        kwargs = self._segmenter_kwargs()

        def job():
            from ..engine.predictor import Segmenter
            from ..models.factory import create_model

            leave_a_core_for_the_gui()
            model, info = create_model(spec, class_names)
            return Segmenter(model, info, **kwargs), None, True

        return self._run(job, on_done, f"starting a model for {', '.join(class_names)} from {spec}")

    def set_device(self, device: str) -> None:
        """Remember the device; a loaded model moves there (reloaded on a worker thread)."""
        self.settings.device = device
        save_settings(self.settings)
        self._apply_settings()

    def set_mixed_precision(self, enabled: bool) -> None:
        """Remember the precision; a loaded model is wrapped again when it changes what runs."""
        self.settings.mixed_precision = bool(enabled)
        save_settings(self.settings)
        self._apply_settings()

    def _apply_settings(self) -> None:
        """Rebuild the Segmenter when the device or precision setting changes what runs; while the
        model is busy, once it is done (so the settings shown are the settings used)."""
        if self.busy:  # loading (with the old settings) or segmenting
            self._settings_pending = True
            return
        if self.segmenter is None:
            return
        from ..engine.device import amp_dtype
        from ..engine.predictor import pick_device  # torch is loaded already: a model is

        try:
            device = pick_device(self.settings.device)
        except ValueError as exc:
            self.failed.emit(f"{exc}; the model stays on {self.segmenter.device}")
            return
        precision = amp_dtype(device, self.settings.mixed_precision)
        if device != self.segmenter.device or precision != self.segmenter.amp_dtype:
            self._rebuild(f"moving the model to {device}, {'mixed precision' if precision else 'float32'}")

    def _rebuild(self, what: str) -> None:
        """The loaded model in a new Segmenter with the current settings (on a worker thread)."""
        seg, path, unsaved, kwargs = self.segmenter, self.path, self.unsaved, self._segmenter_kwargs()

        def job():
            from ..engine.predictor import Segmenter

            return Segmenter(seg.model.cpu(), seg.info, **kwargs), path, unsaved

        self._run(job, what=what)

    def save(self, path: str | Path, on_done: Callable[[], None] | None = None):
        """Write the current model to a model file on a worker thread."""
        if self.segmenter is None:
            self.failed.emit("no model to save: load or build one first")
            return None
        seg, target = self.segmenter, Path(path)

        def job():
            from ..models.modelfile import save_model_file

            save_model_file(target, seg.model, seg.info)
            return seg, target, False

        return self._run(job, on_done, f"saving {target.name}")


def _message(exc: BaseException) -> str:
    """A user-facing message: the exception's own words, its type when it has none."""
    text = str(exc).strip()
    return text if text else type(exc).__name__
