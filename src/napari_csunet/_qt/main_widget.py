"""The plugin's dock widget: one model session shared by the Model, Segment, Correct, Fine-tune
and Inspect tabs, in the order of the user's loop."""

from __future__ import annotations

import threading

import napari
from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtWidgets import QAbstractScrollArea, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ..loop.child_process import shutdown_child
from ..settings import load_settings
from .correct_panel import CorrectPanel
from .finetune_panel import FinetunePanel
from .inspect_panel import InspectPanel
from .model_panel import ModelPanel
from .segment_panel import SegmentPanel
from .session import ModelSession
from .steps import Steps
from .theme import follow_theme, selection_style

__all__ = ["CSUNetWidget", "clipped_widgets"]


#: the dock's least width: model names, the training-set table and the statistics fit without a
#: horizontal scrollbar (measured on the screenshot at napari's default font)
MIN_WIDTH = 460


def _scrolled(widget: QWidget) -> QScrollArea:
    """A vertical-only scroll area: the dock is made wide enough instead of scrolling sideways."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(widget)
    return area


def clipped_widgets(area: QScrollArea) -> list[str]:
    """The visible widgets of a tab that reach past its viewport's right edge: cut off, since the
    tabs never scroll sideways. (What scrolls inside a table or a list is that widget's business.)"""
    viewport, content = area.viewport(), area.widget()
    inner = [w.viewport() for w in content.findChildren(QAbstractScrollArea)]
    out = []
    for child in [content, *content.findChildren(QWidget)]:
        if not child.isVisibleTo(content) or any(v.isAncestorOf(child) for v in inner):
            continue
        right = child.mapTo(viewport, QPoint(child.width(), 0)).x()
        if right > viewport.width():
            text = getattr(child, "text", None)
            text = text() if callable(text) else ""
            out.append(f"{type(child).__name__} {text!r}: right edge {right} > {viewport.width()} px")
    return out


class CSUNetWidget(QWidget):
    """Choose a model, segment, correct, fine-tune and inspect without leaving napari."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = ModelSession(load_settings(), viewer=napari_viewer, parent=self)  # one store: ours (the CLI reads it too)
        self.model_panel = ModelPanel(napari_viewer, self.session)
        self.segment_panel = SegmentPanel(napari_viewer, self.session)
        self.correct_panel = CorrectPanel(napari_viewer, self.session)
        self.finetune_panel = FinetunePanel(napari_viewer, self.session)
        self.inspect_panel = InspectPanel(napari_viewer, self.session)
        self.tabs = QTabWidget()
        for title, panel in (("Model", self.model_panel), ("Segment", self.segment_panel),
                             ("Correct", self.correct_panel), ("Fine-tune", self.finetune_panel),
                             ("Inspect", self.inspect_panel)):
            self.tabs.addTab(_scrolled(panel), title)
        panels = (self.model_panel, self.segment_panel, self.correct_panel, self.finetune_panel, self.inspect_panel)
        self.setMinimumWidth(max(MIN_WIDTH, *(p.minimumSizeHint().width() + 24 for p in panels)))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        follow_theme(napari_viewer, lambda: self.model_panel.files.setStyleSheet(selection_style(napari_viewer)))
        self.session.changed.connect(self._after_model_loaded)
        self.session.segmented.connect(lambda layers: self.correct_panel.paint_on(layers[-1]))
        self.correct_panel.training.changed.connect(self.finetune_panel.show_training_set)
        # the model list reads every model file's header: after a fine-tuned model loads, in a turn of
        # its own, not in the one that starts segmenting with it
        self.steps = Steps(self)
        self.finetune_panel.trained.connect(lambda _path: self.steps.then(self.model_panel.refresh_files))
        self.finetune_panel.saved.connect(lambda _path: self.model_panel.refresh_files())
        self.destroyed.connect(self.finetune_panel.shutdown)
        self.destroyed.connect(self.model_panel.adapt.shutdown)
        self.destroyed.connect(self.correct_panel.live.shutdown)
        self.destroyed.connect(shutdown_child)
        self.warm_up = _warm_up()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """The dock took its width from the canvas: fit the open images to what is left, once."""
        super().showEvent(event)
        if not getattr(self, "_fitted", False):
            self._fitted = True
            if len(self.viewer.layers):
                QTimer.singleShot(0, self.viewer.reset_view)
            self.steps.then(_first_activity_bar)

    def _after_model_loaded(self) -> None:
        if self.session.segmenter is not None and self.tabs.currentWidget().widget() is self.model_panel:
            self.tabs.setCurrentIndex(1)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.finetune_panel.shutdown()
        self.model_panel.adapt.shutdown()
        self.correct_panel.live.shutdown()
        shutdown_child()
        super().closeEvent(event)


def _warm_up() -> threading.Thread:
    """Do in the background what napari's first Labels layer would do on the GUI thread: import
    pandas (features table), skimage.color and scipy.linalg (its colormap), and fill vispy's
    cached dash patterns (its polygon overlay). About 0.5 s less stall at the first segmentation.
    And import torch and timm, which every model needs: their libraries hold the GIL while they load
    (measured with a ticking thread: torch 372 ms, timm with torchvision 257 ms at a time; loading a
    model file and predicting, at most 15 ms), so the GUI thread waits for them, worker thread or
    not: better while the user reads the Model tab than after Load (``benchmarks/gui_responsiveness.py``:
    the dock and load phases)."""
    import importlib

    from .compat import avoid_triton_llvm_clash

    avoid_triton_llvm_clash()  # before torch: see .compat

    def run() -> None:
        for name in ("pandas", "skimage.color", "scipy.linalg", "torch", "napari_csunet.engine.predictor", "timm"):
            importlib.import_module(name)
        try:
            from vispy.visuals.line.dash_atlas import DashAtlas

            DashAtlas()  # its patterns are lru-cached for the whole process
        except ImportError:
            pass

    thread = threading.Thread(target=run, name="csunet-warm-up", daemon=True)
    thread.start()
    return thread


def _first_activity_bar() -> None:
    """Open and close one napari activity bar while the dock opens: the session's first bar builds
    napari's progress widgets (140-175 ms on the GUI thread), which would otherwise stall the first
    segmentation (docs/inference.md, issue 22)."""
    from napari.utils import progress

    progress(total=0, desc="CS-UNet ready").close()
