"""Correct panel: paint with named classes, revert, and add corrected images to the training set.

The palette and keys 1..9 pick the brush class (0 = unlabelled is the eraser). "Add to training
set" writes the image, its labels and which pixels the user corrected or accepted to the
annotation folder at once (see :mod:`.training_set`), so nothing is lost if napari dies.
"""

from __future__ import annotations

import napari
from napari.layers import Labels
from qtpy.QtWidgets import QGridLayout, QPushButton, QVBoxLayout, QWidget

from .._layerdata import class_names_from_features
from ..annotations import AnnotationStore
from .common import LayerCombo, StatusLine, form_group, hbox
from .live_box import LiveBox
from .queue_box import QueueBox
from .segment_panel import PREDICTION, PREVIOUS, SegmentPanel
from .session import ModelSession
from .training_set import PAINTED_ONLY, WHOLE_IMAGE, TrainingSetBox

__all__ = ["CorrectPanel", "PAINTED_ONLY", "WHOLE_IMAGE"]


class CorrectPanel(QWidget):
    """Class palette, revert/undo, the annotation set."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, store: AnnotationStore | None = None,
                 segment: SegmentPanel | None = None, parent: QWidget | None = None) -> None:
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
        self.status = StatusLine(f"annotations are saved in {self.store.root}")
        self.training = TrainingSetBox(viewer, self.store, self.layer, self.class_names, self._class_colors,
                                       self.status)
        # the training set's widgets, by the names the loop and the tests use
        t = self.training
        self.region, self.add_btn, self.table, self.remove_btn = t.region, t.add_btn, t.table, t.remove_btn
        self.refresh_list, self.remove_selected, self.add_to_training_set = t.refresh_list, t.remove_selected, t.add
        self.queue = QueueBox(viewer, self.store, self.layer, self._save_kwargs, self.status, segment,
                              layer_keys=session.settings.queue_keys_on_layer)
        self.queue.corrected.connect(self.refresh_list)
        self.live = LiveBox(session, self.store, segment, self.queue) if segment is not None else None

        buttons = hbox(self.revert_btn, self.undo_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Paint", [("labels", self.labels), self.palette_box, buttons]))
        layout.addWidget(self.queue)
        if self.live is not None:
            layout.addWidget(self.live)
        layout.addWidget(self.training)
        layout.addWidget(self.status)
        layout.addStretch(1)
        session.changed.connect(self._on_labels_changed)
        self._on_labels_changed()

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

    def _save_kwargs(self, layer: Labels) -> dict:
        names = self.class_names(layer)
        return {"class_names": names, "class_colors": self._class_colors(layer, len(names))}

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
        self.training.watch()

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
