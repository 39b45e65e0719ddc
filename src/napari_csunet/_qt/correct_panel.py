"""Correct panel: paint with named classes, revert, and add corrected images to the training set.

The palette and keys 0..9 on this tab pick the brush class (0 = unlabelled is the eraser); on
the labels layer itself only when the user's settings ask for it (those keys are napari's mode
keys there). "Add to training
set" writes the image, its labels and which pixels the user corrected or accepted to the
annotation folder at once (see :mod:`.training_set`), so nothing is lost if napari dies.
"""

from __future__ import annotations

import napari
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QGridLayout, QPushButton, QShortcut, QVBoxLayout, QWidget

from ..settings import Settings, save_settings
from .common import LayerPicker, StatusLine, form_group, hbox, is_input_image
from .config_form import config_form, form_rows
from .live_box import LiveBox
from .queue_box import ACCEPT_KEY, NEXT_KEY, QueueBox
from .serial_worker import SerialWorker
from .session import ModelSession
from .theme import swatch_icon, theme_color
from .training_set import PAINTED_ONLY, WHOLE_IMAGE, TrainingSetBox

__all__ = ["CorrectPanel", "PAINTED_ONLY", "WHOLE_IMAGE", "KEY_SETTINGS"]

#: the settings of the Keyboard box (napari's own layer keys are taken only when these say so)
KEY_SETTINGS = ("class_keys_on_layer", "queue_keys_on_layer")


class CorrectPanel(QWidget):
    """Class palette, revert/undo, the annotation set."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        self.store = session.annotations
        self.labels = LayerPicker(viewer, Labels, accept=is_input_image)  # not a changes layer
        self.labels.changed.connect(self._on_labels_changed)
        self.palette_box = QWidget()
        self.palette = QGridLayout(self.palette_box)
        self.palette.setContentsMargins(0, 0, 0, 0)
        self.class_buttons: list[QPushButton] = []
        self.brush = 1  # the class last chosen on the palette (kept for the next labels layer)
        self.revert_btn = QPushButton("Revert to prediction")
        self.revert_btn.clicked.connect(lambda: self.revert())
        self.undo_btn = QPushButton("Undo last re-segment")
        self.undo_btn.clicked.connect(lambda: self.undo_resegment())
        self.status = StatusLine(f"annotations are saved in {self.store.root}")
        self.writer = SerialWorker("csunet-annotations", self)  # one thread writes the set: in order
        self.training = TrainingSetBox(viewer, session, self.layer, self.status, writer=self.writer)
        # the training set's widgets, by the names the loop and the tests use
        t = self.training
        self.region, self.add_btn, self.table, self.remove_btn = t.region, t.add_btn, t.table, t.remove_btn
        self.refresh_list, self.remove_selected, self.add_to_training_set = t.refresh_list, t.remove_selected, t.add
        self.mark_btn, self.mark_painted_reviewed = t.mark_btn, t.mark_painted_reviewed
        self.queue = QueueBox(viewer, session, self.layer, self.status,
                              layer_keys=session.settings.queue_keys_on_layer, writer=self.writer)
        self.keys = config_form(Settings, KEY_SETTINGS, {k: getattr(session.settings, k) for k in KEY_SETTINGS})
        self.keys.changed.connect(self._keys_changed)
        for value in range(10):
            shortcut = QShortcut(QKeySequence(str(value)), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda v=value: self._class_key(v))
        self.queue.corrected.connect(self.refresh_list)
        self.live = LiveBox(session, self.store, self.queue)

        buttons = hbox(self.revert_btn, self.undo_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Paint", [("labels", self.labels), self.palette_box, buttons]))
        layout.addWidget(self.queue)
        layout.addWidget(self.live)
        layout.addWidget(self.training)
        layout.addWidget(form_group("Keyboard", form_rows(self.keys)))
        layout.addWidget(self.status)
        layout.addStretch(1)
        session.changed.connect(self._on_labels_changed)
        viewer.events.theme.connect(self._on_labels_changed)  # the swatches' outline follows the theme
        self._on_labels_changed()

    # -- the labels layer and its classes ------------------------------------------------------

    def layer(self) -> Labels | None:
        value = self.labels.value
        return value if isinstance(value, Labels) else None

    def set_labels_layer(self, layer: Labels) -> None:
        self.labels.choose(layer.name)
        self._on_labels_changed()

    def paint_on(self, layer: Labels) -> None:
        """After a segmentation: ``layer`` is corrected here, selected in napari and in paint mode with
        the palette's class, so the first stroke paints instead of panning the view."""
        self.set_labels_layer(layer)
        self.set_class(self.brush if self.brush <= len(self.class_names(layer)) else 1)

    def class_names(self, layer: Labels | None = None) -> list[str]:
        """The classes of ``layer`` (default: the chosen one), else the current model's (the session's word)."""
        return self.session.class_names(layer or self.layer())

    def _on_labels_changed(self, *_: object) -> None:
        layer = self.layer()
        self.session.correcting = layer
        names = self.class_names(layer)
        colors = self.session.class_colors(layer, len(names))
        for button in self.class_buttons:
            self.palette.removeWidget(button)
            button.deleteLater()
        self.class_buttons = []
        entries = [("0 eraser (unlabelled)", "transparent", 0)]
        entries += [(f"{i + 1} {n}", c, i + 1) for i, (n, c) in enumerate(zip(names, colors, strict=False))]
        outline = theme_color(self.viewer, "text")  # a swatch as dark as the theme still shows
        for pos, (text, color, value) in enumerate(entries):
            button = QPushButton(swatch_icon(color, outline), text)
            button.setCheckable(True)
            button.setStyleSheet("QPushButton { text-align: left; padding-left: 6px }")
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
        """Keys 1..9 pick a class on this layer, in place of napari's mode keys, if the settings say so."""
        on = self.session.settings.class_keys_on_layer
        for value in range(1, 10):
            if on and value <= n:
                layer.bind_key(str(value), lambda _layer, v=value: self.set_class(v), overwrite=True)
            else:
                _unbind(layer, str(value))  # back to napari's own key

    def _class_key(self, value: int) -> None:
        """A digit pressed on this tab: pick that class when the model has it."""
        if value <= len(self.class_names()):
            self.set_class(value)

    def _keys_changed(self, *_: object) -> None:
        """The Keyboard settings changed: remember them and apply them to the labels layer now."""
        for name, value in self.keys.asdict().items():
            setattr(self.session.settings, name, bool(value))
        save_settings(self.session.settings)
        self.queue.layer_keys = self.session.settings.queue_keys_on_layer
        layer = self.layer()
        if layer is not None:
            self._bind_keys(layer, len(self.class_names(layer)))
            if self.queue.layer_keys:
                self.queue.bind_layer_keys(layer)
            else:
                for key in (ACCEPT_KEY, NEXT_KEY):
                    _unbind(layer, key)

    def set_class(self, value: int) -> None:
        """Paint with class ``value`` (0 erases back to unlabelled)."""
        self.brush = value
        layer = self.layer()
        if layer is None:
            self.status.error("no labels layer: segment an image first")
            return
        layer.selected_label = value
        self.viewer.layers.selection.active = layer  # a palette click means: paint on these labels
        if layer.mode not in ("paint", "fill", "polygon"):
            layer.mode = "paint"
        self._check(value)
        names = self.class_names(layer)
        self.status.info(f"painting {names[value - 1] if 0 < value <= len(names) else 'unlabelled (eraser)'}")

    def _check(self, value: int) -> None:
        for i, button in enumerate(self.class_buttons):
            button.setChecked(i == value)

    # -- revert / undo -------------------------------------------------------------------------

    def _restore(self, field: str, what: str) -> None:
        """The labels layer's data back to its record's ``field`` (Undo swaps: a second Undo redoes)."""
        layer = self.layer()
        record = self.session.records.for_labels(layer) if layer is not None else None
        stored = getattr(record, field) if record is not None else None
        if stored is None or stored.shape != layer.data.shape:
            self.status.error(f"no {what} stored for this layer")
            return
        current = layer.data
        layer.data = stored.copy()
        if field == "previous":
            record.previous = current
        self.status.info(f"restored the {what}")

    def revert(self) -> None:
        """Throw the painted corrections away: back to the model's prediction."""
        self._restore("prediction", "prediction")

    def undo_resegment(self) -> None:
        """Back to the labels the last Segment replaced (e.g. corrections made before it)."""
        self._restore("previous", "labels from before the last segmentation")


def _unbind(layer: Labels, key: str) -> None:
    """Remove this plugin's binding of ``key`` from ``layer`` (napari's own binding applies again)."""
    if any(str(bound) == key for bound in layer.keymap):
        layer.bind_key(key, None)
