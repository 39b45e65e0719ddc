"""Small shared widgets and helpers for the panels: layer pickers (magicgui), status lines, notifications."""

from __future__ import annotations

from collections.abc import Callable

import napari
from magicgui.widgets import ComboBox, Widget
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QWidget

from ..loop.training_job import JobSpec, TrainingJob

__all__ = ["LayerPicker", "StatusLine", "form_group", "hbox", "labels_name", "image_data", "OUTPUT", "is_input_image",
           "start_training_child", "qt", "EventRelay"]

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


class EventRelay(QObject):
    """Hands a training child's events from its reader thread to ``handler`` on the GUI thread
    (a queued signal): pass ``relay.event.emit`` as the job's callback."""

    event = Signal(object)

    def __init__(self, handler: Callable[[dict], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.event.connect(handler)


def start_training_child(spec: JobSpec, on_event: Callable[[dict], None], status: StatusLine, writer=None,
                         on_failed: Callable[[], None] | None = None):
    """Start ``csunet_train.job`` for ``spec`` in a child process; None (reported on ``status``) if it cannot start.

    With ``writer`` (a :class:`~.serial_worker.SerialWorker`) the job is returned at once and started on
    that thread (writing its spec and forking napari's process held the GUI thread 60-90 ms on a
    loaded CPU); if it cannot start, ``status`` says why and ``on_failed()`` runs, on the GUI thread.
    """
    job = TrainingJob(spec, on_event)
    if writer is not None:
        def failed(exc: Exception) -> None:
            status.error(f"could not start the training process: {exc}")
            if on_failed is not None:
                on_failed()

        writer.submit(job.start, lambda _: None, failed)
        return job
    try:
        job.start()
    except OSError as exc:
        status.error(f"could not start the training process: {exc}")
        return None
    return job


def qt(widget: QWidget | Widget) -> QWidget:
    """The Qt widget to put in a layout: a magicgui widget's ``native``, a Qt widget itself."""
    return widget.native if isinstance(widget, Widget) else widget


def form_group(title: str, rows: list[tuple[str, QWidget | Widget] | QWidget | Widget]) -> QGroupBox:
    """A titled box of ``label: widget`` rows (a bare widget spans the row); Qt or magicgui widgets."""
    box = QGroupBox(title)
    form = QFormLayout(box)
    for row in rows:
        if isinstance(row, tuple):
            form.addRow(row[0], qt(row[1]))
        else:
            form.addRow(qt(row))
    return box


def hbox(*widgets: QWidget | Widget) -> QWidget:
    """Widgets side by side, without margins (a row of buttons)."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        row.addWidget(qt(w))
    return box


class LayerPicker(ComboBox):
    """A magicgui drop-down of the viewer's layers of one type that refreshes itself.

    Its choices are computed (``reset_choices``) whenever layers are added, removed or moved, and
    it follows the layer the user selects in napari's layer list. ``extra`` entries (e.g. "all
    open images") come first and are values of their own (strings). ``.value`` is the chosen
    layer, an ``extra`` string, or None; ``.native`` goes into Qt layouts.
    """

    def __init__(self, viewer: napari.Viewer, layer_type: type, extra: tuple[str, ...] = (),
                 accept: Callable[[object], bool] | None = None, tooltip: str | None = None) -> None:
        self.viewer, self.layer_type, self.extra = viewer, layer_type, extra
        self.accept = accept or (lambda layer: True)
        super().__init__(choices=self._choices, tooltip=tooltip)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.moved):
            event.connect(self.reset_choices)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        self._follow_selection()

    def layers(self) -> list:
        return [lay for lay in self.viewer.layers if isinstance(lay, self.layer_type) and self.accept(lay)]

    def _choices(self, _widget: object = None) -> list[tuple[str, object]]:
        return [*((text, text) for text in self.extra), *((lay.name, lay) for lay in self.layers())]

    def _follow_selection(self, *_: object) -> None:
        """The layer selected in napari's layer list becomes the choice, when it is one of ours."""
        self.reset_choices()
        active = self.viewer.layers.selection.active
        if isinstance(active, self.layer_type) and self.accept(active) and active in self.layers():
            self.value = active

    def names(self) -> list[str]:
        """What the drop-down lists, in order."""
        return [name for name, _ in self._choices()]

    def choose(self, name: str) -> None:
        """Select the entry called ``name`` (a layer's name or an ``extra`` string), if it is there."""
        self.reset_choices()
        self.value = dict(self._choices()).get(name, self.value)


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
