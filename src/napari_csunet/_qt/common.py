"""Small shared widgets and helpers for the panels: layer pickers, status lines, notifications."""

from __future__ import annotations

from collections.abc import Callable

import napari
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QWidget

__all__ = ["LayerCombo", "StatusLine", "form_group", "hbox", "labels_name", "image_data", "OUTPUT", "is_input_image",
           "start_training_child"]

#: metadata key marking the image layers this plugin writes (probabilities, uncertainty)
OUTPUT = "csunet_output"


def is_input_image(layer: object) -> bool:
    """An image the user opened, not one of our probability/uncertainty outputs."""
    return not getattr(layer, "metadata", {}).get(OUTPUT)


def labels_name(image_name: str) -> str:
    """The Labels layer a segmentation of ``image_name`` writes to."""
    return f"{image_name} labels"


def image_data(layer: napari.layers.Image):
    """Full-resolution pixels of an image layer (the first level of a multiscale pyramid)."""
    return layer.data[0] if layer.multiscale else layer.data


def start_training_child(spec: dict, on_event: Callable[[dict], None], status: StatusLine):
    """Start ``csunet_train.job`` for ``spec`` in a child process; None (reported on ``status``) if it cannot start."""
    from ..jobs import TrainingJob

    job = TrainingJob(spec, on_event)
    try:
        job.start()
    except OSError as exc:
        status.error(f"could not start the training process: {exc}")
        return None
    return job


def form_group(title: str, rows: list[tuple[str, QWidget] | QWidget]) -> QGroupBox:
    """A titled box of ``label: widget`` rows (a bare widget spans the row)."""
    box = QGroupBox(title)
    form = QFormLayout(box)
    for row in rows:
        if isinstance(row, tuple):
            form.addRow(*row)
        else:
            form.addRow(row)
    return box


def hbox(*widgets: QWidget) -> QWidget:
    """Widgets side by side, without margins (a row of buttons)."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        row.addWidget(w)
    return box


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one type, kept in sync with the layer list.

    ``extra`` entries (e.g. "all open images") come first and are returned as strings.
    """

    def __init__(self, viewer: napari.Viewer, layer_type: type, extra: tuple[str, ...] = (),
                 accept: Callable[[object], bool] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layer_type = layer_type
        self.extra = extra
        self.accept = accept or (lambda layer: True)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed,
                      viewer.layers.events.moved):
            event.connect(self.refresh)
        viewer.layers.selection.events.active.connect(self.refresh)
        self.refresh()

    def layers(self) -> list:
        return [lay for lay in self.viewer.layers if isinstance(lay, self.layer_type) and self.accept(lay)]

    def refresh(self, *_: object) -> None:
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        self.addItems([*self.extra, *(lay.name for lay in self.layers())])
        active = self.viewer.layers.selection.active
        wanted = active.name if isinstance(active, self.layer_type) and self.accept(active) else current
        index = self.findText(wanted)
        if index < 0 and self.count() > len(self.extra):
            index = len(self.extra) if not current else max(self.findText(current), len(self.extra))
        self.setCurrentIndex(max(index, 0))
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def value(self):
        """The chosen layer, an ``extra`` string, or None."""
        text = self.currentText()
        if text in self.extra:
            return text
        return next((lay for lay in self.layers() if lay.name == text), None)

    def set_value(self, name: str) -> None:
        self.refresh()
        self.setCurrentIndex(max(self.findText(name), 0))


class StatusLine(QLabel):
    """A one-line status under a panel; errors in red, also sent to napari's notifications."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.kind = "info"
        self.setVisible(bool(text))  # an empty status line takes no room

    def _show(self, text: str, kind: str, color: str, notify: Callable[[str], None] | None) -> None:
        self.kind = kind
        self.setStyleSheet(f"color: {color};" if color else "")
        self.setText(text)
        self.setVisible(bool(text))
        if notify is not None:
            notify(text)

    def info(self, text: str, notify: bool = False) -> None:
        self._show(text, "info", "", show_info if notify else None)

    def warning(self, text: str, notify: bool = True) -> None:
        self._show(text, "warning", "#e0a030", show_warning if notify else None)

    def error(self, text: str, notify: bool = True) -> None:
        self._show(text, "error", "#ff5050", show_error if notify else None)
