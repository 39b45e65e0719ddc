"""Correct panel: paint with named classes, revert, and add corrected images to the training set.

The palette and keys 1..9 pick the brush class (0 = unlabelled is the eraser). "Add to training
set" writes the image and its labels to the annotation folder at once (optionally only inside a
rectangle of a Shapes layer), so nothing is lost if napari dies; the list shows what is saved.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QGridLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._layerdata import class_names_from_features
from ..annotations import Annotation, AnnotationError, AnnotationStore
from .common import LayerCombo, StatusLine, form_group, hbox, image_data
from .segment_panel import IMAGE, PREDICTION, PREVIOUS
from .session import ModelSession

__all__ = ["CorrectPanel", "WHOLE_IMAGE"]

WHOLE_IMAGE = "whole image"


class CorrectPanel(QWidget):
    """Class palette, revert/undo, the annotation set."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, store: AnnotationStore | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        self.store = store or AnnotationStore()
        self.labels = LayerCombo(viewer, Labels)
        self.labels.currentIndexChanged.connect(self._on_labels_changed)
        self.palette_box = QWidget()
        self.palette = QGridLayout(self.palette_box)
        self.palette.setContentsMargins(0, 0, 0, 0)
        self.class_buttons: list[QPushButton] = []
        self.revert_btn = QPushButton("Revert to prediction")
        self.revert_btn.clicked.connect(lambda: self.revert())
        self.undo_btn = QPushButton("Undo last re-segment")
        self.undo_btn.clicked.connect(lambda: self.undo_resegment())
        self.region = LayerCombo(viewer, Shapes, extra=(WHOLE_IMAGE,))
        self.add_btn = QPushButton("Add to training set")
        self.add_btn.clicked.connect(lambda: self.add_to_training_set())
        self.table = QTableWidget(0, 2)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.remove_btn = QPushButton("Remove selected")
        self.remove_btn.clicked.connect(lambda: self.remove_selected())
        self.status = StatusLine(f"annotations are saved in {self.store.root}")

        buttons = hbox(self.revert_btn, self.undo_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Paint", [("labels", self.labels), self.palette_box, buttons]))
        layout.addWidget(form_group("Training set", [("region", self.region), self.add_btn, self.table,
                                                     self.remove_btn]))
        layout.addWidget(self.status)
        layout.addStretch(1)
        session.changed.connect(self._on_labels_changed)
        self._on_labels_changed()
        self.refresh_list()

    # -- the labels layer and its classes ------------------------------------------------------

    def layer(self) -> Labels | None:
        value = self.labels.value()
        return value if isinstance(value, Labels) else None

    def set_labels_layer(self, layer: Labels) -> None:
        self.labels.set_value(layer.name)
        self._on_labels_changed()

    def class_names(self, layer: Labels | None = None) -> list[str]:
        """The classes of ``layer`` (its metadata/features), else the current model's."""
        layer = layer or self.layer()
        names = class_names_from_features(layer.features, layer.metadata) if layer is not None else None
        if names:
            return names
        return list(self.session.info.class_names) if self.session.info is not None else []

    def _class_colors(self, layer: Labels | None, n: int) -> list[str]:
        colors = (layer.metadata.get("class_colors") if layer is not None else None) or []
        if len(colors) == n:
            return list(colors)
        if layer is not None:  # from the layer's colormap
            from napari.utils.colormaps.standardize_color import rgb_to_hex

            return [rgb_to_hex(layer.colormap.map(i + 1))[0][:7] for i in range(n)]
        return ["#808080"] * n

    def _on_labels_changed(self, *_: object) -> None:
        layer = self.layer()
        names = self.class_names(layer)
        colors = self._class_colors(layer, len(names))
        for button in self.class_buttons:
            self.palette.removeWidget(button)
            button.deleteLater()
        self.class_buttons = []
        entries = [("0 eraser (unlabelled)", "transparent", 0)]
        entries += [(f"{i + 1} {n}", c, i + 1) for i, (n, c) in enumerate(zip(names, colors, strict=False))]
        for pos, (text, color, value) in enumerate(entries):
            button = QPushButton(text)
            button.setCheckable(True)
            if color != "transparent":
                button.setStyleSheet(f"QPushButton {{ border-left: 14px solid {color}; text-align: left; padding-left: 4px }}")
            button.clicked.connect(lambda _=False, v=value: self.set_class(v))
            self.palette.addWidget(button, pos // 2, pos % 2)
            self.class_buttons.append(button)
        if layer is not None:
            self._bind_keys(layer, len(names))
            self._check(layer.selected_label)
        for w in (self.revert_btn, self.undo_btn, self.add_btn):
            w.setEnabled(layer is not None)

    def _bind_keys(self, layer: Labels, n: int) -> None:
        """Keys 1..9 pick a class on this layer (they replace napari's mode keys 1-7 here)."""
        for value in range(1, min(n, 9) + 1):
            layer.bind_key(str(value), lambda _layer, v=value: self.set_class(v), overwrite=True)

    def set_class(self, value: int) -> None:
        """Paint with class ``value`` (0 erases back to unlabelled)."""
        layer = self.layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first")
            return
        layer.selected_label = value
        if layer.mode not in ("paint", "fill", "polygon"):
            layer.mode = "paint"
        self._check(value)
        names = self.class_names(layer)
        self.status.info(f"painting {names[value - 1] if 0 < value <= len(names) else 'unlabelled (eraser)'}")

    def _check(self, value: int) -> None:
        for i, button in enumerate(self.class_buttons):
            button.setChecked(i == value)

    # -- revert / undo -------------------------------------------------------------------------

    def _restore(self, key: str, what: str) -> None:
        layer = self.layer()
        stored = layer.metadata.get(key) if layer is not None else None
        if stored is None or stored.shape != layer.data.shape:
            self.status.error(f"no {what} stored for this layer")
            return
        current = layer.data
        layer.data = stored.copy()
        if key == PREVIOUS:
            layer.metadata[PREVIOUS] = current
        self.status.info(f"restored the {what}")

    def revert(self) -> None:
        """Throw the painted corrections away: back to the model's prediction."""
        self._restore(PREDICTION, "prediction")

    def undo_resegment(self) -> None:
        """Back to the labels the last Segment replaced (e.g. corrections made before it)."""
        self._restore(PREVIOUS, "labels from before the last segmentation")

    # -- training set --------------------------------------------------------------------------

    def _image_for(self, layer: Labels) -> Image | None:
        name = layer.metadata.get(IMAGE)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Image):
            return self.viewer.layers[name]
        same = [lay for lay in self.viewer.layers if isinstance(lay, Image)
                and image_data(lay).shape[: layer.data.ndim] == layer.data.shape]
        return same[0] if len(same) == 1 else None

    def _region(self, layer: Labels) -> list[int] | None:
        shapes = self.region.value()
        if not isinstance(shapes, Shapes):
            return None
        if not len(shapes.data):
            raise AnnotationError(f"the Shapes layer {shapes.name!r} has no rectangle: draw one or choose 'whole image'")
        index = max(shapes.selected_data) if shapes.selected_data else len(shapes.data) - 1
        points = np.array([layer.world_to_data(shapes.data_to_world(v)) for v in np.asarray(shapes.data[index])])[:, -2:]
        r0, c0 = np.floor(points.min(axis=0)).astype(int)
        r1, c1 = np.ceil(points.max(axis=0)).astype(int)
        return [int(r0), int(c0), int(r1), int(c1)]

    def add_to_training_set(self) -> Annotation | None:
        """Save the image and its labels (0 = unlabelled) to the annotation folder now."""
        layer = self.layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first, then correct it")
            return None
        image = self._image_for(layer)
        if image is None:
            self.status.error(f"which image do {layer.name!r} belong to? Segment the image to pair them")
            return None
        pixels, labels = np.asarray(image_data(image)), np.asarray(layer.data)
        if labels.ndim == 3 and not image.rgb or labels.ndim > 3:
            z = int(round(layer.world_to_data(self.viewer.dims.point)[0]))
            pixels, labels = pixels[z], labels[z]
        try:
            region = self._region(layer)
            names = self.class_names(layer)
            entry = self.store.add(pixels, labels, name=image.name, class_names=names,
                                   class_colors=self._class_colors(layer, len(names)), region=region)
        except (AnnotationError, OSError) as exc:
            self.status.error(f"not added: {exc}")
            return None
        prediction = layer.metadata.get(PREDICTION)
        unchanged = prediction is not None and prediction.shape == layer.data.shape and np.array_equal(prediction, layer.data)
        self.refresh_list()
        text = f"saved {entry.name}: {entry.labelled} labelled pixels ({len(self.store)} in the set)"
        if unchanged:
            self.status.warning(text + "; these labels equal the prediction: paint corrections to teach the model")
        else:
            self.status.info(text)
        return entry

    def refresh_list(self) -> None:
        try:
            entries = self.store.entries()
        except AnnotationError as exc:
            self.status.error(str(exc))
            entries = []
        names = self.store.class_names if entries else []
        self.table.setColumnCount(1 + len(names))
        self.table.setHorizontalHeaderLabels(["image", *names])
        self.table.setRowCount(len(entries))
        for r, entry in enumerate(entries):
            item = QTableWidgetItem(entry.name + (" (region)" if entry.region else ""))
            item.setData(Qt.ItemDataRole.UserRole, entry.id)
            self.table.setItem(r, 0, item)
            for c, name in enumerate(names):
                self.table.setItem(r, c + 1, QTableWidgetItem(f"{entry.counts.get(name, 0):,}"))
        self.table.resizeColumnsToContents()
        self.remove_btn.setEnabled(bool(entries))

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if not rows:
            self.status.error("select an annotation in the list first")
            return
        for r in rows:
            self.store.remove(self.table.item(r, 0).data(Qt.ItemDataRole.UserRole))
        self.refresh_list()
        self.status.info(f"removed {len(rows)} annotation(s); {len(self.store)} left")
