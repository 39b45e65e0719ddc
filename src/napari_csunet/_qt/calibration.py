"""Pixel size and SEM data bar of the chosen image: shown, editable, remembered in its record.

The pixel size comes from the file (layer ``source.path``), else a calibration remembered for
that file, else the user: typed in, or measured by drawing a line over the scale bar. It sets the
layers' ``scale`` and ``units``, so napari's scale bar reads µm. The data bar is found when an
image is chosen, drawn as a rectangle, and can be resized or switched off; the Segment tab leaves
those rows out (:func:`databar_of`), the statistics too. Both are kept in the image's record (the
session's :mod:`.records`); this module alone reads and sets them there.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..images.databar import DataBar, detect_databar
from ..images.pixelsize import (
    PixelSize,
    calibrate,
    read_pixel_size,
    recall_calibration,
    remember_calibration,
)
from .common import (
    OUTPUT,
    LayerPicker,
    StatusLine,
    form_group,
    hbox,
    image_data,
    is_input_image,
    labels_name,
)
from .records import UNREAD, ImageRecord, ImageRecords

__all__ = ["CalibrationBox", "databar_of", "pixel_size_of", "LINE_LAYER"]

LINE_LAYER = "scale bar line"
_UNITS = ("µm", "nm", "mm")


def _rows_of(layer: Image) -> int:
    data = image_data(layer)
    return int(data.shape[-3] if layer.rgb else data.shape[-2])


def _bar_name(layer: Image) -> str:
    return f"{layer.name} data bar (not analysed)"


def _detect_on_layer(layer: Image) -> DataBar | None:
    """Detect on the largest pyramid level of at most 4096 rows (never loading a huge level 0)."""
    if not layer.multiscale:
        return detect_databar(np.asarray(layer.data))
    levels = list(layer.data)
    level = next((lv for lv in levels if lv.shape[-3 if layer.rgb else -2] <= 4096), levels[-1])
    found = detect_databar(np.asarray(level))
    if found is None:
        return None
    ratio = _rows_of(layer) / level.shape[-3 if layer.rgb else -2]
    return DataBar(found.side, int(np.ceil(found.rows * ratio)))


def databar_of(record: ImageRecord, data: Any = None) -> DataBar | None:
    """The image's data bar: as the user left it, else detected now (on ``data``, its pixels, when
    given) and remembered in its record. Runs on the Segment tab's worker thread too."""
    if record.databar is UNREAD:
        record.databar = detect_databar(np.asarray(data)) if data is not None else _detect_on_layer(record.image)
    return record.databar


def pixel_size_of(record: ImageRecord) -> PixelSize | None:
    """The image's pixel size: as set here, else from its file or a remembered calibration."""
    if record.pixel_size is UNREAD:
        path = getattr(record.image.source, "path", None)
        record.pixel_size = (read_pixel_size(path) or recall_calibration(path)) if path else None
    return record.pixel_size


class CalibrationBox(QWidget):
    """Image picker, pixel size (from file / typed / scale-bar line), data bar rows and side."""

    changed = Signal()

    def __init__(self, viewer: napari.Viewer, records: ImageRecords, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.records = viewer, records
        self.image = LayerPicker(viewer, Image, accept=is_input_image)
        self.size = QDoubleSpinBox()
        self.size.setRange(0.0, 1e5)
        self.size.setDecimals(5)
        self.size.setStepType(QDoubleSpinBox.StepType.AdaptiveDecimalStepType)  # nm and mm pixels alike
        self.size.setSuffix(" µm/px")
        self.size.setSpecialValueText("unknown (px)")
        self.size.setToolTip("micrometres per pixel; 0 = unknown")
        self.source = QLabel()
        self.source.setWordWrap(True)
        self.bar_length = QDoubleSpinBox()
        self.bar_length.setRange(0.0, 1e6)
        self.bar_length.setValue(1.0)
        self.bar_unit = QComboBox()
        self.bar_unit.addItems(_UNITS)
        self.line_btn = QPushButton("Measure a line over the scale bar")
        self.line_btn.setToolTip(f"draw a line over the scale bar in the '{LINE_LAYER}' layer, type its length")
        self.use_bar = QCheckBox("leave out")
        self.use_bar.setToolTip("the instrument's data bar (text, scale bar) is not material: leave its rows out "
                                "of the segmentation and the statistics")
        self.bar_rows = QSpinBox()
        self.bar_rows.setRange(0, 100_000)
        self.bar_rows.setToolTip("rows of the data bar, counted from the image edge")
        self.bar_side = QComboBox()
        self.bar_side.addItems(["bottom", "top"])
        self.status = StatusLine()
        self._box = form_group("Pixel size and data bar", [
            ("image", self.image), ("pixel size", self.size), self.source,
            ("scale bar", hbox(self.bar_length, self.bar_unit)), self.line_btn,
            ("data bar", hbox(self.use_bar, self.bar_rows, self.bar_side)), self.status])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._box)
        self._shown: str | None = None
        self.image.changed.connect(self._image_changed)
        viewer.layers.events.inserted.connect(self._adopt)
        self.size.editingFinished.connect(self._typed_size)
        self.line_btn.clicked.connect(lambda: self.calibrate_from_line())
        for w in (self.use_bar, self.bar_rows, self.bar_side):
            signal = w.toggled if isinstance(w, QCheckBox) else (w.valueChanged if isinstance(w, QSpinBox)
                                                                  else w.currentIndexChanged)
            signal.connect(self._bar_edited)
        self.load()

    def _image_changed(self, *_: object) -> None:
        layer = self.layer()
        if layer is not None and layer.name != self._shown:  # layer-list churn re-emits the same choice
            self.load()

    def _adopt(self, event: Any) -> None:
        """A labels layer written for the shown image later takes its scale and units."""
        layer = self.layer()
        if layer is not None and getattr(event.value, "name", None) == labels_name(layer.name):
            self._apply_scale(layer, pixel_size_of(self.records.of_image(layer)), reset=False)

    def layer(self) -> Image | None:
        value = self.image.value
        return value if isinstance(value, Image) else None

    def _set_quietly(self, widget: QWidget, value: Any) -> None:
        widget.blockSignals(True)
        if isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, QComboBox):
            widget.setCurrentText(str(value))
        else:
            widget.setValue(value)
        widget.blockSignals(False)

    def load(self) -> None:
        """Show the chosen image's pixel size and data bar (read or detected on first sight)."""
        layer = self.layer()
        if layer is None:
            return
        self._shown = layer.name
        record = self.records.of_image(layer)
        size, bar = pixel_size_of(record), databar_of(record)
        self._set_quietly(self.size, size.mean_um if size else 0.0)
        self.source.setText(size.describe() if size else "the file states no pixel size: type it or use a scale bar line")
        self._set_quietly(self.use_bar, bar is not None)
        self._set_quietly(self.bar_rows, bar.rows if bar else 0)
        self._set_quietly(self.bar_side, bar.side if bar else "bottom")
        self._apply_scale(layer, size)
        self._draw_bar(layer, bar)
        self.changed.emit()

    def pixel_size(self) -> PixelSize | None:
        layer = self.layer()
        return pixel_size_of(self.records.of_image(layer)) if layer is not None else None

    def databar(self) -> DataBar | None:
        layer = self.layer()
        return databar_of(self.records.of_image(layer)) if layer is not None else None

    def set_pixel_size(self, size: PixelSize | None) -> None:
        layer = self.layer()
        if layer is None:
            self.status.error("open an image first")
            return
        self.records.of_image(layer).pixel_size = size
        self.load()

    def _typed_size(self) -> None:
        value = self.size.value()
        current = self.pixel_size()
        if current is not None and np.isclose(value, current.mean_um):
            return
        self.set_pixel_size(PixelSize(value, value, "typed in") if value > 0 else None)

    def calibrate_from_line(self) -> PixelSize | None:
        """Pixel size from the last line drawn in the scale-bar layer (made and armed on first use)."""
        layer = self.layer()
        if layer is None:
            self.status.error("open an image first")
            return None
        lines = self.viewer.layers[LINE_LAYER] if LINE_LAYER in self.viewer.layers else None
        if not isinstance(lines, Shapes) or not len(lines.data):
            if not isinstance(lines, Shapes):
                lines = self.viewer.add_shapes(name=LINE_LAYER, scale=layer.scale[-2:], units=layer.units[-2:],
                                               edge_color="#ffd000",
                                               edge_width=2, metadata={OUTPUT: True})
            lines.mode = "add_line"
            self.viewer.layers.selection.active = lines
            self.status.info(f"draw a line along the scale bar in '{LINE_LAYER}', type its length, click again")
            return None
        ends = np.asarray(lines.data[-1])[[0, -1], -2:] * lines.scale[-2:] / layer.scale[-2:]
        try:
            size = calibrate(float(np.linalg.norm(ends[1] - ends[0])), self.bar_length.value(), self.bar_unit.currentText())
        except ValueError as exc:
            self.status.error(str(exc))
            return None
        path = getattr(layer.source, "path", None)
        if path:
            remember_calibration(path, size)
        self.set_pixel_size(size)
        self.status.info(f"{size.describe()}" + (" · remembered for this file" if path else ""))
        return size

    def _apply_scale(self, layer: Image, size: PixelSize | None, reset: bool = True) -> None:
        """Scale and units of the image, its labels layer, the data bar and scale-bar line layers."""
        yx, unit = ((size.y_um, size.x_um), "um") if size else ((1.0, 1.0), "pixel")
        names = (labels_name(layer.name), _bar_name(layer), LINE_LAYER)
        targets = [layer] + [lay for lay in self.viewer.layers if isinstance(lay, Labels | Shapes) and lay.name in names]
        changed = False
        for lay in targets:
            if tuple(lay.scale[-2:]) != yx:
                lay.scale = (*lay.scale[:-2], *yx)
                changed = True
            try:
                lay.units = (*lay.units[:-2], unit, unit)
            except (AttributeError, ValueError):  # napari < 0.6 has no layer units
                pass
        self.viewer.scale_bar.visible = size is not None
        if changed and reset:
            self.viewer.reset_view()  # the image's extent in world units changed

    def _bar_edited(self, *_: object) -> None:
        layer = self.layer()
        if layer is None:
            return
        rows = self.bar_rows.value()
        bar = DataBar(self.bar_side.currentText(), rows) if self.use_bar.isChecked() and rows > 0 else None
        self.records.of_image(layer).databar = bar
        self._draw_bar(layer, bar)
        self.changed.emit()

    def _draw_bar(self, layer: Image, bar: DataBar | None) -> None:
        name = _bar_name(layer)
        shapes = self.viewer.layers[name] if name in self.viewer.layers else None
        if bar is None:
            if shapes is not None:
                shapes.visible = False
            return
        height, width = _rows_of(layer), image_data(layer).shape[-2 if layer.rgb else -1]
        edge = bar.boundary(height) - 0.5
        far = height - 0.5 if bar.side == "bottom" else -0.5
        rect = np.array([[edge, -0.5], [edge, width - 0.5], [far, width - 0.5], [far, -0.5]])
        if isinstance(shapes, Shapes):
            shapes.data = [rect]
            shapes.visible = True
        else:
            self.viewer.add_shapes([rect], shape_type="rectangle", name=name, scale=layer.scale[-2:],
                                   units=layer.units[-2:], edge_color="#ff5050", face_color=[0.6, 0.6, 0.6, 0.35],
                                   edge_width=2, metadata={OUTPUT: True})
            self.viewer.layers.selection.active = layer
