"""The dock widget with a real viewer: model, segment, correct, inspect, fine-tune errors.

Runs under xvfb-run with the tiny preset; the end-to-end loop with the real training child is
in tests/test_gui_loop.py.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from napari.layers import Labels  # noqa: E402
from qtpy.QtWidgets import QShortcut  # noqa: E402

from napari_csunet._qt.main_widget import MIN_WIDTH  # noqa: E402
from napari_csunet._qt.training_set import PAINTED_ONLY, WHOLE_IMAGE  # noqa: E402
from napari_csunet.images.annotations import ACCEPTED, PAINTED  # noqa: E402
from napari_csunet.settings import load_settings  # noqa: E402

CLASSES = ["matrix", "secondary", "tertiary"]
IMAGE = "superalloy spot2_0d_0"


# the fixtures tiny_model, docked and widget (the tiny model, of these CLASSES, loaded) are in conftest.py


def segment(w, qtbot, layers=None):
    assert w.segment_panel.segment(layers) is not None, w.segment_panel.status.text()
    qtbot.waitUntil(lambda: not w.segment_panel.running, timeout=120_000)
    return w.viewer.layers[f"{IMAGE} labels"]


def test_model_panel_lists_the_model_file_and_loads_it(widget):
    w = widget
    items = [w.model_panel.files.item(i).text() for i in range(w.model_panel.files.count())]
    kinds = [t.split("(")[1].split(")")[0] for t in items]
    assert kinds == sorted(kinds, key=lambda k: k != "user")  # the user's fine-tuned models first, then starters
    assert any(t.startswith("tiny-test (user) · matrix, secondary, tertiary") for t in items)
    assert w.session.path.name == "tiny-test.safetensors" and w.session.info.class_names == CLASSES
    assert "tiny-test" in w.model_panel.current.text()
    assert w.tabs.currentIndex() == 1  # jumped to Segment once the model was ready
    assert w.segment_panel.segment_btn.isEnabled()
    assert "tiny-test ready" in w.segment_panel.status.text() and "load a model" not in w.segment_panel.status.text()
    panel = w.model_panel  # missing preset weights: plain text that says a loaded model needs none
    request = (panel.preset.currentText(), panel._source(panel.cnn_source), panel._source(panel.swin_source),
               panel.allow_download.isChecked())
    panel._show_sources((["CNN x: not downloaded yet"], False), request)
    assert panel.weights_status.kind == "info" and "a loaded model file needs none" in panel.weights_status.text()
    assert w.width() >= MIN_WIDTH and w.model_panel.files.wordWrap()


def test_model_panel_lists_an_unreadable_model_file_with_its_reason(widget):
    from qtpy.QtCore import Qt

    from napari_csunet.models.catalog import user_models_dir

    panel = widget.model_panel
    (user_models_dir() / "broken.safetensors").write_bytes(b"not a model file")
    panel.refresh_files()
    items = [panel.files.item(i) for i in range(panel.files.count())]
    bad = [it for it in items if it.text().startswith("broken.safetensors (unreadable) · ")]
    assert len(bad) == 1 and bad[0] is items[-1] and bad[0].flags() == Qt.ItemFlag.NoItemFlags  # seen, not loadable
    assert "cannot be read" in bad[0].toolTip() and "move or delete it" in bad[0].toolTip()
    assert panel.files.currentRow() == 0 and "(user)" in panel.files.currentItem().text()


def test_segment_writes_named_classes_and_resegment_keeps_an_undo(widget, qtbot):
    w = widget
    w.segment_panel.want_probs.setChecked(True)
    w.segment_panel.want_uncertainty.setChecked(True)
    layer = segment(w, qtbot)
    assert isinstance(layer, Labels) and layer.data.shape == (512, 512) and layer.data.dtype == np.uint8
    assert set(np.unique(layer.data)) <= {1, 2, 3}
    assert list(layer.features["class"]) == ["unlabelled", *CLASSES]
    np.testing.assert_allclose(layer.colormap.map(3)[:3], [1, 0, 0])
    dominant = int(np.bincount(layer.data.ravel()).argmax())  # drawn transparent: the micrograph shows
    assert layer.colormap.map(dominant)[3] == 0 and all(layer.colormap.map(c)[3] > 0 for c in {1, 2, 3} - {dominant})
    assert f"{IMAGE} p(tertiary)" in w.viewer.layers and f"{IMAGE} uncertainty" in w.viewer.layers
    probs = sum(w.viewer.layers[f"{IMAGE} p({c})"].data for c in CLASSES)
    np.testing.assert_allclose(probs, 1, atol=0.02)
    assert w.segment_panel.bar.value() == w.segment_panel.bar.maximum() > 0
    assert "matrix" in w.segment_panel.status.text()
    prediction = w.session.records.for_labels(layer).prediction.copy()

    layer.data[:50, :50] = 0  # a "correction"
    painted = layer.data.copy()
    segment(w, qtbot)
    assert [lay.name for lay in w.viewer.layers if isinstance(lay, Labels)] == [layer.name]
    np.testing.assert_array_equal(layer.data, prediction)
    np.testing.assert_array_equal(w.session.records.for_labels(layer).previous, painted)
    w.correct_panel.undo_resegment()
    np.testing.assert_array_equal(layer.data, painted)
    w.correct_panel.revert()
    np.testing.assert_array_equal(layer.data, prediction)


def test_cancel_leaves_the_layers_as_they_were(widget, qtbot):
    """The engine's default for 2048^2 here is one tile: a cancel stops before it or inside its
    forward pass (polled between the network's stages)."""
    w = widget
    big = np.tile(w.viewer.layers[IMAGE].data, (4, 4))
    image = w.viewer.add_image(big, name="big")
    assert w.segment_panel.segment([image]) is not None
    w.segment_panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not w.segment_panel.running, timeout=60_000)
    assert "big labels" not in w.viewer.layers
    assert "cancelled" in w.segment_panel.status.text()
    assert w.segment_panel.segment_btn.isEnabled() and not w.session.busy


def test_segment_refuses_clearly_without_an_image(widget):
    w = widget
    w.viewer.layers.clear()
    assert w.segment_panel.segment() is None
    assert w.segment_panel.status.kind == "error" and "no image" in w.segment_panel.status.text()


def test_palette_and_number_keys_pick_the_brush_class(widget, qtbot):
    w = widget
    layer = segment(w, qtbot)
    panel = w.correct_panel
    assert panel.layer().name == layer.name
    assert [b.text() for b in panel.class_buttons] == ["0 eraser (unlabelled)", "1 matrix", "2 secondary", "3 tertiary"]
    panel.class_buttons[3].click()
    assert layer.selected_label == 3 and layer.mode == "paint" and panel.class_buttons[3].isChecked()
    tab_keys = {s.key().toString(): s for s in panel.findChildren(QShortcut)}
    tab_keys["1"].activated.emit()  # digits on the Correct tab always pick a class
    assert layer.selected_label == 1 and panel.class_buttons[1].isChecked()
    w.viewer.layers.selection.active = layer
    handler = w.viewer.window._qt_viewer.canvas._key_map_handler

    def press(key: str) -> None:
        handler.press_key(key)
        handler.release_key(key)

    layer.mode = "pan_zoom"
    press("2")  # on the layer, by default: napari's own key (paint mode), the class stays
    assert layer.selected_label == 1 and layer.mode == "paint"
    panel.keys.class_keys_on_layer.value = True  # the setting: digits pick classes on the layer too
    assert load_settings().class_keys_on_layer
    press("2")
    assert layer.selected_label == 2 and layer.mode == "paint"
    panel.keys.class_keys_on_layer.value = False  # and back to napari's keys
    layer.mode = "pan_zoom"
    press("3")
    assert layer.selected_label == 2 and layer.mode == "polygon"


def test_add_to_training_set_with_rectangles_then_remove(widget, qtbot):
    w = widget
    layer = segment(w, qtbot)
    prediction = w.session.records.for_labels(layer).prediction
    layer.data[100:120, 100:140] = prediction[100:120, 100:140] % 3 + 1  # 800 painted pixels
    layer.data[400:410, 400:410] = prediction[400:410, 400:410] % 3 + 1  # 100 more, outside the rectangles
    panel = w.correct_panel
    panel.set_labels_layer(layer)
    assert panel.region.current_choice == PAINTED_ONLY
    panel.training.update_preview()
    assert "900 px: 900 painted + 0 accepted" in panel.training.preview.text()
    shapes = w.viewer.add_shapes([[[90, 95], [90, 200], [130, 200], [130, 95]],
                                  [[0, 0], [0, 10], [10, 10], [10, 0]]], shape_type="rectangle", name="roi")
    assert panel.region.current_choice == "roi"  # the rectangles just drawn are used
    panel.training.update_preview()
    assert f"{900 + 40 * 105 - 800 + 100:,} px: 900 painted" in panel.training.preview.text()
    entry = panel.add_to_training_set()
    assert entry is not None and entry.regions == [[90, 95, 130, 200], [0, 0, 10, 10]]
    saved, mask = (tifffile.imread(panel.store.root / rel) for rel in (entry.labels, entry.mask))
    np.testing.assert_array_equal(saved, layer.data)  # the layer as left; the mask says what trains
    assert (mask[100:120, 100:140] == PAINTED).all() and (mask[400:410, 400:410] == PAINTED).all()
    assert (mask[90:130, 95:200] > 0).all() and (mask[:10, :10] == ACCEPTED).all() and int((mask > 0).sum()) == 4400
    np.testing.assert_array_equal(tifffile.imread(panel.store.root / entry.image), w.viewer.layers[IMAGE].data)
    assert entry.painted == 900 and entry.labelled == 4400
    assert panel.table.rowCount() == 1 and panel.table.horizontalHeaderItem(4).text() == "tertiary"
    panel.table.selectRow(0)
    panel.remove_selected()
    assert panel.table.rowCount() == 0 and len(panel.store) == 0
    shapes.data = []
    panel.region.choose(WHOLE_IMAGE)
    entry = panel.add_to_training_set()
    assert entry.whole_image and entry.labelled == layer.data.size and "most of these labels" in panel.status.text()


@pytest.mark.parametrize("region", ["empty shapes", "no labels"])
def test_add_to_training_set_refuses_with_a_reason(widget, qtbot, region):
    w = widget
    layer = segment(w, qtbot)
    panel = w.correct_panel
    if region == "empty shapes":
        w.viewer.add_shapes(name="roi")
        panel.region.choose("roi")
        expected = "has no rectangle"
    else:
        layer.data[:] = 0
        expected = "no corrected or accepted pixels"
    assert panel.add_to_training_set() is None
    assert panel.status.kind == "error" and expected in panel.status.text()
    assert len(panel.store) == 0


def test_inspect_statistics_csv_display_and_disagreement(widget, qtbot, tmp_path):
    w = widget
    layer = segment(w, qtbot)
    panel = w.inspect_panel
    panel.labels.choose(layer.name)
    assert panel.compute() is not None
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    assert [r["class"] for r in panel.rows] == CLASSES and panel.table.rowCount() == 3
    assert abs(sum(r["area_fraction"] for r in panel.rows) - 1) < 1e-6
    out = panel.export_csv(str(tmp_path / "stats.csv"))
    rows = list(csv.DictReader(open(out)))
    assert [r["class"] for r in rows] == CLASSES and "particles" in rows[0]
    panel.contours.setChecked(True)
    panel.opacity.setValue(30)
    assert layer.contour == 2 and layer.opacity == pytest.approx(0.3)

    corrected = w.viewer.add_labels(layer.data.copy(), name="corrected")
    corrected.data[:10, :] = 0
    corrected.data[10:20, :] = layer.data[10:20, :] % 3 + 1
    panel.layer_a.choose(layer.name)
    panel.layer_b.choose("corrected")
    diff = panel.show_disagreement()
    assert diff.data[:10].max() == 0 and diff.data[10:20].all() and diff.data[20:].max() == 0
    assert "disagree" in panel.status.text()


def test_finetune_refuses_without_annotations_or_with_other_classes(widget, qtbot):
    from napari_csunet.loop.finetune_job import FORM_FIELDS, finetune_defaults

    w = widget
    panel = w.finetune_panel
    # the spin boxes hold the defaults exactly (lr 3e-4, not rounded)
    assert panel.params() == {k: finetune_defaults()[k] for k in FORM_FIELDS}
    assert panel.start() is False and "training set is empty" in panel.status.text()
    layer = segment(w, qtbot)
    w.correct_panel.store.add(np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8), name="other",
                              class_names=["a", "b"])
    assert panel.start() is False and "has classes ['a', 'b']" in panel.status.text()
    assert panel.job is None and layer.data.shape == (512, 512)


def test_a_crashing_training_child_is_reported_and_napari_survives(widget, qtbot, monkeypatch, tmp_path):
    """Broken data in the annotation set: the real child reports an error, nothing is lost."""
    w = widget
    layer = segment(w, qtbot)
    w.correct_panel.region.choose(WHOLE_IMAGE)
    entry = w.correct_panel.add_to_training_set()
    (w.correct_panel.store.root / entry.labels).write_bytes(b"not a tiff at all")
    w.finetune_panel.form.steps.value = 2
    assert w.finetune_panel.start()
    qtbot.waitUntil(lambda: not w.finetune_panel.running, timeout=120_000)
    assert w.finetune_panel.status.kind == "error" and "training failed" in w.finetune_panel.status.text()
    assert w.session.path.name == "tiny-test.safetensors"  # the model did not change
    assert [e.id for e in w.correct_panel.store.entries()] == [entry.id]
    assert layer.data.shape == (512, 512) and w.finetune_panel.start_btn.isEnabled()


def test_device_choice_is_remembered(widget):
    from napari_csunet.settings import load_settings

    widget.model_panel.device.setCurrentText("cpu")
    assert load_settings().device == "cpu"


@pytest.mark.parametrize(("cnn", "expected"), [("random (train from scratch)", "ready"), ("imagenet", "resnet10t-imagenet")])
def test_build_a_preset_or_say_where_the_weights_go(widget, qtbot, cnn, expected):
    panel = widget.model_panel
    panel.preset.setCurrentText("csunet-tiny")
    panel.cnn_source.setCurrentText(cnn)
    panel.classes.setText("background, pore")
    assert panel.build_preset() is not None
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=60_000)
    if expected == "ready":
        assert widget.session.info.class_names == ["background", "pore"] and widget.session.unsaved
        assert widget.session.path is None and "not saved yet" in panel.current.text()
    else:  # offline: the message names the URL and the drop-in path, the old model stays
        assert panel.status.kind == "error" and expected in panel.status.text() and "save it as" in panel.status.text()
        assert widget.session.info.class_names == CLASSES


def test_a_new_model_starts_from_micro_tiny_by_default(widget, qtbot):
    panel = widget.model_panel
    assert panel.preset.currentText() == "micro-tiny" and not panel.cnn_source.isEnabled()
    row = next(i for i in range(panel.files.count()) if panel.files.item(i).text().startswith("micro-tiny (pretrained)"))
    panel.files.setCurrentRow(row)
    assert panel.load_selected() is None and "class names" in panel.status.text()  # not loaded as a segmenter
    panel.classes.setText("ferrite, pearlite, martensite, bainite, inclusion")
    assert panel.build_preset() is not None
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=60_000)
    info = widget.session.info
    assert info.class_names == ["ferrite", "pearlite", "martensite", "bainite", "inclusion"]
    assert info.provenance["started_from"] == "micro-tiny" and widget.session.unsaved
    assert widget.session.segmenter.model.config.num_classes == 5 and not info.is_pretraining_only


def test_model_loads_in_a_fresh_napari_started_first(tiny_model, tmp_path):
    """The user's order: napari (and its OpenGL) first, then torch/timm on a worker: no crash."""
    script = tmp_path / "fresh.py"
    script.write_text(f"""
import sys, time
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=False)
assert "torch" not in sys.modules
_, w = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
w.model_panel.open_file({str(tiny_model)!r})
app, t0 = QApplication.instance(), time.time()
while (w.session.segmenter is None or w.session.busy) and time.time() - t0 < 120:
    app.processEvents()
    time.sleep(0.02)
print("loaded", w.session.segmenter is not None, flush=True)
viewer.close()
""")
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0 and "loaded True" in out.stdout, out.stderr[-2000:]
