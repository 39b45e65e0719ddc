"""GUI-thread work in steps (issue 22, stalls): a new labels layer shown in steps, napari's activity
bars and the follow-ups in turns of their own, the training child started off the GUI thread, the
training set's labels read ahead for the re-segmentation. What the user ends up with is the same as
before; only when it happens changed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from napari.layers import Image, Labels  # noqa: E402

from napari_csunet._qt.steps import Steps  # noqa: E402

IMAGE = "superalloy spot2_0d_0"


class _Pred:
    def __init__(self, labels: np.ndarray) -> None:
        self.labels, self.probs, self.uncertainty = labels, None, None
        self.counts = np.bincount(labels.ravel(), minlength=4)


def _labels_overlays(layer: Labels) -> list:
    return [o for o in layer._overlays.values() if type(o).__name__.startswith("Labels")]


def test_steps_run_in_order_one_per_turn_and_survive_a_failing_step(qtbot):
    ran: list[int] = []
    steps = Steps()
    steps.then(lambda: ran.append(1), lambda: ran.append(2))
    steps.then(lambda: ran.append(3))
    assert ran == [] and steps.pending == 3  # nothing runs inside then()
    qtbot.waitUntil(lambda: steps.pending == 0, timeout=5_000)
    assert ran == [1, 2, 3]

    def boom() -> None:
        raise RuntimeError("a step failed")

    steps.then(boom, lambda: ran.append(4))
    with qtbot.capture_exceptions() as raised:
        qtbot.waitUntil(lambda: steps.pending == 0, timeout=5_000)
    assert ran == [1, 2, 3, 4] and len(raised) == 1  # reported like any slot's error; the next step ran


def _first_prediction(make_napari_viewer):
    """A viewer with an image, a model's info and a prediction for it."""
    from napari_csunet.models import get_preset
    from napari_csunet.models.modelfile import ModelInfo

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((64, 64), np.uint8), name="im")
    info = ModelInfo(get_preset("csunet-tiny").config, ["a", "b", "c"], preset="csunet-tiny", name="m")
    return viewer, image, info, _Pred(np.ones((64, 64), np.uint8))


def test_a_held_back_layer_is_inserted_then_shown_in_steps(make_napari_viewer):
    from napari_csunet._qt.records import ImageRecords
    from napari_csunet._qt.segment_panel import (
        Prepared,
        hold_back,
        new_labels_layer,
        write_prediction,
    )

    viewer, image, info, pred = _first_prediction(make_napari_viewer)

    layer = new_labels_layer(image, pred, info)  # as on the worker thread
    reveal = hold_back(layer)
    assert not layer.visible and not any(o.visible for o in _labels_overlays(layer))
    assert len(reveal) == 1 + len(_labels_overlays(layer)) >= 3

    later: list = []
    records = ImageRecords(viewer)
    written = write_prediction(viewer, records, image, pred, info, "m", prepared=Prepared(layer, reveal), later=later)
    assert written is layer and layer in viewer.layers
    assert viewer.layers.selection.active == image  # not activated on insertion: a later step selects it
    assert later and not layer.visible
    qt_viewer = viewer.window._qt_viewer  # napari's visual of the layer: made by the first step
    assert layer not in qt_viewer.canvas.layer_to_visual and layer in qt_viewer.controls.widgets
    later[0]()
    assert layer in qt_viewer.canvas.layer_to_visual
    for step in later[1:]:
        step()
    assert layer.visible and all(o.visible for o in _labels_overlays(layer))
    assert viewer.layers.selection.active == layer  # as napari's own insertion would have left it

    # without ``later`` the steps run at once: the same result in one go
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="other")
    assert other in qt_viewer.canvas.layer_to_visual and other in qt_viewer.controls.widgets  # napari's as before
    second = new_labels_layer(other, pred, info)
    written = write_prediction(viewer, records, other, pred, info, "m", prepared=Prepared(second, hold_back(second)))
    assert written.visible and all(o.visible for o in _labels_overlays(written))
    assert viewer.layers.selection.active == written
    record = records.for_labels(written)
    assert record.image is other and records.image_of(written) is other and len(records) == 2
    np.testing.assert_array_equal(record.prediction, pred.labels)
    assert record.prediction is not written.data  # painting never edits the prediction


@pytest.mark.parametrize("before_steps", ["removed", "selected", "nothing selected, with an uncertainty layer"])
def test_a_held_back_layer_survives_what_the_user_does_before_its_steps(make_napari_viewer, before_steps):
    """napari's canvas needs a layer's visual on a removal: it is made then, at once; a selection needs
    only the controls (made on insertion); the uncertainty layer goes under the labels once napari
    has made the visual."""
    from napari_csunet._qt.records import ImageRecords
    from napari_csunet._qt.segment_panel import (
        Prepared,
        hold_back,
        new_labels_layer,
        write_prediction,
    )

    viewer, image, info, pred = _first_prediction(make_napari_viewer)
    pred.uncertainty = np.zeros((64, 64), np.float32)
    layer = new_labels_layer(image, pred, info)
    later: list = []
    viewer.layers.selection.clear()
    written = write_prediction(viewer, ImageRecords(viewer), image, pred, info, "m",
                               prepared=Prepared(layer, hold_back(layer)), later=later)
    if before_steps == "removed":
        viewer.layers.remove(written)  # napari's removal handlers find its visual
    elif before_steps == "selected":
        viewer.layers.selection.active = written  # its controls are napari's, made on insertion
    for step in later:
        step()
    if before_steps == "removed":
        assert written not in viewer.layers and "im uncertainty" not in viewer.layers
    else:
        assert viewer.layers.index("im uncertainty") < viewer.layers.index(written)  # under the labels
        assert viewer.layers.selection.active == written and written.visible


def test_a_prediction_that_keeps_corrections_stores_the_raw_prediction(make_napari_viewer):
    from napari_csunet._qt.records import ImageRecords
    from napari_csunet._qt.segment_panel import write_prediction
    from napari_csunet.models import get_preset
    from napari_csunet.models.modelfile import ModelInfo

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 32), np.uint8), name="im")
    info = ModelInfo(get_preset("csunet-tiny").config, ["a", "b", "c"], preset="csunet-tiny", name="m")
    records = ImageRecords(viewer)
    first = write_prediction(viewer, records, image, _Pred(np.ones((32, 32), np.uint8)), info, "m")
    assert records.for_labels(first).previous is None  # a first prediction replaced nothing
    first.data[:4, :4] = 3  # painted
    new = np.full((32, 32), 2, np.uint8)
    layer = write_prediction(viewer, records, image, _Pred(new), info, "m", keep=lambda lay: lay.data == 3)
    record = records.for_labels(layer)
    assert layer is first and (layer.data[:4, :4] == 3).all() and (layer.data[4:] == 2).all()
    assert record.prediction is new and (new == 2).all()  # the kept pixels went into a copy
    assert (record.previous[:4, :4] == 3).all()
    assert layer.metadata["class_names"] == ["a", "b", "c"]  # what napari's Save writes into the file


def test_segment_opens_napari_s_bar_in_a_later_turn_and_ends_after_its_steps(widget, qtbot):
    w = widget
    panel = w.segment_panel
    announced: list = []
    panel.segmented.connect(announced.append)
    assert panel.segment() is not None
    assert panel._napari_bar is None and panel.running  # napari's activity bar: in a turn of its own
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    labels = w.viewer.layers[f"{IMAGE} labels"]
    assert panel._napari_bar is None and not w.session.busy  # closed at the end
    assert announced == [[labels]] and labels.visible and all(o.visible for o in _labels_overlays(labels))
    assert w.viewer.layers.selection.active == labels and labels.mode == "paint"


def test_the_session_runs_the_follow_up_of_a_load_in_a_later_turn(widget, tiny_model, qtbot):
    session, calls = widget.session, []
    assert session.load_file(tiny_model, on_done=lambda: calls.append(session.busy)) is not None
    qtbot.waitUntil(lambda: bool(calls), timeout=60_000)
    assert calls == [False] and session.path == tiny_model and session.steps.pending == 0


def test_the_training_child_starts_on_the_writer_thread_and_a_failure_is_reported(qtbot, monkeypatch):
    from napari_csunet._qt.common import StatusLine, start_training_child
    from napari_csunet._qt.serial_worker import SerialWorker
    from napari_csunet.loop import training_job

    threads: list[str] = []

    def start(self) -> None:
        import threading

        threads.append(threading.current_thread().name)
        raise OSError("no such interpreter")

    monkeypatch.setattr(training_job.TrainingJob, "start", start)
    status, failed, writer = StatusLine(), [], SerialWorker("csunet-test")
    job = start_training_child({"steps": 1}, lambda ev: None, status, writer=writer, on_failed=lambda: failed.append(1))
    assert isinstance(job, training_job.TrainingJob)  # returned at once; started on the writer thread
    qtbot.waitUntil(lambda: bool(failed), timeout=10_000)
    assert threads and threads[0].startswith("csunet-test")
    assert status.kind == "error" and "no such interpreter" in status.text()
    # without a writer: as before, on the calling thread, None when it cannot start
    assert start_training_child({"steps": 1}, lambda ev: None, status) is None


def test_the_resegmentation_keeps_corrections_read_ahead(widget, qtbot, monkeypatch):
    """The training set's labels are read on the writer thread; the GUI thread only compares."""
    w = widget
    panel = w.finetune_panel
    w.segment_panel.segment()
    qtbot.waitUntil(lambda: not w.segment_panel.running, timeout=120_000)
    labels = w.viewer.layers[f"{IMAGE} labels"]
    vouched = np.zeros(labels.data.shape, bool)
    vouched[:8, :8] = True

    def no_read(name):
        raise AssertionError("read on the GUI thread")

    monkeypatch.setattr(w.session.annotations, "vouched", no_read)
    assert (w.session.corrections(labels, {IMAGE: vouched}) == vouched).all()  # nothing painted yet

    reads: list[str] = []

    def read(name):
        import threading

        reads.append(threading.current_thread().name)
        return vouched

    monkeypatch.setattr(w.session.annotations, "vouched", read)
    labels.data[:8, :8] = (labels.data[:8, :8] % 3) + 1  # the user's corrections there
    before = np.array(labels.data[:8, :8])
    panel._after_load(str(w.session.path))
    qtbot.waitUntil(lambda: panel.resegmented is not None, timeout=120_000)
    assert reads and all(not name.startswith("MainThread") for name in reads)
    assert (labels.data[:8, :8] == before).all() and isinstance(labels, Labels)
    assert not any(isinstance(layer, Image) and layer.name.endswith("(old)") for layer in w.viewer.layers)


def test_napari_s_bar_is_opened_only_for_a_job_that_takes_a_while(widget, qtbot, monkeypatch):
    import time

    from napari_csunet._qt import session as session_module

    made: list = []

    class Bar:
        def __init__(self, total: int, desc: str) -> None:
            self.desc, self.closed = desc, False
            made.append(self)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(session_module, "progress", Bar)
    monkeypatch.setattr(session_module, "BAR_AFTER_MS", 200)
    session = widget.session
    seg, path = session.segmenter, session.path

    def job(seconds: float):
        return lambda: (time.sleep(seconds), (seg, path, False))[1]

    assert session._run(job(0.0), what="quick") is not None
    qtbot.waitUntil(lambda: not session.busy, timeout=10_000)
    qtbot.wait(400)
    assert made == []  # a quick job: no bar at all
    assert session._run(job(1.0), what="slow") is not None
    qtbot.waitUntil(lambda: bool(made), timeout=10_000)
    assert made[0].desc == "CS-UNet: slow" and not made[0].closed and session.busy
    qtbot.waitUntil(lambda: not session.busy, timeout=10_000)
    assert made[0].closed and len(made) == 1


def test_the_dock_opens_napari_s_first_activity_bar_ahead_of_the_first_segmentation(make_napari_viewer, qtbot,
                                                                                      monkeypatch):
    """The session's first activity bar builds napari's progress widgets (140-175 ms on the GUI
    thread): the dock opens and closes one while it appears, in a turn of its own, so the first
    Segment does not pay for it; nothing is left in napari's activity list."""
    from napari.utils import progress

    from napari_csunet._qt import main_widget

    opened: list[str] = []
    real = main_widget._first_activity_bar

    def spy() -> None:
        opened.append("bar")
        real()

    monkeypatch.setattr(main_widget, "_first_activity_bar", spy)
    make_napari_viewer(show=True).window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    qtbot.waitUntil(lambda: opened == ["bar"], timeout=10_000)
    assert not [bar for bar in progress._all_instances if bar.desc == "CS-UNet ready"]


def test_the_worker_computes_what_the_first_labels_layer_would_compute_on_the_gui_thread():
    """vispy computes its line dash patterns in Python loops for the first line visual of a process
    (a labels layer's polygon overlay): 40-190 ms of the GUI thread. The Segment worker makes them."""
    from vispy.visuals.line.dash_atlas import _make_pattern

    from napari_csunet._qt.segment_panel import _warm_napari_imports

    _make_pattern.cache_clear()
    _warm_napari_imports()
    assert _make_pattern.cache_info().currsize >= 13  # every pattern of vispy's atlas, cached for the overlay
