"""Inspect panel: phase area fractions and particle statistics, overlay style, disagreement.

Statistics are computed on a worker thread (particle labelling of a large image takes a moment)
and shown as a table that exports to CSV. The disagreement layer marks pixels that two label
layers (say the prediction and the corrected labels) both label, differently.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.layers import Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..atomic import atomic_write_text
from .common import LayerCombo, StatusLine, form_group
from .session import ModelSession

__all__ = ["InspectPanel", "disagreement"]

#: column -> (heading, tooltip); compact so the table fits a narrow dock
_HEADERS = {"class": ("class", "class name"), "area_fraction": ("area %", "share of the labelled pixels"),
            "particles": ("n", "particles (8-connected regions) of at least 'min particle px' pixels"),
            "mean_area_px": ("area", "mean particle area, pixels"),
            "mean_diameter_px": ("⌀", "mean equivalent diameter, pixels"),
            "median_diameter_px": ("⌀ med", "median equivalent diameter, pixels"),
            "pixels": ("pixels", "labelled pixels of the class")}


def disagreement(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask 1 where both label a pixel differently else 0, fraction of the jointly labelled pixels)."""
    if a.shape != b.shape:
        raise ValueError(f"the layers differ in shape: {a.shape} vs {b.shape}")
    both = (a > 0) & (b > 0)
    differ = both & (a != b)
    return differ.astype(np.uint8), float(differ.sum() / both.sum()) if both.any() else 0.0


class InspectPanel(QWidget):
    """Statistics table + CSV, contour/fill and opacity, disagreement layer."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        self.labels = LayerCombo(viewer, Labels)
        self.labels.currentIndexChanged.connect(self._sync_display)
        self.min_area = QSpinBox()
        self.min_area.setRange(1, 1_000_000)
        self.min_area.setToolTip("particles smaller than this (pixels) are not counted")
        self.compute_btn = QPushButton("Compute statistics")
        self.compute_btn.clicked.connect(lambda: self.compute())
        self.table = QTableWidget(0, len(_HEADERS))
        for c, (heading, tip) in enumerate(_HEADERS.values()):
            item = QTableWidgetItem(heading)
            item.setToolTip(tip)
            self.table.setHorizontalHeaderItem(c, item)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.export_btn = QPushButton("Export CSV…")
        self.export_btn.clicked.connect(lambda: self.export_csv())
        self.contours = QCheckBox("contours only")
        self.contours.toggled.connect(self._apply_display)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.valueChanged.connect(self._apply_display)
        self.layer_a = LayerCombo(viewer, Labels)
        self.layer_b = LayerCombo(viewer, Labels)
        self.diff_btn = QPushButton("Show disagreement")
        self.diff_btn.clicked.connect(lambda: self.show_disagreement())
        self.status = StatusLine()

        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Phases and particles", [("labels", self.labels), ("min particle px", self.min_area),
                                                             self.compute_btn, self.table, self.export_btn]))
        layout.addWidget(form_group("Display", [self.contours, ("opacity", self.opacity)]))
        layout.addWidget(form_group("Disagreement between two label layers", [
            ("A", self.layer_a), ("B", self.layer_b), self.diff_btn]))
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.rows: list[dict[str, Any]] = []
        self.worker = None
        self._sync_display()

    def layer(self) -> Labels | None:
        value = self.labels.value()
        return value if isinstance(value, Labels) else None

    def _class_names(self, layer: Labels) -> list[str]:
        from .._layerdata import class_names_from_features

        names = class_names_from_features(layer.features, layer.metadata) or []
        top = int(layer.data.max()) if layer.data.size else 0
        return names + [f"class {i}" for i in range(len(names) + 1, top + 1)]

    # -- statistics ----------------------------------------------------------------------------

    def compute(self):
        """Area fractions and particle statistics of the chosen layer, on a worker thread."""
        from ..analysis import class_statistics

        layer = self.layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first")
            return None
        if self.worker is not None:
            return None
        names = self._class_names(layer)
        data = np.asarray(layer.data).copy()  # painting may go on meanwhile
        self.compute_btn.setEnabled(False)
        self.status.info(f"measuring {layer.name} …")
        self.worker = create_worker(class_statistics, data, names, self.min_area.value(), _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(lambda rows: self._show(rows, layer.name))
        self.worker.errored.connect(lambda exc: self.status.error(f"statistics failed: {exc}"))
        self.worker.finished.connect(self._done)
        self.worker.start()
        return self.worker

    def _done(self) -> None:
        self.worker = None
        self.compute_btn.setEnabled(True)

    def _show(self, rows: list[dict[str, Any]], name: str) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(_HEADERS):
                value = row.get(key)
                text = ("—" if value is None else f"{100 * value:.2f}" if key == "area_fraction"
                        else f"{value:,.0f}" if isinstance(value, float) and value >= 100
                        else f"{value:.1f}" if isinstance(value, float)
                        else f"{value:,}" if isinstance(value, int) else str(value))
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.status.info(f"{name}: " + ", ".join(f"{r['class']} {r['area_fraction']:.1%}" for r in rows))

    def csv_text(self) -> str:
        from ..analysis import statistics_csv

        return statistics_csv(self.rows)

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
        a, b = self.layer_a.value(), self.layer_b.value()
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
