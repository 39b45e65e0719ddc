"""Inspect panel: measurements in physical units with plots, overlay style, disagreement.

The pixel size and the data bar of the image come from the calibration box on top. Measurements
(:mod:`napari_csunet.measure.measurements`) and their plots (:mod:`napari_csunet.measure.plots`, rendered to PNG)
are computed on a worker thread and shown as a table that exports to CSV, a fractions plot with
95 % intervals and a size histogram with log bins. The disagreement layer marks pixels that two
label layers (say the prediction and the corrected labels) both label, differently.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..atomic import atomic_write_text
from ..measure.measurements import DEFAULT_MIN_AREA
from .calibration import CalibrationBox, databar_of, pixel_size_of
from .common import LayerPicker, StatusLine, form_group, image_data, is_input_image
from .session import ModelSession

__all__ = ["InspectPanel", "disagreement"]

AUTO_MATRIX = "auto (by name, else largest)"
#: column -> (heading, tooltip); compact so the table fits a narrow dock; {u} = µm or px
_HEADERS: dict[str, tuple[str, str]] = {"class": ("class", "class name"),
            "area_fraction": ("area %", "share of the analysed pixels (the data bar is not analysed)"),
            "ci": ("95 % CI", "block bootstrap over 8 x 8 tiles of the image"),
            "particles_sized": ("n", "particles (8-connected regions of at least 'min particle' pixels) not cut by the "
                                     "image edge: the ones the sizes and the histogram are of; a matrix or a "
                                     "continuous phase (a layer, a network) has none"),
            "density_per_mm2": ("/mm²", "particles per mm² (edge-cut ones count half)"),
            "mean_eq_diameter": ("⌀ {u}", "mean equivalent diameter of the particles not cut by the edge"),
            "median_eq_diameter": ("⌀ med", "median equivalent diameter"),
            "astm_grain_size": ("G", "ASTM E112 grain size number from the mean lineal intercept (grain structures)")}


def _cell(row: dict[str, Any], key: str, unit: str) -> str:
    """Table text of one measurement; lengths in µm when the pixel size is known, else px."""
    if key == "ci":
        low, high = row["fraction_ci_low"], row["fraction_ci_high"]
        return "—" if low is None or high is None else f"{100 * low:.1f}–{100 * high:.1f}"
    value = row.get(f"{key}_{'um' if unit == 'µm' else 'px'}", row.get(key))
    if value is None:
        return "—"
    if key == "area_fraction":
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 1000 else f"{value:.2e}".replace("e+0", "e").replace("e+", "e")
    return f"{value:,}" if isinstance(value, int) else str(value)


#: the particle columns: one cell saying why for a class without particle statistics
_PARTICLE_KEYS = ("particles_sized", "density_per_mm2", "mean_eq_diameter", "median_eq_diameter")


def _no_particles_text(row: dict[str, Any]) -> str:
    """The table's short word for a matrix or continuous phase (the reason is its tooltip and note)."""
    if row["role"] == "continuous":
        return "continuous phase"
    return row["role"] if row["pixels"] else "absent"


def _own_size(layer: Labels) -> Any:
    """A labels layer's own pixel size, when its scale is in micrometres (e.g. a reopened labels file)."""
    from ..images.pixelsize import PixelSize

    if all(str(u) == "micrometer" for u in layer.units[-2:]):
        return PixelSize(float(layer.scale[-1]), float(layer.scale[-2]), "the labels layer's scale")
    return None


def _measure_and_plot(*args: Any) -> tuple[Any, bytes, bytes]:
    """Worker thread: the measurement and its plots, computed in a child process (they hold the GIL
    for hundreds of ms: on a thread here they froze napari); see :mod:`napari_csunet.loop.child_process`."""
    from ..loop.child_process import run_in_child
    from ..measure.plots import measurement_with_plots

    return run_in_child(measurement_with_plots, *args)


def disagreement(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask 1 where both label a pixel differently else 0, fraction of the jointly labelled pixels)."""
    if a.shape != b.shape:
        raise ValueError(f"the layers differ in shape: {a.shape} vs {b.shape}")
    both = (a > 0) & (b > 0)
    differ = both & (a != b)
    return differ.astype(np.uint8), float(differ.sum() / both.sum()) if both.any() else 0.0


class Picture(QLabel):
    """A plot that shrinks to the width it is given (aspect kept), so it never makes the dock wider."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.original = QPixmap()
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def set_png(self, png: bytes) -> None:
        self.original.loadFromData(png, "PNG")
        self._fit()

    def _fit(self) -> None:
        if not self.original.isNull():
            width = max(1, min(self.width(), self.original.width()))
            self.setPixmap(self.original.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation))
            self.setFixedHeight(self.pixmap().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self.pixmap() is None or self.pixmap().width() != min(self.width(), self.original.width()):
            self._fit()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.original.size() if not self.original.isNull() else QSize(0, 0)


class InspectPanel(QWidget):
    """Statistics table + CSV, contour/fill and opacity, disagreement layer."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        self.calibration = CalibrationBox(viewer, session.records)
        self.labels = LayerPicker(viewer, Labels, accept=is_input_image)  # not a changes layer
        self.labels.changed.connect(self._sync_display)
        self.min_area = QSpinBox()
        self.min_area.setRange(1, 1_000_000)
        self.min_area.setValue(DEFAULT_MIN_AREA)
        self.min_area.setSuffix(" px")
        self.min_area.setToolTip("particles smaller than this are not counted (default 3 x 3 px: speckle is not a particle)")
        self.matrix = QComboBox()
        self.matrix.setToolTip("the continuous phase: not counted as particles")
        self.compute_btn = QPushButton("Compute statistics")
        self.compute_btn.clicked.connect(lambda: self.compute())
        self.table = QTableWidget(0, len(_HEADERS))
        for c, (heading, tip) in enumerate(_HEADERS.values()):
            item = QTableWidgetItem(heading.format(u="px"))
            item.setToolTip(tip)
            self.table.setHorizontalHeaderItem(c, item)
        self.table.verticalHeader().setVisible(False)
        self.table.setSizeAdjustPolicy(QTableWidget.SizeAdjustPolicy.AdjustToContents)  # its rows, no empty slab
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.note = QLabel()  # why a class has no particle statistics
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.fractions_plot, self.sizes_plot = Picture(), Picture()
        self.export_btn = QPushButton("Export CSV…")
        self.export_btn.clicked.connect(lambda: self.export_csv())
        self.contours = QCheckBox("contours only")
        self.contours.toggled.connect(self._apply_display)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.valueChanged.connect(self._apply_display)
        self.layer_a = LayerPicker(viewer, Labels)
        self.layer_b = LayerPicker(viewer, Labels)
        for combo in (self.layer_a, self.layer_b):
            combo.changed.connect(self._pick_distinct)
        self.diff_btn = QPushButton("Show disagreement")
        self.diff_btn.clicked.connect(lambda: self.show_disagreement())
        self.status = StatusLine()

        layout = QVBoxLayout(self)
        layout.addWidget(self.calibration)
        layout.addWidget(form_group("Phases and particles", [
            ("labels", self.labels), ("matrix", self.matrix), ("min particle", self.min_area), self.compute_btn,
            self.table, self.note, self.fractions_plot, self.sizes_plot, self.export_btn]))
        layout.addWidget(form_group("Display", [self.contours, ("opacity", self.opacity)]))
        layout.addWidget(form_group("Disagreement between two label layers", [
            ("A", self.layer_a), ("B", self.layer_b), self.diff_btn]))
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.rows: list[dict[str, Any]] = []
        self.measurement = None
        self.worker = None
        self._sync_display()
        self._pick_distinct()

    def layer(self) -> Labels | None:
        value = self.labels.value
        return value if isinstance(value, Labels) else None

    def _class_names(self, layer: Labels) -> list[str]:
        from ..models.modelfile import numbered_class_names

        names = self.session.records.class_names(layer) or []
        top = int(layer.data.max()) if layer.data.size else 0
        return names + numbered_class_names(top)[len(names):]

    def _pick_distinct(self, *_: object) -> None:
        """A and B on two different layers (the disagreement of a layer with itself is nothing)."""
        layers = self.layer_b.layers()
        if len(layers) > 1 and self.layer_a.value is self.layer_b.value:
            with self.layer_b.changed.blocked():
                self.layer_b.value = next(lay for lay in layers if lay is not self.layer_a.value)

    # -- statistics ----------------------------------------------------------------------------

    def _image_of(self, layer: Labels) -> Image | None:
        """The image the labels belong to: the one segmented into them, else the calibration's image."""
        segmented = self.session.records.image_of(layer)
        if segmented is not None:
            if self.calibration.image.current_choice != segmented.name:
                self.calibration.image.choose(segmented.name)
            return segmented
        image = self.calibration.layer()
        if image is not None and image_data(image).shape[:2 if image.rgb else None][-2:] == layer.data.shape[-2:]:
            return image
        return None

    def _sync_matrix(self, names: list[str]) -> str | None:
        current = self.matrix.currentText()
        if [self.matrix.itemText(i) for i in range(1, self.matrix.count())] != names:
            self.matrix.blockSignals(True)
            self.matrix.clear()
            self.matrix.addItems([AUTO_MATRIX, *names])
            self.matrix.setCurrentText(current if current in names else AUTO_MATRIX)
            self.matrix.blockSignals(False)
        return None if self.matrix.currentText() == AUTO_MATRIX else self.matrix.currentText()

    def compute(self):
        """Measurements of the chosen layer with the image's pixel size and data bar, on a worker thread."""
        from ..models.modelfile import default_class_colors

        layer = self.layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first")
            return None
        if self.worker is not None:
            return None
        names = self._class_names(layer)
        colors = self.session.records.class_colors(layer) or default_class_colors(len(names))
        image = self._image_of(layer)
        record = self.session.records.of_image(image) if image is not None else None
        size, bar = (pixel_size_of(record), databar_of(record)) if record is not None else (_own_size(layer), None)
        data = np.asarray(layer.data).copy()  # painting may go on meanwhile
        self.compute_btn.setEnabled(False)
        self.status.info(f"measuring {layer.name} …")
        self.worker = create_worker(_measure_and_plot, data, names, colors, size, bar, self._sync_matrix(names),
                                    self.min_area.value(), _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(lambda result: self._show(result, layer.name))
        self.worker.errored.connect(lambda exc: self.status.error(f"statistics failed: {exc}"))
        self.worker.finished.connect(self._done)
        self.worker.start()
        return self.worker

    def _done(self) -> None:
        self.worker = None
        self.compute_btn.setEnabled(True)

    def _show(self, result: tuple[Any, bytes, bytes], name: str) -> None:
        self.measurement, fractions_png, sizes_png = result
        rows = self.rows = self.measurement.rows
        unit = "µm" if rows and rows[0]["pixel_size_um"] else "px"
        for c, (heading, _tip) in enumerate(_HEADERS.values()):
            self.table.horizontalHeaderItem(c).setText(heading.format(u=unit))
        self._fill_table(rows, unit)
        self.fractions_plot.set_png(fractions_png)
        self.sizes_plot.set_png(sizes_png)
        bar = rows[0]["databar_rows"] if rows else 0
        self.status.info(f"{name}: " + ", ".join(f"{r['class']} {r['area_fraction']:.1%}" for r in rows)
                         + (f" · data bar ({bar} rows) not analysed" if bar else "")
                         + ("" if unit == "µm" else " · no pixel size: sizes in px"))

    def _fill_table(self, rows: list[dict[str, Any]], unit: str) -> None:
        """One row per class; a class without particle statistics says why across the particle columns."""
        self.table.clearSpans()
        self.table.setRowCount(len(rows))
        keys = list(_HEADERS)
        first = keys.index(_PARTICLE_KEYS[0])
        for r, row in enumerate(rows):
            for c, key in enumerate(keys):
                self.table.setItem(r, c, QTableWidgetItem(_cell(row, key, unit)))
            if row["role"] != "particles":
                item = QTableWidgetItem(_no_particles_text(row))
                item.setToolTip(row["role_reason"] or "no pixels of this class")
                self.table.setItem(r, first, item)
                self.table.setSpan(r, first, 1, len(_PARTICLE_KEYS))
        self.table.resizeColumnsToContents()
        notes = [f"{row['class']}: {row['role_reason']}" for row in rows if row["role"] == "continuous"]
        self.note.setText("\n".join(notes))
        self.note.setVisible(bool(notes))

    def csv_text(self) -> str:
        from ..measure.measurements import FIELDS
        from ..measure.report import statistics_csv

        return statistics_csv(self.rows, (), FIELDS)

    def export_csv(self, path: str | None = None) -> str | None:
        if not self.rows:
            self.status.error("nothing to export: compute the statistics first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export statistics", "phase_statistics.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            atomic_write_text(path, self.csv_text())
        except OSError as exc:
            self.status.error(f"could not write {path}: {exc}")
            return None
        self.status.info(f"saved {path}")
        return path

    # -- display -------------------------------------------------------------------------------

    def _sync_display(self, *_: object) -> None:
        layer = self.layer()
        if layer is None:
            return
        for w, value in ((self.contours, layer.contour > 0), (self.opacity, int(round(layer.opacity * 100)))):
            w.blockSignals(True)
            (w.setChecked if isinstance(w, QCheckBox) else w.setValue)(value)
            w.blockSignals(False)

    def _apply_display(self, *_: object) -> None:
        layer = self.layer()
        if layer is not None:
            layer.contour = 2 if self.contours.isChecked() else 0
            layer.opacity = self.opacity.value() / 100

    # -- disagreement --------------------------------------------------------------------------

    def show_disagreement(self) -> Labels | None:
        a, b = self.layer_a.value, self.layer_b.value
        if not isinstance(a, Labels) or not isinstance(b, Labels) or a.name == b.name:
            self.status.error("choose two different label layers (e.g. the prediction and the corrected labels)")
            return None
        try:
            mask, fraction = disagreement(np.asarray(a.data), np.asarray(b.data))
        except ValueError as exc:
            self.status.error(str(exc))
            return None
        name = f"disagreement: {a.name} vs {b.name}"
        kwargs = {"colormap": {None: "transparent", 0: "transparent", 1: "#ff00ff"},
                  "features": {"index": [0, 1], "class": ["agree", "disagree"]}}
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = mask
        else:
            layer = self.viewer.add_labels(mask, name=name, scale=a.scale, translate=a.translate, opacity=0.8, **kwargs)
        self.status.info(f"{fraction:.2%} of the pixels labelled in both layers disagree")
        return layer
