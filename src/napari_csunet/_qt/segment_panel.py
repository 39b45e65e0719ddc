"""Segment panel: run the current model on one or all open images, off the GUI thread.

Prediction runs in a napari worker thread with a progress bar (ours and napari's activity dock)
and a Cancel that stops before the next tile batch. Results land in a Labels layer named after
the image, with the model's classes; segmenting again replaces its data, keeping the previous
labels and the raw prediction in the layer's metadata so the Correct panel can undo or revert.
A lazy image (dask, zarr, a multiscale pyramid's level 0) above ``LAZY_PIXELS`` is never loaded:
it is read tile by tile into a zarr-backed Labels layer (in a temporary folder named in the
status line), and its class counts are taken band by band on the worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QCheckBox, QProgressBar, QPushButton, QVBoxLayout, QWidget

from .._layerdata import labels_kwargs
from .common import (
    OUTPUT,
    LayerPicker,
    StatusLine,
    form_group,
    image_data,
    is_input_image,
    labels_name,
)
from .session import ModelSession

__all__ = ["SegmentPanel", "ALL_IMAGES", "write_prediction", "painted_pixels"]

ALL_IMAGES = "all open images"
#: lazy image data above this many pixels is segmented into zarr instead of being loaded
LAZY_PIXELS = 64 * 2**20
#: keys of the Labels layer's metadata
PREDICTION, PREVIOUS, IMAGE = "csunet_prediction", "csunet_previous", "csunet_image"


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued connection)."""

    progress = Signal(int, int, int, int)  # image index, images, tiles done, tiles total


def painted_pixels(layer: Labels) -> np.ndarray | None:
    """Where the user painted a class over the model's prediction (erased pixels excluded)."""
    prediction = layer.metadata.get(PREDICTION)
    if prediction is None or prediction.shape != layer.data.shape:
        return None
    data = np.asarray(layer.data)
    return (data != prediction) & (data > 0)


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


def write_prediction(viewer: napari.Viewer, image: Image, pred, info, model_name: str,
                     extras: bool = True, keep: Callable[[Labels], np.ndarray | None] | None = None,
                     counts: np.ndarray | None = None, prepared: Labels | None = None) -> Labels:
    """Put a prediction into ``"<image> labels"``: a new layer, or new data for the existing one.

    ``keep(layer)`` names pixels of the existing layer (the user's corrections) that stay on top of
    the new prediction; the raw prediction stays in the metadata for Revert, the labels before it
    for Undo. ``counts`` (pixels per label 0..K, from :func:`napari_csunet.mosaic.class_counts` on
    the worker) saves a pass over the labels on the GUI thread; ``prepared`` (from
    :func:`new_labels_layer` on the worker) is the layer to insert when there is none yet.
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
            new[kept] = np.asarray(previous)[kept]
        layer.data = new
        if layer.metadata.get("class_colors") != list(info.class_colors):  # a re-colour redraws everything
            layer.colormap = kwargs["colormap"]
        if layer.metadata.get("class_names") != list(info.class_names):
            layer.features = kwargs["features"]
        layer.metadata[PREVIOUS] = previous
    else:
        if layer is not None:  # same name, other shape or type: keep it, under another name
            layer.name = f"{name} (old)"
        fits = prepared is not None and prepared.name == name and prepared.data.shape == pred.labels.shape
        layer = viewer.add_layer(prepared if fits else new_labels_layer(image, pred, info, counts))
    layer.metadata.update({PREDICTION: None if lazy else pred.labels.copy(), IMAGE: image.name,
                           "csunet_model": model_name, "class_names": list(info.class_names),
                           "class_colors": list(info.class_colors)})
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
        self._written: list[Labels] = []
        self._keep: Callable[[Labels], np.ndarray | None] | None = None
        self.worker = None
        session.changed.connect(self._on_model_changed)
        session.busy_changed.connect(self._update_enabled)
        self._on_model_changed()

    @property
    def running(self) -> bool:
        return self.worker is not None

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

    def prediction_of(self, image: Image) -> np.ndarray | None:
        """The raw prediction last written for ``image`` (None before its first segmentation)."""
        name = labels_name(image.name)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer.metadata.get(PREDICTION) if isinstance(layer, Labels) else None

    def targets(self, choice=None) -> list[Image]:
        choice = self.images.value if choice is None else choice
        if choice == ALL_IMAGES:
            return [lay for lay in self.viewer.layers if isinstance(lay, Image) and is_input_image(lay)]
        return [choice] if isinstance(choice, Image) else []

    def segment(self, layers: list[Image] | None = None, on_done: Callable[[list[Labels]], None] | None = None,
                keep: Callable[[Labels], np.ndarray | None] | None = None):
        """Segment ``layers`` (default: the panel's choice); returns the worker, None if refused.

        ``keep(labels layer)`` names the pixels (the user's corrections) that stay as they are.
        """
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
        jobs = [(lay, image_data(lay)) for lay in layers]
        options = {"want_probs": self.want_probs.isChecked(), "want_uncertainty": self.want_uncertainty.isChecked()}
        seg.tta = self.tta.isChecked()
        self._cancel.clear()
        self._written = []
        self._keep = keep
        self._napari_bar = cancelable_progress(total=0, desc=f"CS-UNet: segmenting {layers[0].name}",
                                               cancel_callback=self._cancel.set)
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
        return self.worker

    def _is_cancelled(self) -> bool:
        return self._cancel.is_set() or bool(self._napari_bar is not None and self._napari_bar.is_canceled)

    def cancel(self) -> None:
        """Stop before the next tile batch; the layers keep what they had."""
        self._cancel.set()
        self.status.info("cancelling …")

    def _on_progress(self, index: int, count: int, done: int, total: int) -> None:
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
        self._written.append(write_prediction(self.viewer, layer, pred, info, self.session.segmenter.name,
                                              keep=self._keep, counts=counts, prepared=prepared))
        counts = counts[1:]
        fractions = counts / max(int(counts.sum()), 1)  # of the analysed pixels: a data bar is not material
        where = "" if isinstance(pred.labels, np.ndarray) else f" (labels in {pred.labels.store})"
        self.status.info(f"{layer.name}: " + ", ".join(f"{n} {f:.1%}" for n, f in zip(info.class_names, fractions, strict=False))
                         + where)

    def _on_error(self, exc: BaseException) -> None:
        from ..inference import Cancelled

        if isinstance(exc, Cancelled):
            self.status.info("cancelled: the labels layers were left as they were")
        else:
            self.status.error(f"segmentation failed: {exc}")

    def _on_finished(self, on_done) -> None:
        self.worker = None
        if self._napari_bar is not None:
            self._napari_bar.close()
            self._napari_bar = None
        self.cancel_btn.setEnabled(False)
        self.session.set_busy(False)
        written, self._written = self._written, []
        if written:
            self.segmented.emit(written)
        if on_done is not None:
            on_done(written)


def _predict_all(seg, jobs, options, progress, cancelled, viewer_has: Callable[[str], bool]) -> Iterator:
    """Worker thread: (image layer, prediction, pixels per label 0..K) per image, yielded as soon as
    it is done (the counts are taken here, not on the GUI thread); the SEM data bar (as set in the
    Inspect tab, else detected) never reaches the model and is labelled 0."""
    from ..databar import predict_outside
    from ..mosaic import class_counts
    from .calibration import databar_of

    _warm_napari_imports()
    for i, (layer, data) in enumerate(jobs):
        if is_lazy(data):
            pred = _predict_lazy(seg, data, lambda d, t, i=i: progress(i, len(jobs), d, t), cancelled, layer.name)
            yield layer, pred, pred.counts, None
            continue
        data = np.asarray(data)
        pred = predict_outside(lambda im, i=i, layer=layer: seg.predict(
            im, progress=lambda d, t: progress(i, len(jobs), d, t), cancel=cancelled, name=layer.name, **options),
            data, databar_of(layer, data))
        counts = class_counts(pred.labels, seg.info.num_classes)  # 70 ms for 2048^2 at load 4
        yield layer, pred, counts, _prepare_layer(viewer_has, layer, pred, seg.info, counts)


def _prepare_layer(viewer_has: Callable[[str], bool], image: Image, pred, info, counts) -> Labels | None:
    """Worker thread: a new Labels layer for the first prediction of ``image`` (None when its labels
    layer exists: then only its data is replaced, on the GUI thread)."""
    if viewer_has(labels_name(image.name)):
        return None
    try:
        return new_labels_layer(image, pred, info, counts)
    except Exception:  # built on the GUI thread instead (write_prediction)
        return None


def _warm_napari_imports() -> None:
    """What napari imports on the GUI thread when the first Labels layer of a session is made,
    imported here, on the worker thread, before the layer is made: pandas (a layer with a features
    table, as ours have: measured as most of the first layer's stall) and scikit-image's colour
    module with scipy.linalg (``label_colormap``: the layer's construction took 92 ms instead of
    13 ms without it at load 3; the plugin's worker usually has imported it by then anyway)."""
    import pandas  # noqa: F401
    import skimage.color  # noqa: F401


def is_lazy(data) -> bool:
    """Image data that should not be loaded: not numpy, 2D (grey or colour), above ``LAZY_PIXELS``."""
    shape = tuple(data.shape)
    two_d = len(shape) == 2 or (len(shape) == 3 and shape[-1] <= 4)
    return not isinstance(data, np.ndarray) and two_d and shape[0] * shape[1] > LAZY_PIXELS


class _LazyPrediction:
    """Labels in a zarr array plus their class counts (nothing else is computed for mosaics)."""

    def __init__(self, labels, counts: np.ndarray) -> None:
        self.labels, self.counts, self.probs, self.uncertainty = labels, counts, None, None


def _predict_lazy(seg, data, progress, cancelled, name: str) -> _LazyPrediction:
    """Worker thread: segment lazy ``data`` tile by tile into a zarr in a temporary folder."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from ..mosaic import class_counts, create_labels_zarr

    folder = Path(tempfile.mkdtemp(prefix="csunet-labels-"))
    atexit.register(shutil.rmtree, folder, True)  # the layer's own store: napari's Save writes a copy
    labels = create_labels_zarr(folder / "labels.zarr", tuple(int(s) for s in data.shape[:2]), seg.info)
    seg.predict_to(data, labels, progress=progress, cancel=cancelled, name=name)
    return _LazyPrediction(labels, class_counts(labels, seg.info.num_classes))
