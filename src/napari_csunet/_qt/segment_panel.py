"""Segment panel: run the current model on one or all open images, off the GUI thread.

Prediction runs in a napari worker thread with a progress bar (ours and napari's activity dock)
and a Cancel that stops before the next tile batch. Results land in a Labels layer named after
the image, with the model's classes; segmenting again replaces its data, keeping the previous
labels and the raw prediction in the image's record (the session's :mod:`.records`) so the Correct
panel can undo or revert.
A lazy image (dask, zarr, a multiscale pyramid's level 0) above ``LAZY_PIXELS`` is never loaded:
it is read tile by tile into a zarr-backed Labels layer (in a temporary folder named in the
status line), and its class counts are taken band by band on the worker thread.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import NamedTuple

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QCheckBox, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..plugin.layerdata import class_metadata, labels_kwargs
from .common import (
    OUTPUT,
    LayerPicker,
    StatusLine,
    form_group,
    image_data,
    is_input_image,
    labels_name,
)
from .records import ImageRecords
from .session import ModelSession
from .steps import Steps

__all__ = ["SegmentPanel", "ALL_IMAGES", "write_prediction", "Prepared", "hold_back"]

ALL_IMAGES = "all open images"
#: lazy image data above this many pixels is segmented into zarr instead of being loaded
LAZY_PIXELS = 64 * 2**20
# napari warns a plugin that reads a private attribute through its viewer proxy; this one is read
# knowingly (:func:`_not_activated`) and its absence is handled
warnings.filterwarnings("ignore", message=r"Private attribute access \('LayerList\._activate_on_insert'\)",
                        category=FutureWarning)


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued connection)."""

    progress = Signal(int, int, int, int)  # image index, images, tiles done, tiles total


def _hide_dominant(colormap: dict, labels: np.ndarray, counts: np.ndarray | None = None) -> dict:
    """The most common class (the background, mostly) drawn transparent so the micrograph shows."""
    counts = np.bincount(np.asarray(labels).ravel()[::7], minlength=2) if counts is None else counts.copy()
    counts[0] = 0
    return colormap | {int(counts.argmax()): "transparent"} if counts.any() else colormap


def new_labels_layer(image: Image, pred, info, counts: np.ndarray | None = None) -> Labels:
    """The Labels layer for a first prediction of ``image``, not yet in the viewer. Built on the
    worker thread (a napari layer object is not a Qt one): its construction cost 0.6 s of GUI-thread
    time at the first segmentation on this project's loaded 2-core machine; only inserting it
    (controls, visuals) is left to the GUI thread."""
    kwargs = labels_kwargs(info.class_names, info.class_colors, labels_name(image.name))
    counts = getattr(pred, "counts", None) if counts is None else counts
    kwargs["colormap"] = _hide_dominant(kwargs["colormap"], pred.labels, counts)
    ndim = pred.labels.ndim
    return Labels(pred.labels, scale=image.scale[-ndim:], units=image.units[-ndim:],  # napari's scale bar reads µm
                  translate=image.translate[-ndim:], **kwargs)


class Prepared(NamedTuple):
    """A new Labels layer made on the worker thread, with what :func:`hold_back` kept from it."""

    layer: Labels
    reveal: list[Callable[[], None]]


def hold_back(layer: Labels) -> list[Callable[[], None]]:
    """Before ``layer`` is in a viewer (on the worker thread): hide it and its labels overlays
    (napari makes an overlay's visuals only once it is visible); returns the steps that show them
    again, to be run one per event-loop turn once it is inserted. Inserting a Labels layer in one
    go held napari's GUI thread for 120-200 ms on this project's loaded 2-core machine (software
    OpenGL): its visual, its polygon and brush overlays (30-75 ms), its controls, the first paint of
    the 2048² texture; split this way the longest step is the insertion itself (visual and controls)."""
    steps: list[Callable[[], None]] = []
    if layer.visible:
        layer.visible = False
        steps.append(lambda: setattr(layer, "visible", True))
    overlays = getattr(layer, "_overlays", None)  # napari's; without it the overlays come with the layer
    for overlay in list(overlays.values()) if hasattr(overlays, "values") else []:
        if type(overlay).__name__.startswith("Labels") and getattr(overlay, "visible", False) is True:
            try:
                overlay.visible = False
            except Exception:  # noqa: BLE001 - napari's overlay model changed: shown with the layer
                continue
            steps.append(lambda o=overlay: setattr(o, "visible", True))
    return steps


@contextmanager
def _not_activated(viewer: napari.Viewer) -> Iterator[None]:
    """napari makes an inserted layer the active one (its controls shown, the same turn): not now."""
    layers = viewer.layers
    before = getattr(layers, "_activate_on_insert", None)
    if not isinstance(before, bool):
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


@contextmanager
def _views_deferred(viewer: napari.Viewer) -> Iterator[Callable[[Labels], list[Callable[[], None]]]]:
    """napari makes a new layer's vispy visual in the insertion's turn (about 25 ms on a quiet 2-core
    machine, which took the turn over 50 ms with the layer's controls and the paint): inside this
    context it is held back; the yielded function returns the step that makes it, for the next turn
    (before the layer is shown, which needs it). napari's canvas waits for every layer's visual
    before it redraws the scene graph; a removal of any layer before the step ran (napari's canvas
    needs the visual then) makes it at once. Without napari's Qt viewer nothing is held back."""
    raw = getattr(viewer, "__wrapped__", viewer)  # napari's own objects, not a plugin's proxies
    make_visual = getattr(getattr(getattr(raw, "window", None), "_qt_viewer", None), "_on_add_layer_change", None)
    layers = raw.layers
    emitter = layers.events.inserted
    if make_visual is None or not hasattr(emitter, "block"):
        yield lambda _layer: []
        return
    emitter.block(make_visual)
    try:
        def made_later(layer: Labels) -> list[Callable[[], None]]:
            target = getattr(layer, "__wrapped__", layer)
            pending = [make_visual]

            def step(*_: object) -> None:  # also called by napari just before a removal
                while pending:
                    handler = pending.pop()
                    if any(lay is target for lay in layers):
                        handler(SimpleNamespace(value=target))
                layers.events.removing.disconnect(step)

            layers.events.removing.connect(step)
            return [step]

        yield made_later
    finally:
        emitter.unblock(make_visual)


def _select(viewer: napari.Viewer, layer: Labels) -> None:
    if layer in viewer.layers:
        viewer.layers.selection.active = layer


def write_prediction(viewer: napari.Viewer, records: ImageRecords, image: Image, pred, info, model_name: str,
                     extras: bool = True, keep: Callable[[Labels], np.ndarray | None] | None = None,
                     counts: np.ndarray | None = None, prepared: Labels | Prepared | None = None,
                     later: list[Callable[[], None]] | None = None) -> Labels:
    """Put a prediction into ``"<image> labels"``: a new layer, or new data for the existing one.

    ``keep(layer)`` names pixels of the existing layer (the user's corrections) that stay on top of
    the new prediction; the raw prediction stays in the image's record (``records``) for Revert, the
    labels before it for Undo; the classes go on the layer too, for napari's Save. ``counts``
    (pixels per label 0..K, from :func:`napari_csunet.engine.mosaic.class_counts` on the worker)
    saves a pass over the labels on the GUI thread; ``prepared`` (from :func:`new_labels_layer` on
    the worker, or a :class:`Prepared` one) is the layer to insert when there is none yet. A :class:`Prepared` layer is inserted without being activated; the steps that
    show it (:func:`hold_back`) and select it, as napari would have, are appended to ``later`` for
    the caller to run one per event-loop turn (run here at once without ``later``).
    """
    name = labels_name(image.name)
    kwargs = labels_kwargs(info.class_names, info.class_colors, name)
    lazy = not isinstance(pred.labels, np.ndarray)
    counts = getattr(pred, "counts", None) if counts is None else counts
    kwargs["colormap"] = _hide_dominant(kwargs["colormap"], pred.labels, counts)
    layer = viewer.layers[name] if name in viewer.layers else None
    if lazy and isinstance(layer, Labels):  # zarr-backed: a new layer, the old one kept under another name
        layer.name = f"{name} (old)"
        layer = None
    if isinstance(layer, Labels) and layer.data.shape == pred.labels.shape:
        previous = layer.data
        kept = keep(layer) if keep is not None else None
        new = pred.labels
        if kept is not None and kept.any():
            new = pred.labels.copy()
            np.copyto(new, np.asarray(previous), where=kept)  # 2-3x faster than new[kept] = previous[kept]
        layer.data = new
        if layer.metadata.get("class_colors") != list(info.class_colors):  # a re-colour redraws everything
            layer.colormap = kwargs["colormap"]
        if layer.metadata.get("class_names") != list(info.class_names):
            layer.features = kwargs["features"]
    else:
        previous = None
        if layer is not None:  # same name, other shape or type: keep it, under another name
            layer.name = f"{name} (old)"
        reveal: list[Callable[[], None]] = []
        if isinstance(prepared, Prepared):
            prepared, reveal = prepared
        fits = prepared is not None and prepared.name == name and prepared.data.shape == pred.labels.shape
        if fits and reveal:
            with _not_activated(viewer), _views_deferred(viewer) as made_later:
                layer = viewer.add_layer(prepared)
            steps = [*made_later(layer), *reveal, lambda: _select(viewer, layer)]
            if extras:  # their layers go under this one, which napari must have made by then
                steps.append(lambda: _write_extras(viewer, image, pred, info, below=layer) if layer in viewer.layers else None)
                extras = False
            if later is None:
                for step in steps:
                    step()
            else:
                later.extend(steps)
        else:
            if prepared is not None and reveal:
                for step in reveal:  # not used: shown again as it was
                    step()
            layer = viewer.add_layer(prepared if fits else new_labels_layer(image, pred, info, counts))
    prediction = None if lazy else pred.labels if layer.data is not pred.labels else pred.labels.copy()
    layer.metadata.update(class_metadata(info.class_names, info.class_colors))  # what a saved file carries
    records.register(image, layer, prediction, info.class_names, info.class_colors, previous=previous,
                     model_name=model_name)
    if extras:
        _write_extras(viewer, image, pred, info, below=layer)
    return layer


def _set_or_add(viewer: napari.Viewer, name: str, data: np.ndarray, below: Labels, **kwargs) -> None:
    """New data for the output layer ``name``, or a new layer placed under ``below`` (the labels:
    what the user paints stays on top and selected, never a hidden uncertainty layer)."""
    if name in viewer.layers and isinstance(viewer.layers[name], Image) and viewer.layers[name].data.shape == data.shape:
        viewer.layers[name].data = data
        return
    active = viewer.layers.selection.active
    layer = viewer.add_image(data, name=name, metadata={OUTPUT: True}, **kwargs)
    viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(below))
    viewer.layers.selection.active = active if active in viewer.layers else below


def _write_extras(viewer: napari.Viewer, image: Image, pred, info, below: Labels) -> None:
    scale = image.scale[-pred.labels.ndim:]
    if pred.probs is not None:
        axis = pred.probs.ndim - 3  # (K, H, W) or (Z, K, H, W)
        for k, (cls, color) in enumerate(zip(info.class_names, info.class_colors, strict=False)):
            _set_or_add(viewer, f"{image.name} p({cls})", np.take(pred.probs, k, axis=axis).astype(np.float32), below,
                        colormap=_color_ramp(color), blending="additive", contrast_limits=(0, 1),
                        visible=False, scale=scale)
    if pred.uncertainty is not None:
        _set_or_add(viewer, f"{image.name} uncertainty", pred.uncertainty, below, colormap="magma",
                    contrast_limits=(0, 1 - 1 / info.num_classes), visible=False, scale=scale)


def _color_ramp(hex_color: str):
    from napari.utils.colormaps import Colormap
    from napari.utils.colormaps.standardize_color import transform_color

    return Colormap([[0, 0, 0, 1], transform_color(hex_color)[0]], name=f"csunet {hex_color}")


class SegmentPanel(QWidget):
    """Choose images, segment them in the background, cancel."""

    #: emitted on the GUI thread with the Labels layers written by one run
    segmented = Signal(list)

    def __init__(self, viewer: napari.Viewer, session: ModelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        session.segmentation = self  # the other panels segment through the session
        self.segmented.connect(session.segmented.emit)
        self.images = LayerPicker(viewer, Image, extra=(ALL_IMAGES,), accept=is_input_image)
        self.want_probs = QCheckBox("probability layers")
        self.want_uncertainty = QCheckBox("uncertainty layer")
        self.tta = QCheckBox("test-time augmentation (flips, 4x slower)")
        self.segment_btn = QPushButton("Segment")
        self.segment_btn.clicked.connect(lambda: self.segment())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.cancel_btn.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setFormat("%v / %m tiles")
        self.status = StatusLine("load a model in the Model tab, then segment")

        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Segment", [("image", self.images), self.want_probs, self.want_uncertainty,
                                                self.tta, self.segment_btn, self.bar, self.cancel_btn]))
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._relay = _Relay()
        self._relay.progress.connect(self._on_progress)
        self._cancel = threading.Event()
        self._napari_bar: cancelable_progress | None = None
        self._last_progress: tuple[int, int, int, int] | None = None
        self._written: list[Labels] = []
        self._keep: Callable[[Labels], np.ndarray | None] | None = None
        self.worker = None
        #: GUI-thread work of a run (napari's progress bar, showing a new layer, the end): one per turn
        self.steps = Steps(self)
        session.changed.connect(self._on_model_changed)
        session.busy_changed.connect(self._update_enabled)
        self._on_model_changed()

    @property
    def running(self) -> bool:
        """A run is on: predicting, or showing its results (the steps after the worker's last result)."""
        return self.worker is not None or self.steps.pending > 0

    def _update_enabled(self, *_: object) -> None:
        ready = self.session.segmenter is not None and not self.session.busy and not self.running
        self.segment_btn.setEnabled(ready)

    def _on_model_changed(self) -> None:
        self._update_enabled()
        seg = self.session.segmenter
        if seg is None:
            self.status.info("load a model in the Model tab, then segment")
        elif self.status.text().startswith("load a model") or self.status.kind == "error":
            self.status.info(f"model {self.session.info.name or seg.name} ready on {seg.device}: choose an image "
                             "and Segment")

    def targets(self, choice=None) -> list[Image]:
        choice = self.images.value if choice is None else choice
        if choice == ALL_IMAGES:
            return [lay for lay in self.viewer.layers if isinstance(lay, Image) and is_input_image(lay)]
        return [choice] if isinstance(choice, Image) else []

    def segment(self, layers: list[Image] | None = None, on_done: Callable[[list[Labels]], None] | None = None,
                keep: Callable[[Labels], np.ndarray | None] | None = None, uncertainty: bool = False):
        """Segment ``layers`` (default: the panel's choice); returns the worker, None if refused.

        ``keep(labels layer)`` names the pixels (the user's corrections) that stay as they are;
        ``uncertainty`` asks for the uncertainty layer (the correction queue ranks by it): the box is
        ticked, so the user's next Segment keeps it up to date too.
        """
        if uncertainty:
            self.want_uncertainty.setChecked(True)
        layers = self.targets() if layers is None else layers
        seg = self.session.segmenter
        if seg is None:
            self.status.error("no model loaded: choose one in the Model tab first")
            return None
        if self.running or self.session.busy:
            self.status.error("busy: wait for the current run to finish or cancel it")
            return None
        if not layers:
            self.status.error("no image to segment: open an image (File > Open Sample > CS-UNet) first")
            return None
        jobs = [(lay, image_data(lay), self.session.records.of_image(lay)) for lay in layers]
        options = {"want_probs": self.want_probs.isChecked(), "want_uncertainty": self.want_uncertainty.isChecked(),
                   "tta": self.tta.isChecked()}
        self._cancel.clear()
        self._written = []
        self._keep = keep
        self._last_progress = None
        names = {lay.name for lay in self.viewer.layers}  # a snapshot: the worker does not touch the viewer
        self.worker = create_worker(_predict_all, seg, jobs, options, self._relay.progress.emit,
                                    self._is_cancelled, names.__contains__, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(lambda: self._on_finished(on_done))
        self.session.set_busy(True)
        self.cancel_btn.setEnabled(True)
        self.status.info(f"segmenting {len(layers)} image(s) on {seg.device} …")
        self.worker.start()
        # napari's activity bar in a turn of its own: it makes widgets and runs the event loop (30-70 ms)
        self.steps.then(lambda: self._open_napari_bar(f"CS-UNet: segmenting {layers[0].name}"))
        return self.worker

    def _open_napari_bar(self, desc: str) -> None:
        if self.worker is None or self._napari_bar is not None:
            return
        self._napari_bar = cancelable_progress(total=0, desc=desc, cancel_callback=self._cancel.set)
        if self._last_progress is not None:
            self._on_progress(*self._last_progress)

    def _is_cancelled(self) -> bool:
        return self._cancel.is_set() or bool(self._napari_bar is not None and self._napari_bar.is_canceled)

    def cancel(self) -> None:
        """Stop before the next tile batch; the layers keep what they had."""
        self._cancel.set()
        self.status.info("cancelling …")

    def _on_progress(self, index: int, count: int, done: int, total: int) -> None:
        self._last_progress = (index, count, done, total)
        self.bar.setMaximum(max(total, 1))
        self.bar.setValue(done)
        if self._napari_bar is not None:
            if self._napari_bar.total != total:
                self._napari_bar.total = total
            self._napari_bar.n = done
            self._napari_bar.update(0)
            if count > 1:
                self._napari_bar.set_description(f"CS-UNet: image {index + 1}/{count}")

    def _on_result(self, result) -> None:
        layer, pred, counts, prepared = result
        info = self.session.info
        later: list[Callable[[], None]] = []
        self._written.append(write_prediction(self.viewer, self.session.records, layer, pred, info,
                                              self.session.segmenter.name, keep=self._keep, counts=counts,
                                              prepared=prepared, later=later))
        self.steps.then(*later)
        counts = counts[1:]
        fractions = counts / max(int(counts.sum()), 1)  # of the analysed pixels: a data bar is not material
        where = "" if isinstance(pred.labels, np.ndarray) else f" (labels in {pred.labels.store})"
        self.status.info(f"{layer.name}: " + ", ".join(f"{n} {f:.1%}" for n, f in zip(info.class_names, fractions, strict=False))
                         + where)

    def _on_error(self, exc: BaseException) -> None:
        from ..engine.predictor import Cancelled

        if isinstance(exc, Cancelled):
            self.status.info("cancelled: the labels layers were left as they were")
        else:
            self.status.error(f"segmentation failed: {exc}")

    def _on_finished(self, on_done) -> None:
        """The worker is done: the run ends once the steps its results left are done too."""
        self.steps.then(lambda: self._finish(on_done))

    def _finish(self, on_done) -> None:
        """Not busy any more; the next turn, what follows a run (the Correct tab, the caller's ``on_done``)."""
        self.worker = None
        if self._napari_bar is not None:
            self._napari_bar.close()
            self._napari_bar = None
        self.cancel_btn.setEnabled(False)
        self.session.set_busy(False)
        written, self._written = self._written, []
        self.steps.then(lambda: self._announce(written, on_done))

    def _announce(self, written: list[Labels], on_done) -> None:
        if written:
            self.segmented.emit(written)
        if on_done is not None:
            on_done(written)


def _predict_all(seg, jobs, options, progress, cancelled, viewer_has: Callable[[str], bool]) -> Iterator:
    """Worker thread: (image layer, prediction, pixels per label 0..K) per image, yielded as soon as
    it is done (the counts are taken here, not on the GUI thread); the SEM data bar (as set in the
    Inspect tab, else detected) never reaches the model and is labelled 0."""
    from ..engine.mosaic import class_counts
    from ..images.databar import predict_outside
    from .calibration import databar_of

    _warm_napari_imports()
    for i, (layer, data, record) in enumerate(jobs):
        if is_lazy(data):
            pred = _predict_lazy(seg, data, lambda d, t, i=i: progress(i, len(jobs), d, t), cancelled, layer.name,
                                 options["tta"])
            yield layer, pred, pred.counts, None
            continue
        data = np.asarray(data)
        pred = predict_outside(lambda im, i=i, layer=layer: seg.predict(
            im, progress=lambda d, t: progress(i, len(jobs), d, t), cancel=cancelled, name=layer.name, **options),
            data, databar_of(record, data))
        counts = class_counts(pred.labels, seg.info.num_classes)  # 70 ms for 2048^2 at load 4
        yield layer, pred, counts, _prepare_layer(viewer_has, layer, pred, seg.info, counts)


def _prepare_layer(viewer_has: Callable[[str], bool], image: Image, pred, info, counts) -> Prepared | None:
    """Worker thread: a new Labels layer for the first prediction of ``image``, held back to be shown
    in steps (None when its labels layer exists: then only its data is replaced, on the GUI thread)."""
    if viewer_has(labels_name(image.name)):
        return None
    try:
        layer = new_labels_layer(image, pred, info, counts)
        return Prepared(layer, hold_back(layer))
    except Exception:  # built on the GUI thread instead (write_prediction)
        return None


def _warm_napari_imports() -> None:
    """What napari imports on the GUI thread when the first Labels layer of a session is made,
    imported here, on the worker thread, before the layer is made: pandas (a layer with a features
    table, as ours have: measured as most of the first layer's stall) and scikit-image's colour
    module with scipy.linalg (``label_colormap``: the layer's construction took 92 ms instead of
    13 ms without it at load 3; the plugin's worker usually has imported it by then anyway).

    Also vispy's dash patterns: the first line visual of a process (the labels layer's polygon
    overlay, shown one turn after the insertion) computes 13 of them in Python loops, 130-190 ms of
    the GUI thread at load 6; they are cached per process, so computing them here leaves that turn
    the overlay's visuals alone."""
    import pandas  # noqa: F401
    import skimage.color  # noqa: F401

    try:
        from vispy.visuals.line.dash_atlas import DashAtlas
    except ImportError:  # vispy reorganised: the first overlay pays as before
        return
    DashAtlas()


def is_lazy(data) -> bool:
    """Image data that should not be loaded: not numpy, 2D (grey or colour), above ``LAZY_PIXELS``."""
    shape = tuple(data.shape)
    two_d = len(shape) == 2 or (len(shape) == 3 and shape[-1] <= 4)
    return not isinstance(data, np.ndarray) and two_d and shape[0] * shape[1] > LAZY_PIXELS


class _LazyPrediction:
    """Labels in a zarr array plus their class counts (nothing else is computed for mosaics)."""

    def __init__(self, labels, counts: np.ndarray) -> None:
        self.labels, self.counts, self.probs, self.uncertainty = labels, counts, None, None


def _predict_lazy(seg, data, progress, cancelled, name: str, tta: bool) -> _LazyPrediction:
    """Worker thread: segment lazy ``data`` tile by tile into a zarr in a temporary folder."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from ..engine.mosaic import class_counts, create_labels_zarr

    folder = Path(tempfile.mkdtemp(prefix="csunet-labels-"))
    atexit.register(shutil.rmtree, folder, True)  # the layer's own store: napari's Save writes a copy
    labels = create_labels_zarr(folder / "labels.zarr", tuple(int(s) for s in data.shape[:2]), seg.info)
    seg.predict_to(data, labels, tta=tta, progress=progress, cancel=cancelled, name=name)
    return _LazyPrediction(labels, class_counts(labels, seg.info.num_classes))
