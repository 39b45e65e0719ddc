"""The Correct tab's training-set box: what will train, "Add to training set", the saved list.

Only pixels the user vouched for train: painted ones (label != the model's prediction), those
inside the rectangles of a Shapes layer (checked areas, accepted as predicted), or every labelled
pixel with "whole image". The count of those pixels is shown before adding, so an image whose
labels are 97% the model's own output is not mistaken for a corrected one.

Only *reviewed* pixels (inside checked rectangles, or the whole image) can judge a fine-tune:
painted ones were chosen because the model was wrong there. So the box also says how many
reviewed pixels per class validation will have and which corrected class none can check, and
"Mark painted areas as reviewed" turns the painted clusters into rectangles in one click.
"""

from __future__ import annotations

from collections.abc import Callable

import napari
import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractScrollArea,
    QGroupBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..images.annotations import (
    ACCEPTED,
    PAINTED,
    Annotation,
    AnnotationError,
    AnnotationStore,
    correction_mask,
    reviewed_area,
)
from .common import LayerPicker, StatusLine, form_group, image_data, is_input_image
from .serial_worker import SerialWorker
from .session import ModelSession

__all__ = ["TrainingSetBox", "PAINTED_ONLY", "WHOLE_IMAGE", "REVIEWED_AREAS", "painted_rectangles"]

PAINTED_ONLY = "painted pixels only"
WHOLE_IMAGE = "whole image (every label is right)"
#: the Shapes layer "Mark painted areas as reviewed" creates (or extends)
REVIEWED_AREAS = "reviewed areas"
#: painted pixels closer than this (px) share one rectangle; each rectangle is MARGIN px larger
MERGE, MARGIN = 16, 8


def painted_rectangles(painted: np.ndarray, merge: int = MERGE, margin: int = MARGIN) -> list[list[int]]:
    """[row0, col0, row1, col1] around each cluster of ``painted`` pixels (bool (H, W)): clusters
    closer than ``merge`` px join, each box grows by ``margin`` px, clipped to the image."""
    from scipy import ndimage

    painted = np.asarray(painted, bool)
    if not painted.any():
        return []
    near = ndimage.maximum_filter(painted.view(np.uint8), size=2 * merge + 1) > 0
    parts, _ = ndimage.label(near)
    h, w = painted.shape
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(parts), start=1):
        rows, cols = np.nonzero(painted[sl] & (parts[sl] == i))
        r0, c0 = sl[0].start + rows.min(), sl[1].start + cols.min()
        r1, c1 = sl[0].start + rows.max() + 1, sl[1].start + cols.max() + 1
        boxes.append([max(0, int(r0) - margin), max(0, int(c0) - margin), min(h, int(r1) + margin),
                      min(w, int(c1) + margin)])
    return boxes


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

    #: the saved set changed (added, removed, re-read): the Fine-tune tab says what it holds
    changed = Signal()

    def __init__(self, viewer: napari.Viewer, session: ModelSession, layer: Callable[[], Labels | None],
                 status: StatusLine, writer: SerialWorker | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self.status = viewer, session, status
        self.store: AnnotationStore = session.annotations
        self.writer = writer or SerialWorker("csunet-annotations", self)  # the annotation set's writes
        self._layer = layer
        self.region = LayerPicker(viewer, Shapes, extra=(PAINTED_ONLY, WHOLE_IMAGE), accept=is_input_image,
                                  tooltip="which pixels train: those you painted, plus every pixel inside the "
                                          "rectangles of a Shapes layer (areas you checked), or the whole image")
        self.preview = StatusLine()
        self.judge = StatusLine()  # what validation will have: reviewed pixels per class, what is missing
        self.mark_btn = QPushButton("Mark painted areas as reviewed")
        self.mark_btn.setToolTip(f"a rectangle around each group of painted pixels, in the Shapes layer "
                                 f"{REVIEWED_AREAS!r} (or the one chosen under 'train on'): you vouch that every "
                                 "label inside is right, so these areas can also check whether a fine-tune got "
                                 "better. Move or delete rectangles that hold wrong labels")
        self.mark_btn.clicked.connect(lambda: self.mark_painted_reviewed())
        self.mark_btn.setEnabled(False)
        self.add_btn = QPushButton("Add to training set")
        self.add_btn.clicked.connect(lambda: self.add(background=True))
        self.table = QTableWidget(0, 2)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)  # no empty slab
        self.table.setMaximumHeight(6 * self.table.verticalHeader().defaultSectionSize())  # then it scrolls
        self.remove_btn = QPushButton("Remove selected")
        self.remove_btn.clicked.connect(lambda: self.remove_selected())
        box: QGroupBox = form_group("Training set", [("train on", self.region), self.preview, self.mark_btn, self.judge,
                                                     self.add_btn,
                                                     self.table, self.remove_btn])
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(box)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(lambda: self.update_preview(background=True))
        self._watched: list = []
        self._entry_counts: dict[str, tuple[dict[str, int], dict[str, int]]] = {}  # id -> (reviewed, training) px
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
        image = self.session.records.image_of(layer, guess=True)
        labels = np.asarray(layer.data)
        prediction = self.session.records.prediction(layer)
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

    def update_preview(self, background: bool = False) -> None:
        """Say how many pixels will train and what can judge a fine-tune. ``background`` (the
        debounce timer after painting or a segmentation): counted on the set's worker thread, since
        the counts over a 2048² image took up to 150 ms of the GUI thread; the texts follow."""
        layer = self._layer()
        self.mark_btn.setEnabled(False)
        if layer is None:
            self.preview.info("")
            self.judge.info("")
            return
        try:
            _, _, labels, prediction = self.plane(layer)
            choice = self.choice(layer)
        except AnnotationError as exc:
            self._preview_failed(exc)
            return
        names, skip = self.session.class_names(layer), self._image_name(layer)
        if not background:
            try:
                self._show_preview(self._preview(labels, prediction, choice, names, skip))
            except AnnotationError as exc:
                self._preview_failed(exc)
            return
        labels = labels.copy()  # the brush keeps painting into the layer meanwhile
        self.writer.submit(lambda: self._preview(labels, prediction, choice, names, skip), self._show_preview,
                           self._preview_failed, key="preview")

    def _preview_failed(self, exc: Exception) -> None:
        self.preview.warning(str(exc), notify=False)
        self.judge.info("")

    def _preview(self, labels: np.ndarray, prediction: np.ndarray | None, choice: dict, names: list[str],
                 skip: str | None) -> dict:
        """The preview's numbers and texts (no widget touched: runs on the worker thread too)."""
        mask = correction_mask(labels, prediction, **choice)
        painted, accepted = int(np.count_nonzero(mask == PAINTED)), int(np.count_nonzero(mask == ACCEPTED))
        text = f"will train on {painted + accepted:,} px: {painted:,} painted + {accepted:,} accepted"
        share = (painted + accepted) / max(labels.size, 1)
        if prediction is None:
            preview = ("info", f"will train on {painted:,} labelled px (no prediction to compare with: all labels count)")
        elif painted + accepted == 0:
            preview = ("warning", text + " — paint corrections or mark checked areas first")
        else:
            preview = ("info", text + f" ({share:.1%} of the image)")
        return {"mark": prediction is not None and painted > 0 and not choice.get("whole_image"),
                "preview": preview, "judge": self._validation(labels, mask, choice, names, skip)}

    def _show_preview(self, result: dict) -> None:
        self.mark_btn.setEnabled(result["mark"])
        for line, (kind, text) in ((self.preview, result["preview"]), (self.judge, result["judge"])):
            getattr(line, kind)(text, notify=False)

    # -- what will judge -----------------------------------------------------------------------

    def _counts(self, labels: np.ndarray, reviewed: np.ndarray | None, names: list[str]
                ) -> tuple[dict[str, int], dict[str, int]]:
        """(reviewed labelled px, training px) per class of one image."""
        from csunet_train.data import LabelledImage
        from csunet_train.fair import reviewed_counts

        item = LabelledImage(labels, labels, "", reviewed=reviewed)  # the counts read labels and reviewed only
        train = np.bincount(labels.ravel(), minlength=len(names) + 1)[1:len(names) + 1]
        return reviewed_counts([item], names), {n: int(c) for n, c in zip(names, train, strict=True)}

    def _saved_counts(self, skip: str | None, names: list[str]) -> list[tuple[dict[str, int], dict[str, int]]]:
        """Per saved entry but the image ``skip`` (its new version is on screen): counts, cached by id."""
        out = []
        for entry in self.store.entries():
            if entry.name == skip:
                continue
            if entry.id not in self._entry_counts:
                labels = self.store.training_labels(entry)
                reviewed = (reviewed_area(labels.shape, entry.regions, entry.whole_image) & (labels > 0)
                            if entry.mask else None)  # sets saved before masks existed: no checked areas
                self._entry_counts[entry.id] = self._counts(labels, reviewed, names)
            out.append(self._entry_counts[entry.id])
        return out

    def _validation(self, labels: np.ndarray, mask: np.ndarray, choice: dict, names: list[str],
                    skip: str | None) -> tuple[str, str]:
        """(kind, text): how many reviewed pixels per class could judge a fine-tune (the set with this
        image, ``skip``, added), and which corrected class none can check."""
        from csunet_train.data import MIN_VAL_PIXELS
        from csunet_train.fair import HOLDOUT_EVERY, missing_classes_text

        if not names or (self.store.class_names and self.store.class_names != names):
            return "info", ""
        train = np.where(mask > 0, labels, 0).astype(np.uint8)
        reviewed = reviewed_area(labels.shape, choice.get("regions"), bool(choice.get("whole_image"))) & (train > 0)
        try:
            counts = [self._counts(train, reviewed, names), *self._saved_counts(skip, names)]
        except (AnnotationError, OSError, ValueError) as exc:
            return "warning", f"cannot count the reviewed pixels of the training set: {exc}"
        total = {n: sum(r[n] for r, _ in counts) for n in names}
        trained = {n: sum(t[n] for _, t in counts) for n in names}
        if not any(total.values()):
            return "warning", ("no reviewed pixels: nothing can check whether a fine-tune got better, so its model "
                               "will be offered, not made current. Mark the areas you corrected as reviewed")
        per_class = " · ".join(f"{n} {total[n]:,}" for n in names)
        text = (f"validation: reviewed px per class {per_class} (about 1 in {HOLDOUT_EVERY} is held out to judge "
                "a fine-tune)")
        if sum(total.values()) < HOLDOUT_EVERY * MIN_VAL_PIXELS:
            text += (f"; too few to judge (about {MIN_VAL_PIXELS:,} held out are needed): the new model will be "
                     "offered, not made current")
        missing = missing_classes_text([n for n in names if trained[n] and not total[n]])
        if missing or "too few" in text:
            return "warning", text + (f"; {missing}" if missing else "")
        return "info", text

    def _image_name(self, layer: Labels) -> str | None:
        image = self.session.records.image_of(layer, guess=True)
        return image.name if image is not None else None

    # -- mark painted areas as reviewed ----------------------------------------------------------

    def mark_painted_reviewed(self) -> Shapes | None:
        """A rectangle around each cluster of painted pixels, added to the Shapes layer chosen under
        "train on" (else :data:`REVIEWED_AREAS`, created when missing), which becomes the choice."""
        layer = self._corrected_layer()
        if layer is None:
            return None
        _, _, labels, prediction = self.plane(layer)
        if prediction is None:
            self.status.error("no prediction to tell painted pixels from: segment the image first")
            return None
        boxes = painted_rectangles((labels != prediction) & (labels > 0))
        if not boxes:
            self.status.error("nothing painted yet: paint the right classes where the prediction is wrong first")
            return None
        existing = self.viewer.layers[REVIEWED_AREAS] if REVIEWED_AREAS in self.viewer.layers else None
        chosen = self.region.value
        target = chosen if isinstance(chosen, Shapes) else existing if isinstance(existing, Shapes) else None
        known = shape_regions(target, layer) if target is not None else []  # marked before: not twice
        boxes = [b for b in boxes if not any(k[0] <= b[0] and k[1] <= b[1] and k[2] >= b[2] and k[3] >= b[3]
                                             for k in known)]
        if target is None:
            target = self.viewer.add_shapes(name=REVIEWED_AREAS, ndim=layer.ndim, scale=layer.scale,
                                            translate=layer.translate, edge_color="yellow",
                                            face_color="transparent", edge_width=3)
        if boxes:
            lead = list(layer.world_to_data(self.viewer.dims.point)[:-2]) if layer.ndim > 2 else []
            corners = [[[r0, c0], [r0, c1], [r1, c1], [r1, c0]] for r0, c0, r1, c1 in boxes]
            target.add([[target.world_to_data(layer.data_to_world([*lead, *v])) for v in rect] for rect in corners],
                       shape_type="rectangle", edge_color="yellow", face_color="transparent")
        self.region.choose(target.name)
        self.watch()
        self.status.info(f"{len(boxes)} rectangle(s) around the painted areas added to {target.name!r}: every "
                         "label inside them now counts as reviewed (move or delete those that hold wrong labels)")
        return target

    # -- add / list / remove -------------------------------------------------------------------

    def _corrected_layer(self) -> Labels | None:
        """The labels layer being corrected; None (and the status line says why) without one."""
        layer = self._layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first, then correct it")
        return layer

    def add(self, background: bool = False) -> Annotation | None:
        """Save the image, its labels and the corrected/accepted mask to the annotation folder now.

        Added to what an earlier save of the image vouched for (e.g. the queue's accepted regions),
        never replacing it. ``background`` (the button): written on the worker thread, so the GUI
        does not wait for the disk; the list and the status line follow when it is on disk (None
        is returned). Otherwise the saved entry is returned (scripts, tests).
        """
        layer = self._corrected_layer()
        if layer is None:
            return None
        image, pixels, labels, prediction = self.plane(layer)
        if image is None:
            self.status.error(f"which image do {layer.name!r} belong to? Segment the image to pair them")
            return None
        try:
            names, colors = self.session.classes(layer)
            kwargs = dict(name=image.name, class_names=names, prediction=prediction, merge=True,
                          class_colors=colors, **self.choice(layer))
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
        self._timer.start()  # the set changed: what validation will have, too
        self.changed.emit()

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if not rows:
            self.status.error("select an annotation in the list first")
            return
        for r in rows:
            self.store.remove(self.table.item(r, 0).data(Qt.ItemDataRole.UserRole))
        self.refresh_list()
        self.status.info(f"removed {len(rows)} annotation(s); {len(self.store)} left")
