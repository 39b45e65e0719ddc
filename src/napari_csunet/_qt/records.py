"""One record per image, owned by the session: its pixel size and SEM data bar (the Inspect tab's
calibration, which the Segment tab leaves out), and once segmented which labels layer holds it, the
model's raw prediction (Revert, "what was painted"), the labels the last segmentation replaced
(Undo), the classes and their colours.

Panels ask the session's :class:`ImageRecords` for these facts, never a layer's metadata and never
one another, so "which image do these labels belong to" is decided here, once. A record goes when
its image layer leaves the viewer; the labels' facts go when the labels layer does. A labels layer
opened from disk has no record: its classes are what napari's reader put on it (the class names
and colours a saved labels file carries, :mod:`napari_csunet.plugin.layerdata`), read here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels

from ..images.databar import DataBar
from ..images.pixelsize import PixelSize
from ..plugin.layerdata import class_names_from_features
from .common import image_data

__all__ = ["ImageRecord", "ImageRecords", "UNREAD"]

#: a record's pixel size or data bar before anyone asked (then read from the file, or detected)
UNREAD: Any = type("Unread", (), {"__repr__": lambda self: "UNREAD"})()


def _raw(layer: Any) -> Any:
    """The layer itself, not napari's proxy of it (a plugin's viewer hands out a new proxy per access)."""
    return getattr(layer, "__wrapped__", layer)


@dataclass(eq=False)
class ImageRecord:
    """What the plugin knows about one image (``_qt.calibration`` reads and sets its calibration)."""

    image: Image | None  # None once the image is closed while its labels stay open (Revert, Undo still work)
    pixel_size: PixelSize | None = UNREAD  # None: unknown (lengths in px)
    databar: DataBar | None = UNREAD  # None: no data bar, or the user switched it off
    labels: Labels | None = None
    prediction: np.ndarray | None = None  # the model's labels as written (None for a zarr mosaic)
    previous: np.ndarray | None = None  # the labels the last segmentation replaced
    class_names: list[str] = field(default_factory=list)
    class_colors: list[str] = field(default_factory=list)
    model_name: str = ""

    def forget_labels(self) -> None:
        """The labels layer is gone: so are the prediction and the labels before it."""
        self.labels = self.prediction = self.previous = None


class ImageRecords:
    """The session's records, looked up by image or by labels layer; forgotten with their layers."""

    def __init__(self, viewer: napari.Viewer | None = None) -> None:
        self.viewer = viewer
        self._records: list[ImageRecord] = []
        if viewer is not None:
            viewer.layers.events.removed.connect(self._removed)

    def __len__(self) -> int:
        return len(self._records)

    def register(self, image: Image, labels: Labels, prediction: np.ndarray | None,
                 class_names: list[str], class_colors: list[str], previous: np.ndarray | None = None,
                 model_name: str = "") -> ImageRecord:
        """``labels`` now hold a segmentation of ``image``: its record, made or brought up to date
        (not kept when ``image`` was closed meanwhile: nothing would ever forget it)."""
        for other in self._records:  # the labels now belong to this image alone
            if other.labels is _raw(labels) and other.image is not _raw(image):
                other.forget_labels()
        if self.viewer is not None and not any(_raw(lay) is _raw(image) for lay in self.viewer.layers):
            record = ImageRecord(_raw(image))
        else:
            record = self.of_image(image)
        record.labels, record.prediction, record.previous = _raw(labels), prediction, previous
        record.class_names, record.class_colors = list(class_names), list(class_colors)
        record.model_name = model_name
        return record

    def of_image(self, image: Image) -> ImageRecord:
        """``image``'s record, made on first use (its calibration is asked for before any segmentation)."""
        record = self.for_image(image)
        if record is None:
            record = ImageRecord(_raw(image))
            self._records.append(record)
        return record

    def for_image(self, image: Image | None) -> ImageRecord | None:
        raw = _raw(image)
        return next((r for r in self._records if r.image is raw), None) if image is not None else None

    def for_labels(self, labels: Labels | None) -> ImageRecord | None:
        raw = _raw(labels)
        return next((r for r in self._records if r.labels is raw), None) if labels is not None else None

    def image_of(self, labels: Labels, guess: bool = False) -> Image | None:
        """The image ``labels`` were segmented from while it is open; with ``guess``, else the one open
        image of their shape (labels opened from disk, drawn by hand)."""
        record = self.for_labels(labels)
        if record is not None and self.viewer is not None and record.image in self.viewer.layers:
            return record.image
        if not guess or self.viewer is None:
            return None
        same = [lay for lay in self.viewer.layers if isinstance(lay, Image)
                and image_data(lay).shape[: labels.data.ndim] == labels.data.shape]
        return same[0] if len(same) == 1 else None

    def prediction(self, labels: Labels) -> np.ndarray | None:
        """The model's prediction behind ``labels``, when it still fits their data."""
        record = self.for_labels(labels)
        prediction = record.prediction if record is not None else None
        return prediction if prediction is not None and np.shape(prediction) == labels.data.shape else None

    def painted(self, labels: Labels) -> np.ndarray | None:
        """Where the user painted a class over the model's prediction (erased pixels excluded)."""
        prediction = self.prediction(labels)
        if prediction is None:
            return None
        data = np.asarray(labels.data)
        return (data != prediction) & (data > 0)

    def class_names(self, labels: Labels) -> list[str] | None:
        """The classes of labels 1..K: the record's, else those a labels file opened from disk carries."""
        record = self.for_labels(labels)
        if record is not None and record.class_names:
            return list(record.class_names)
        return class_names_from_features(labels.features, labels.metadata)

    def class_colors(self, labels: Labels) -> list[str] | None:
        """The colours of the classes: the record's, else those a labels file opened from disk carries."""
        record = self.for_labels(labels)
        if record is not None and record.class_colors:
            return list(record.class_colors)
        colors = labels.metadata.get("class_colors")
        return list(colors) if colors else None

    def _removed(self, event: Any) -> None:
        """An image closed: its record goes, unless its labels are still open (then only the image
        and its calibration go); labels closed: their facts go, and the record once both are gone."""
        layer = _raw(event.value)
        for record in self._records:
            if record.image is layer:
                record.image, record.pixel_size, record.databar = None, UNREAD, UNREAD
            if record.labels is layer:
                record.forget_labels()
        self._records = [r for r in self._records if r.image is not None or r.labels is not None]
