"""The Correct tab's correction queue and live update in a real viewer (tiny model, real child).

Rank -> the canvas goes to the most uncertain region, outlined; Accept saves it as a vouched
rectangle and moves on; painting marks a region done; the keys; live update after a correction
with a second correction queued behind it (never a second child); Stop.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from qtpy.QtWidgets import QShortcut  # noqa: E402
from test_gui import IMAGE, segment  # noqa: E402 (fixtures: conftest.py)

from napari_csunet._qt import queue_box  # noqa: E402
from napari_csunet._qt.live_box import live_dir  # noqa: E402
from napari_csunet._qt.queue_box import CURRENT_COLOR, HIGHLIGHT, napari_keys  # noqa: E402
from napari_csunet._qt.training_set import PAINTED_ONLY  # noqa: E402
from napari_csunet.images.annotations import PAINTED as MASK_PAINTED  # noqa: E402
from napari_csunet.loop.correction_queue import ACCEPTED, PAINTED  # noqa: E402


def _saved(w, qtbot) -> None:
    """The annotation set is written on a worker thread: wait until it is on disk."""
    qtbot.waitUntil(lambda: not w.correct_panel.writer.busy, timeout=30_000)


def _ranked(w, qtbot, uncertainty: bool = True):
    w.segment_panel.want_uncertainty.setChecked(uncertainty)
    layer = segment(w, qtbot)
    w.correct_panel.set_labels_layer(layer)
    box = w.correct_panel.queue
    assert box.rank(), w.correct_panel.status.text()
    qtbot.waitUntil(lambda: box.queue is not None and not w.segment_panel.running, timeout=120_000)
    return layer, box


def test_rank_zooms_to_the_most_uncertain_region_and_outlines_it(widget, qtbot):
    w = widget
    layer, box = _ranked(w, qtbot)
    queue = box.queue
    assert len(queue) == 4 and queue.remaining == 4  # the 512² sample in 256² regions
    first = queue.region()
    assert first is queue.regions[0] and first.score == max(r.score for r in queue.regions)
    shapes = w.viewer.layers[HIGHLIGHT]
    assert len(shapes.data) == 1 and np.allclose(shapes.edge_color[0][:3], [1.0, 212 / 255, 0.0])
    r0, c0, r1, c1 = first.box
    assert np.allclose(np.asarray(shapes.data[0]).min(0), [r0, c0]) and np.allclose(np.asarray(shapes.data[0]).max(0), [r1, c1])
    assert np.allclose(w.viewer.camera.center[-2:], first.center)
    assert w.viewer.layers.selection.active.name == layer.name  # the brush stays on the labels
    assert "4 of 4 regions left" in box.left.text() and "region 1 of 4" in box.where.text()
    region_choices = w.correct_panel.region.names()
    assert HIGHLIGHT not in region_choices  # the outline is not a "train on" rectangle layer
    assert CURRENT_COLOR.startswith("#")


def test_unchanged_outlines_are_not_redrawn(widget, qtbot, monkeypatch):
    """A re-segmentation that leaves the queue's outlines as they were does not redraw them (a second
    canvas update in the frame of the new labels); a changed or deleted outline is drawn again."""
    w = widget
    _, box = _ranked(w, qtbot)
    shapes = w.viewer.layers[HIGHLIGHT]
    refreshes = []
    monkeypatch.setattr(shapes, "refresh", lambda *a, **k: refreshes.append(1))
    box.show_region(zoom=False)
    assert refreshes == []
    box.queue.next()
    box.show_region(zoom=False)
    assert refreshes  # another region: drawn
    moved = [np.asarray(shapes.data[0]) + 10.0]  # the user dragged the outline away
    shapes.data = moved
    before = len(refreshes)
    box.show_region(zoom=False)
    assert len(refreshes) > before and not np.allclose(np.asarray(shapes.data[0]), moved[0])
    shapes.data = []  # the user deleted the outlines
    before = len(refreshes)
    box.show_region(zoom=False)
    assert len(refreshes) > before and len(shapes.data) == 1


def test_accept_saves_the_region_as_labelled_and_moves_on(widget, qtbot):
    w = widget
    layer, box = _ranked(w, qtbot)
    first = box.queue.region()
    accepted = box.accept()
    assert accepted is first and first.state == ACCEPTED and box.queue.remaining == 3
    _saved(w, qtbot)
    entry = w.correct_panel.store.named(IMAGE)
    assert entry is not None and entry.regions == [list(first.box)] and entry.labelled == first.pixels
    assert w.correct_panel.table.rowCount() == 1  # the training set's list was refreshed
    # the rest were rescored against what is done now: Next leads to the most useful region left
    assert box.queue.region() is not first and box.queue.region() is next(r for r in box.queue.regions if not r.done)
    assert len(w.viewer.layers[HIGHLIGHT].data) == 2  # the done region stays outlined (green), the next one
    assert list(w.viewer.layers[HIGHLIGHT].edge_width) == [4, 4]  # both as wide (256 // 64), not napari's 1 px
    assert "1 accepted" in box.left.text()


def test_painting_in_a_region_marks_it_done_and_saves_it(widget, qtbot):
    w = widget
    layer, box = _ranked(w, qtbot)
    region = box.queue.regions[2]
    r0, c0, _, _ = region.box
    prediction = w.session.records.for_labels(layer).prediction
    data = layer.data.copy()
    data[r0:r0 + 8, c0:c0 + 8] = np.where(prediction[r0:r0 + 8, c0:c0 + 8] == 1, 2, 1)
    layer.data = data
    layer.events.paint(value=None)  # what napari's brush emits; the box re-checks after a short delay
    qtbot.waitUntil(lambda: region.state == PAINTED, timeout=5_000)
    _saved(w, qtbot)
    entry = w.correct_panel.store.named(IMAGE)
    assert entry.regions == [list(region.box)] and entry.labelled == region.pixels and entry.painted == 64
    assert box.queue.remaining == 3


def test_next_and_accept_keys_and_the_layer_key_setting(widget, qtbot, monkeypatch):
    w = widget
    layer, box = _ranked(w, qtbot)
    keys = {s.key().toString(): s for s in box.findChildren(QShortcut)}
    assert set(keys) == {"A", "N"}
    first = box.queue.region()
    keys["N"].activated.emit()
    second = box.queue.region()
    assert second is box.queue.regions[1] and first.state == "todo"
    keys["A"].activated.emit()
    assert second.state == ACCEPTED
    bound = lambda: {str(k) for k in layer.keymap}  # noqa: E731
    assert not {"1", "A", "N"} & bound()  # nothing bound on the layer unless the settings ask
    taken = napari_keys()
    assert "P" in taken  # napari's paint-mode key on labels layers
    monkeypatch.setattr(queue_box, "ACCEPT_KEY", "P")
    assert box.bind_layer_keys(layer) == ["P"]
    assert "P" not in bound() and "N" in bound()
    assert "napari's own" in w.correct_panel.status.text()


def test_rank_without_an_uncertainty_layer_segments_again_keeping_corrections(widget, qtbot):
    w = widget
    w.segment_panel.want_uncertainty.setChecked(False)
    layer = segment(w, qtbot)
    data = layer.data.copy()
    data[:5, :5] = np.where(w.session.records.for_labels(layer).prediction[:5, :5] == 3, 2, 3)
    layer.data = data
    w.correct_panel.set_labels_layer(layer)
    box = w.correct_panel.queue
    assert box.rank()
    qtbot.waitUntil(lambda: box.queue is not None and not w.segment_panel.running, timeout=120_000)
    assert f"{IMAGE} uncertainty" in w.viewer.layers
    assert (layer.data[:5, :5] == data[:5, :5]).all()  # the correction stayed
    assert next(r for r in box.queue.regions if r.box[:2] == (0, 0)).state == PAINTED


def _live_on(w, qtbot, **params):
    """Rank, switch the live update on (``params`` override the live defaults)."""
    layer, box = _ranked(w, qtbot)
    live = w.correct_panel.live
    live.params = {"batch_size": 1} | params
    live.toggle.setChecked(True)
    return layer, box, live, w.session.path


def _paint_truth(layer, region) -> None:
    """The user corrects the region: NASA's ground truth painted into it."""
    from napari_csunet.plugin import samples

    ((truth, _, _),) = samples.superalloy_labels()
    r0, c0, r1, c1 = region.box
    data = layer.data.copy()
    data[r0:r1, c0:c1] = truth[r0:r1, c0:c1]
    layer.data = data


@pytest.mark.slow
def test_live_update_after_a_correction_queues_the_next_and_updates_the_prediction(widget, qtbot):
    w = widget
    # the untrained tiny model moves most unchecked pixels whatever it learns; the rule on them is
    # tested headless (test_fair_finetune): here the kept path is
    layer, box, live, start_model = _live_on(w, qtbot, steps=4, lr=1e-3, unchecked_limit=1.0,
                                             unchecked_class_limit=1.0)
    first = box.queue.region()
    _paint_truth(layer, first)
    box.next()  # the painted region is saved (on the worker thread), then a live update starts
    assert first.state == PAINTED
    qtbot.waitUntil(lambda: live.job is not None, timeout=60_000)  # the child is started off the GUI thread
    assert live.live.running and live.live.cycles == 1
    first_job = live.job
    _paint_truth(layer, box.queue.region())
    box.next()  # a correction while the first cycle runs: queued, not a second child
    qtbot.waitUntil(lambda: live.live.pending, timeout=30_000)
    assert live.job is first_job and live.live.cycles == 1
    assert "one more queued" in live.state.text()
    qtbot.waitUntil(lambda: live.live.cycles == 2 and not live.live.running, timeout=1_500_000)
    assert w.session.path != start_model and w.session.path.parent == live_dir(), live.state.text()
    assert live.live.last_seconds is not None and "prediction updated at" in live.state.text()
    assert box.queue.remaining == 2 and len(w.correct_panel.store.named(IMAGE).regions) == 2
    assert (layer.data[first.box[0]:first.box[2], first.box[1]:first.box[3]] != 0).all()  # corrections kept
    assert not live.stop_btn.isEnabled()


@pytest.mark.slow
def test_stop_ends_the_live_update_and_keeps_the_model(widget, qtbot):
    w = widget
    _, box, live, start_model = _live_on(w, qtbot, steps=10_000)
    box.accept()
    qtbot.waitUntil(lambda: live.job is not None, timeout=60_000)
    job = live.job
    qtbot.waitUntil(lambda: any(e["event"] == "step" for e in job.events), timeout=120_000)
    box.accept()
    _saved(w, qtbot)
    live.stop_btn.click()
    qtbot.waitUntil(lambda: not live.live.running, timeout=60_000)
    assert not job.running and not live.live.pending and live.live.cycles == 1
    assert w.session.path == start_model and "stopped" in live.state.text()


def test_add_painted_pixels_only_keeps_the_regions_the_queue_saved(widget, qtbot):
    """'Add to training set' after the queue saved regions adds to the entry, never drops them."""
    w = widget
    layer, box = _ranked(w, qtbot)
    first = box.queue.region()
    box.accept()
    _saved(w, qtbot)
    prediction = w.session.records.for_labels(layer).prediction
    r0, c0, r1, c1 = first.box
    outside = (slice(0, 8), slice(0, 8)) if r0 or c0 else (slice(500, 508), slice(500, 508))
    data = layer.data.copy()
    data[outside] = prediction[outside] % 3 + 1  # 64 pixels painted outside the accepted region
    layer.data = data
    panel = w.correct_panel
    panel.set_labels_layer(layer)
    assert panel.region.current_choice == PAINTED_ONLY
    panel.add_btn.click()  # the button saves on the worker thread
    _saved(w, qtbot)
    entry = panel.store.named(IMAGE)
    assert entry.regions == [list(first.box)] and entry.painted == 64, panel.status.text()
    assert entry.labelled == first.pixels + 64 and "saved" in panel.status.text()
    mask = tifffile.imread(panel.store.root / entry.mask)
    assert (mask[r0:r1, c0:c1] > 0).all() and (mask[outside] == MASK_PAINTED).all()


def test_a_failed_background_save_is_shown(widget, qtbot, monkeypatch):
    w = widget
    layer, box = _ranked(w, qtbot)

    def full_disk(*_args, **_kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(w.correct_panel.store, "add", full_disk)
    box.accept()
    _saved(w, qtbot)
    assert "not saved: No space left on device" in w.correct_panel.status.text()
    assert w.correct_panel.status.kind == "error"
