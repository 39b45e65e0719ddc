"""The Correct tab's training-set box: what will train, "Add to training set", the saved list.

Only pixels the user vouched for train: painted ones (label != the model's prediction), those
inside the rectangles of a Shapes layer (checked areas, accepted as predicted), or every labelled
pixel with "whole image". The count of those pixels is shown before adding, so an image whose
labels are 97% the model's own output is not mistaken for a corrected one.
"""

from __future__ import annotations

from collections.abc import Callable

import napari
import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QGroupBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..annotations import (
    ACCEPTED,
    PAINTED,
    Annotation,
    AnnotationError,
    AnnotationStore,
    correction_mask,
)
from .common import LayerPicker, StatusLine, form_group, image_data, is_input_image
from .segment_panel import IMAGE, PREDICTION
from .serial_worker import SerialWorker

__all__ = ["TrainingSetBox", "PAINTED_ONLY", "WHOLE_IMAGE"]

PAINTED_ONLY = "painted pixels only"
WHOLE_IMAGE = "whole image (every label is right)"


def shape_regions(shapes: Shapes, layer: Labels) -> list[list[int]]:
    """Every shape's bounding box in ``layer``'s pixels, as [row0, col0, row1, col1]."""
    regions = []
    for vertices in shapes.data:
        points = np.array([layer.world_to_data(shapes.data_to_world(v)) for v in np.asarray(vertices)])[:, -2:]
        r0, c0 = np.floor(points.min(axis=0)).astype(int)
        r1, c1 = np.ceil(points.max(axis=0)).astype(int)
        regions.append([int(r0), int(c0), int(r1), int(c1)])
    return regions


class TrainingSetBox(QWidget):
    """Region choice, live count of the pixels that will train, Add, the saved list, Remove."""

    def __init__(self, viewer: napari.Viewer, store: AnnotationStore, layer: Callable[[], Labels | None],
                 class_names: Callable[[Labels], list[str]], class_colors: Callable[[Labels, int], list[str]],
                 status: StatusLine, writer: SerialWorker | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.store, self.status = viewer, store, status
        self.writer = writer or SerialWorker("csunet-annotations", self)  # the annotation set's writes
        self._layer, self._class_names, self._class_colors = layer, class_names, class_colors
        self.region = LayerPicker(viewer, Shapes, extra=(PAINTED_ONLY, WHOLE_IMAGE), accept=is_input_image,
                                  tooltip="which pixels train: those you painted, plus every pixel inside the "
                                          "rectangles of a Shapes layer (areas you checked), or the whole image")
        self.preview = StatusLine()
        self.add_btn = QPushButton("Add to training set")
        self.add_btn.clicked.connect(lambda: self.add(background=True))
        self.table = QTableWidget(0, 2)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.remove_btn = QPushButton("Remove selected")
        self.remove_btn.clicked.connect(lambda: self.remove_selected())
        box: QGroupBox = form_group("Training set", [("train on", self.region), self.preview, self.add_btn,
                                                     self.table, self.remove_btn])
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(box)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.update_preview)
        self._watched: list = []
        self._kick = lambda *_: self._timer.start()  # napari events pass an argument QTimer.start must not get
        self.region.changed.connect(self.watch)
        self.refresh_list()

    # -- what will train -----------------------------------------------------------------------

    def watch(self, *_: object) -> None:
        """Recount when the labels are painted or the rectangles change (debounced)."""
        for emitter in self._watched:
            emitter.disconnect(self._kick)
        self._watched = []
        layer, shapes = self._layer(), self.region.value
        if layer is not None:
            self._watched += [layer.events.paint, layer.events.data]
        if isinstance(shapes, Shapes):
            self._watched.append(shapes.events.data)
        for emitter in self._watched:
            emitter.connect(self._kick)
        self._timer.start()

    def plane(self, layer: Labels) -> tuple[Image | None, np.ndarray, np.ndarray, np.ndarray | None]:
        """(image layer, its pixels, labels, prediction) of the plane on screen."""
        image = self._image_for(layer)
        labels = np.asarray(layer.data)
        prediction = layer.metadata.get(PREDICTION)
        if prediction is not None and np.shape(prediction) != labels.shape:
            prediction = None
        pixels = np.asarray(image_data(image)) if image is not None else None
        if labels.ndim > 2:  # a stack: the plane on screen
            z = int(round(layer.world_to_data(self.viewer.dims.point)[0]))
            labels = labels[z]
            pixels = pixels[z] if pixels is not None else None
            prediction = prediction[z] if prediction is not None else None
        return image, pixels, labels, prediction

    def choice(self, layer: Labels) -> dict:
        """``store.add`` keywords for the region choice (raises when a Shapes layer is empty)."""
        value = self.region.value
        if isinstance(value, Shapes):
            if not len(value.data):
                raise AnnotationError(f"the Shapes layer {value.name!r} has no rectangle: draw one around an "
                                      f"area you checked, or choose {PAINTED_ONLY!r}")
            return {"regions": shape_regions(value, layer)}
        return {"whole_image": value == WHOLE_IMAGE}

    def update_preview(self) -> None:
        layer = self._layer()
        if layer is None:
            self.preview.info("")
            return
        try:
            _, _, labels, prediction = self.plane(layer)
            mask = correction_mask(labels, prediction, **self.choice(layer))
        except AnnotationError as exc:
            self.preview.warning(str(exc), notify=False)
            return
        painted, accepted = int(np.count_nonzero(mask == PAINTED)), int(np.count_nonzero(mask == ACCEPTED))
        text = f"will train on {painted + accepted:,} px: {painted:,} painted + {accepted:,} accepted"
        share = (painted + accepted) / max(labels.size, 1)
        if prediction is None:
            text = f"will train on {painted:,} labelled px (no prediction to compare with: all labels count)"
        elif painted + accepted == 0:
            self.preview.warning(text + " — paint corrections or mark checked areas first", notify=False)
            return
        self.preview.info(text + f" ({share:.1%} of the image)")

    # -- add / list / remove -------------------------------------------------------------------

    def _image_for(self, layer: Labels) -> Image | None:
        name = layer.metadata.get(IMAGE)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Image):
            return self.viewer.layers[name]
        same = [lay for lay in self.viewer.layers if isinstance(lay, Image)
                and image_data(lay).shape[: layer.data.ndim] == layer.data.shape]
        return same[0] if len(same) == 1 else None

    def add(self, background: bool = False) -> Annotation | None:
        """Save the image, its labels and the corrected/accepted mask to the annotation folder now.

        Added to what an earlier save of the image vouched for (e.g. the queue's accepted regions),
        never replacing it. ``background`` (the button): written on the worker thread, so the GUI
        does not wait for the disk; the list and the status line follow when it is on disk (None
        is returned). Otherwise the saved entry is returned (scripts, tests).
        """
        layer = self._layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first, then correct it")
            return None
        image, pixels, labels, prediction = self.plane(layer)
        if image is None:
            self.status.error(f"which image do {layer.name!r} belong to? Segment the image to pair them")
            return None
        try:
            names = self._class_names(layer)
            kwargs = dict(name=image.name, class_names=names, prediction=prediction, merge=True,
                          class_colors=self._class_colors(layer, len(names)), **self.choice(layer))
        except AnnotationError as exc:
            self.status.error(f"not added: {exc}")
            return None
        if background:
            labels = labels.copy()  # the brush keeps painting into the layer meanwhile
            self.writer.submit(lambda: self.store.add(pixels, labels, **kwargs), lambda e: self._added(e, prediction),
                               self._not_added)
            self.status.info(f"saving {image.name} …")
            return None
        try:
            entry = self.store.add(pixels, labels, **kwargs)
        except (AnnotationError, OSError) as exc:
            self._not_added(exc)
            return None
        self._added(entry, prediction)
        return entry

    def _not_added(self, exc: Exception) -> None:
        self.status.error(f"not added: {exc}")

    def _added(self, entry: Annotation, prediction: np.ndarray | None) -> None:
        self.refresh_list()
        text = (f"saved {entry.name}: {entry.labelled:,} px will train ({entry.painted:,} painted); "
                f"{len(self.store)} image(s) in the set")
        if prediction is not None and entry.whole_image and entry.painted < 0.05 * entry.labelled:
            self.status.warning(text + "; most of these labels are the model's own prediction: it learns little "
                                "from them. Prefer 'painted pixels only' or rectangles around checked areas")
        else:
            self.status.info(text)

    def refresh_list(self) -> None:
        try:
            entries = self.store.entries()
        except AnnotationError as exc:
            self.status.error(str(exc))
            entries = []
        names = self.store.class_names if entries else []
        self.table.setColumnCount(2 + len(names))
        self.table.setHorizontalHeaderLabels(["image", "painted", *names])
        self.table.setRowCount(len(entries))
        for r, entry in enumerate(entries):
            how = " (whole)" if entry.whole_image else f" ({len(entry.regions)} rect.)" if entry.regions else ""
            item = QTableWidgetItem(entry.name + how)
            item.setToolTip(f"{entry.name}: {entry.labelled:,} px train" + (
                "" if entry.mask else " (every labelled pixel: saved before masks existed)"))
            item.setData(Qt.ItemDataRole.UserRole, entry.id)
            self.table.setItem(r, 0, item)
            self.table.setItem(r, 1, QTableWidgetItem("?" if entry.painted is None else f"{entry.painted:,}"))
            for c, name in enumerate(names):
                self.table.setItem(r, c + 2, QTableWidgetItem(f"{entry.counts.get(name, 0):,}"))
        self.table.resizeColumnsToContents()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # long names elide, no scrollbar
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
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
