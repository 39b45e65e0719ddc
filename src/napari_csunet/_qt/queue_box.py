"""The Correct tab's correction queue: "next region to check", accept as is, what is left.

Regions are ranked by the model's uncertainty (the Segment tab's uncertainty layer; asked for
when missing). Next zooms the canvas to the most uncertain region left and outlines it in a
Shapes layer; painting in a region or accepting it marks it done, and done regions are saved
at once to the annotation set as vouched rectangles (full labels), so they train (written on a
worker thread: the GUI never waits for the disk). Keys: on this
box (A accept, N next) and, only if the user's settings ask for it, on the labels layer too,
never over one of napari's own bindings.
"""

from __future__ import annotations

from collections.abc import Callable

import napari
import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QShortcut, QVBoxLayout, QWidget

from ..images.annotations import AnnotationStore
from ..loop.correction_queue import CorrectionQueue, Region
from .common import OUTPUT, StatusLine, form_group, hbox
from .serial_worker import SerialWorker
from .session import ModelSession

__all__ = ["QueueBox", "HIGHLIGHT", "ACCEPT_KEY", "NEXT_KEY", "napari_keys"]

HIGHLIGHT = "correction queue"
ACCEPT_KEY, NEXT_KEY = "A", "N"
CURRENT_COLOR, DONE_COLOR = "#ffd400", "#3cb44b"


def napari_keys() -> set[str]:
    """Keys napari itself binds for labels layers: their class keymap, napari's shortcut settings
    (the layer actions, e.g. 1-7 and P for the modes) and its app-model keybindings."""
    from napari.settings import get_settings
    from napari.utils.key_bindings import coerce_keybinding

    keys = {str(coerce_keybinding(k)) for k in Labels.class_keymap}  # viewer layers are proxies: not type()
    for action, bindings in get_settings().shortcuts.shortcuts.items():
        if "labels" in action:
            keys |= {str(coerce_keybinding(kb)) for kb in bindings}
    try:  # napari's actions live in app-model's registry under the name "napari" (public API)
        from app_model import Application

        app = Application.get_app("napari")
    except ImportError:
        app = None
    if app is not None:
        keys |= {str(kb.keybinding) for kb in app.keybindings}
    return keys


class QueueBox(QWidget):
    """Rank, Next, Accept, the count of regions left, the highlight on the canvas."""

    #: a region was corrected or accepted and saved (the live update listens)
    corrected = Signal()

    def __init__(self, viewer: napari.Viewer, session: ModelSession, layer: Callable[[], Labels | None],
                 status: StatusLine, layer_keys: bool = False,
                 writer: SerialWorker | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self.status = viewer, session, status
        self.store: AnnotationStore = session.annotations
        self.writer = writer or SerialWorker("csunet-annotations", self)  # the annotation set's writes
        self._layer, self.layer_keys = layer, layer_keys
        self.queue: CorrectionQueue | None = None
        self.owner: str | None = None  # the labels layer the queue belongs to
        self.size = QComboBox()
        self.size.addItems(["128", "256", "512"])
        self.size.setCurrentText("256")
        self.size.setToolTip("side of a region to check (px)")
        self.rank_btn = QPushButton("Rank regions")
        self.rank_btn.setToolTip("order the image's regions by the model's uncertainty, most uncertain first")
        self.rank_btn.clicked.connect(lambda: self.rank())
        self.next_btn = QPushButton(f"Next region ({NEXT_KEY})")
        self.next_btn.clicked.connect(lambda: self.next())
        self.accept_btn = QPushButton(f"Accept as is ({ACCEPT_KEY})")
        self.accept_btn.setToolTip("the prediction in this region is right: it trains as labelled")
        self.accept_btn.clicked.connect(lambda: self.accept())
        self.where = QLabel("rank the regions of a segmented image to be led to the uncertain ones")
        self.where.setWordWrap(True)
        self.left = StatusLine()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(form_group("Correction queue", [("region size", self.size), self.rank_btn,
                                                        hbox(self.next_btn, self.accept_btn), self.where, self.left]))
        for key, slot in ((ACCEPT_KEY, self.accept), (NEXT_KEY, self.next)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.check_painted)
        self._watched: Labels | None = None
        self._kick = lambda *_: self._timer.start()
        session.segmented.connect(self._on_segmented)
        self._update_enabled()

    # -- ranking ---------------------------------------------------------------------------------

    def owner_layer(self) -> Labels | None:
        """The labels layer the queue was ranked for, while it is still in the viewer."""
        if self.owner in self.viewer.layers and isinstance(self.viewer.layers[self.owner], Labels):
            return self.viewer.layers[self.owner]
        return None

    def image_of(self, layer: Labels) -> Image | None:
        """The image ``layer`` was segmented from (the session's record), while it is open."""
        return self.session.records.image_of(layer)

    def pixels_of(self, layer: Labels) -> np.ndarray | None:
        """The image behind ``layer`` as an (H, W[, C]) array for the queue's novelty term, or None
        (no image, another shape, or a lazy mosaic that should not be read whole)."""
        image = self.image_of(layer)
        if image is None or not isinstance(image.data, np.ndarray):
            return None
        return image.data if image.data.shape[:2] == layer.data.shape else None

    def uncertainty_of(self, layer: Labels) -> np.ndarray | None:
        """The Segment tab's uncertainty layer for ``layer``'s image, if it fits."""
        image = self.image_of(layer)
        name = f"{image.name} uncertainty" if image is not None else ""
        if image is not None and name in self.viewer.layers and np.shape(self.viewer.layers[name].data) == layer.data.shape:
            return np.asarray(self.viewer.layers[name].data)
        return None

    def rank(self) -> bool:
        """Build the queue from the uncertainty (segmenting again with it first when there is none)."""
        layer = self._layer()
        if layer is None or layer.data.ndim != 2:
            self.status.error("the queue needs a 2D labels layer: segment an image first")
            return False
        uncertainty = self.uncertainty_of(layer)
        if uncertainty is None:
            image = self.image_of(layer)
            if self.session.segmentation is None or image is None:
                self.status.error("no uncertainty for this image: segment it with 'uncertainty layer' on")
                return False
            self.status.info("segmenting again for the uncertainty (your corrections stay) …")
            return self.session.segment([image], keep=self.corrections, on_done=self._rank_after,
                                        uncertainty=True) is not None
        done = self.corrections(layer)
        self.queue = CorrectionQueue.from_uncertainty(uncertainty, int(self.size.currentText()), done=done,
                                                      image=self.pixels_of(layer))
        self.owner = layer.name
        self._watch(layer)
        self.next()
        self.status.info(f"{len(self.queue)} regions ranked by uncertainty: check the outlined one")
        return True

    def _rank_after(self, written: list) -> None:
        """Rank once the segmentation asked for by :meth:`rank` is done (never ask twice)."""
        layer = self._layer()
        if written and layer is not None and self.uncertainty_of(layer) is not None:
            self.rank()
        else:
            self.status.error("no uncertainty came back (segmentation cancelled or failed): rank again")

    def _on_segmented(self, written: list) -> None:
        """A new prediction: re-rank the queue's image, keeping which regions are done."""
        layer = next((lay for lay in written if lay.name == self.owner), None)
        uncertainty = self.uncertainty_of(layer) if layer is not None else None
        if self.queue is None or uncertainty is None:
            return
        self.queue.rerank(uncertainty, image=self.pixels_of(layer))
        if self.queue.region() is None:
            self.queue.next()
        self.show_region(zoom=False)

    def corrections(self, layer: Labels) -> np.ndarray:
        """Pixels that stay as the user left them: painted, saved in the annotation set, in done regions."""
        kept = self.session.corrections(layer)
        keep = np.zeros(layer.data.shape, bool) if kept is None else kept.copy()
        if self.queue is not None and layer.name == self.owner:
            for region in self.queue.regions:
                if region.done:
                    r0, c0, r1, c1 = region.box
                    keep[r0:r1, c0:c1] = True
        return keep

    # -- navigation ------------------------------------------------------------------------------

    def _queue_layer(self) -> Labels | None:
        layer = self._layer()
        if self.queue is None or layer is None or layer.name != self.owner or layer.data.shape != self.queue.shape:
            self.status.error("no queue for this labels layer: Rank regions first")
            return None
        return layer

    def next(self) -> Region | None:
        """Save the region just painted, if any, then zoom to the most uncertain region left."""
        if self._queue_layer() is None:
            return None
        self.check_painted()
        region = self.queue.next()
        self.show_region()
        return region

    def accept(self) -> Region | None:
        """The prediction in the current region is right: save it as labelled, go to the next one."""
        if self._queue_layer() is None:
            return None
        if self.queue.region() is None:
            self.status.error("no region to accept: press Next first")
            return None
        accepted = self.queue.accept()
        if self.save():
            self.queue.next()
            self.show_region()
        return accepted

    def check_painted(self) -> list[Region]:
        """Regions the user painted in become done and are saved (debounced after painting)."""
        layer = self.owner_layer()
        if self.queue is None or layer is None:
            return []
        prediction = self.session.records.prediction(layer)
        if prediction is None:
            return []
        painted = self.queue.mark_painted(np.asarray(layer.data) != prediction)
        if painted:
            self.save()
            self.show_region(zoom=False)
        return painted

    def save(self) -> bool:
        """Write the image with every done region as a vouched rectangle to the annotation set.

        The pixels are copied here and written on the worker thread (the GUI does not wait for the
        disk); :attr:`corrected` is emitted once they are on disk, a failure goes to the status line.
        False when there is nothing to save.
        """
        layer = self.owner_layer()
        image = self.image_of(layer) if layer is not None else None
        if layer is None or image is None:
            self.status.error("which image does this labels layer belong to? Segment it again")
            return False
        name, boxes = image.name, [list(r.box) for r in self.queue.regions if r.done]
        pixels, labels = np.asarray(image.data), np.array(layer.data)  # a copy: the brush keeps painting
        prediction, (names, colors) = self.session.records.prediction(layer), self.session.classes(layer)
        kwargs = {"class_names": names, "class_colors": colors}
        self.writer.submit(lambda: self.store.add(pixels, labels, name=name, prediction=prediction, regions=boxes,
                                                  merge=True, **kwargs),
                           lambda _entry: self.corrected.emit(),
                           lambda exc: self.status.error(f"not saved: {exc}"), key=("queue", name))
        return True

    def show_region(self, zoom: bool = True) -> None:
        """Outline the current region (and the done ones) and centre the canvas on it."""
        layer = self.owner_layer()
        self._update_enabled()
        if self.queue is None or layer is None:
            return
        region = self.queue.region()
        boxes = [r for r in self.queue.regions if r.done] + ([region] if region is not None else [])
        rects = [np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float) for r0, c0, r1, c1 in (r.box for r in boxes)]
        colors = [DONE_COLOR] * (len(boxes) - (region is not None)) + [CURRENT_COLOR] * (region is not None)
        self._outline(layer, rects, colors)
        self.left.info(self.queue.summary())
        if region is None:
            self.where.setText("every region has been checked: fine-tune, or rank again after a new prediction")
            return
        rank = self.queue.regions.index(region) + 1
        r0, c0, r1, c1 = region.box
        self.where.setText(f"region {rank} of {len(self.queue)} (rows {r0}–{r1}, columns {c0}–{c1}), "
                           f"uncertainty {region.score:.2f}: paint what is wrong, or accept it as is")
        if zoom:
            self.viewer.camera.center = tuple(layer.data_to_world(region.center)[-2:])
            side = max(r1 - r0, c1 - c0) * float(max(layer.scale[-2:]))
            self.viewer.camera.zoom = 0.8 * min(self.viewer.canvas.size) / side

    def _outline(self, layer: Labels, rects: list[np.ndarray], colors: list[str]) -> None:
        """New outlines in the existing Shapes layer (creating a layer costs the GUI ~0.1-1 s);
        unchanged outlines are left alone (a re-segmentation would otherwise redraw them in the same
        frame as the new labels: 54-67 ms of GUI stall instead of ~40 under Xvfb)."""
        shapes = self.viewer.layers[HIGHLIGHT] if HIGHLIGHT in self.viewer.layers else None
        width = max(2, self.queue.size // 64)
        if (isinstance(shapes, Shapes) and rects and len(shapes.data) == len(rects)
                and shapes.metadata.get("csunet_colors") == colors  # the data too: the user may have moved one
                and all(np.array_equal(np.asarray(a), b) for a, b in zip(shapes.data, rects, strict=True))):
            return
        if isinstance(shapes, Shapes) and rects:
            shapes.metadata["csunet_colors"] = colors
            with shapes.events.blocker_all():  # one refresh for both (each setter refreshes the layer)
                shapes.data = rects
                shapes.edge_color = colors
                shapes.edge_width = width  # shapes added through ``data`` would get napari's 1 px
            shapes.refresh()
            return
        if shapes is not None:
            self.viewer.layers.remove(HIGHLIGHT)
        if rects:
            self.viewer.add_shapes(rects, shape_type="rectangle", name=HIGHLIGHT, edge_color=colors,
                                   face_color="transparent", edge_width=width,
                                   scale=layer.scale[-2:], translate=layer.translate[-2:],
                                   metadata={OUTPUT: True, "csunet_colors": colors})  # not a "train on" choice
            self.viewer.layers.selection.active = layer  # the brush stays on the labels

    # -- wiring ----------------------------------------------------------------------------------

    def _watch(self, layer: Labels) -> None:
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._kick)
        self._watched = layer
        layer.events.paint.connect(self._kick)
        if self.layer_keys:
            self.bind_layer_keys(layer)

    def bind_layer_keys(self, layer: Labels) -> list[str]:
        """Accept/Next keys on the labels layer (a setting): refused for keys napari already uses."""
        taken = napari_keys()
        refused = []
        for key, slot in ((ACCEPT_KEY, self.accept), (NEXT_KEY, self.next)):
            if key in taken:
                refused.append(key)
                continue
            layer.bind_key(key, lambda _layer, s=slot: s(), overwrite=True)
        if refused:
            self.status.warning(f"key(s) {', '.join(refused)} are napari's own on labels layers: use the "
                                "buttons or this box's keys instead")
        return refused

    def _update_enabled(self) -> None:
        has = self.queue is not None
        self.next_btn.setEnabled(has and self.queue.remaining > 0)
        self.accept_btn.setEnabled(has and self.queue.region() is not None)
