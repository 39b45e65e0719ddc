"""The user's whole loop in a real viewer, with the real training child (tiny preset, a few steps).

sample image -> segment -> correct three boxes (NASA's labels) and mark them as checked -> add to
training set -> fine-tune in the child process, judged on held-out reviewed blocks -> better there:
the new model is current and the image is segmented again with the corrections kept -> Revert
model goes back in one click; a fine-tune that cannot improve says so and keeps the model; painted
pixels only cannot judge: Stop, and the model is offered, not made current.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = [pytest.mark.gui, pytest.mark.slow]

from test_gui import CLASSES, segment  # noqa: E402 (fixtures: conftest.py)

from csunet_train.config import TrainConfig  # noqa: E402
from napari_csunet._qt.training_set import WHOLE_IMAGE  # noqa: E402
from napari_csunet.loop.finetune_job import FINETUNE_OVERRIDES, finetune_defaults  # noqa: E402
from napari_csunet.loop.training_job import jobs_dir  # noqa: E402
from napari_csunet.models.catalog import user_models_dir  # noqa: E402


def _fast(panel, steps: int) -> None:
    panel.form.steps.value = steps
    panel.form.crop.value = 256
    panel.form.batch_size.value = 1


BOXES = [(40, 40), (300, 60), (170, 330)]  # top-left corners of three 160² boxes the user corrects


def _correct_three_boxes(w, layer):
    """NASA's ground truth painted into three boxes, and a Shapes layer marking them as checked."""
    from napari_csunet.plugin import samples

    ((truth, _, _),) = samples.superalloy_labels()
    for r, c in BOXES:
        layer.data[r:r + 160, c:c + 160] = truth[r:r + 160, c:c + 160]
    w.viewer.add_shapes([[[r, c], [r, c + 160], [r + 160, c + 160], [r + 160, c]] for r, c in BOXES],
                        shape_type="rectangle", name="checked")
    w.correct_panel.set_labels_layer(layer)
    assert w.correct_panel.region.current_choice == "checked"


def test_three_corrected_boxes_teach_the_model_and_stay_on_screen(widget, qtbot, monkeypatch):
    # the tiny test model starts far from any answer, so whatever it learns moves most pixels where
    # nobody checked; that rule is tested headless (test_fair_finetune): here the kept path is
    monkeypatch.setitem(FINETUNE_OVERRIDES, "unchecked_limit", 1.0)
    monkeypatch.setitem(FINETUNE_OVERRIDES, "unchecked_class_limit", 1.0)
    w = widget
    layer = segment(w, qtbot)
    first_prediction = w.session.records.for_labels(layer).prediction.copy()
    _correct_three_boxes(w, layer)
    corrected = layer.data.copy()
    painted = corrected != first_prediction
    assert painted.any()
    entry = w.correct_panel.add_to_training_set()
    assert entry is not None and entry.labelled == 3 * 160 * 160 and entry.painted == int(painted.sum())
    assert w.correct_panel.table.rowCount() == 1

    panel = w.finetune_panel
    _fast(panel, 30)
    panel.form.lr.value = 1e-3
    assert panel.start(), panel.status.text()
    assert panel.running and not panel.start_btn.isEnabled() and panel.stop_btn.isEnabled()
    assert not panel.revert_btn.isEnabled() and not panel.use_btn.isEnabled()
    qtbot.waitUntil(lambda: panel.last_done is not None and not panel.running, timeout=900_000)  # a busy CPU
    qtbot.waitUntil(lambda: not w.session.busy and not w.segment_panel.running and panel.resegmented is not None,
                    timeout=120_000)

    decision = panel.last_done["decision"]
    assert decision["fair"] and decision["keep"] and decision["verdict"] == "better", panel.result.text()
    held_out = decision["new"]["pixels"]
    assert 0.15 * entry.labelled < held_out < 0.35 * entry.labelled  # reviewed blocks held out of the boxes
    new_model = user_models_dir() / panel.last_done["path"].split("/")[-1]
    assert new_model.exists() and new_model.name.startswith("tiny-test-ft-")
    assert w.session.path == new_model and w.session.info.class_names == CLASSES
    assert w.model_panel.files.item(0).toolTip().startswith(str(new_model))  # the newest model on top
    assert "held-out reviewed mIoU" in w.model_panel.files.item(0).text()
    text = panel.result.text()
    assert decision["reason"] in text and f"{held_out:,} held-out reviewed pixels" in text
    assert "IoU per class on the held-out reviewed pixels of this round: matrix " in text and " px)" in text
    assert "corrected pixels" not in text and "corrected/accepted px" not in text  # training pixels never judge

    new_prediction = w.session.records.for_labels(layer).prediction
    assert not np.array_equal(new_prediction, first_prediction)  # the model changed
    boxes = np.zeros(painted.shape, bool)
    for r, c in BOXES:
        boxes[r:r + 160, c:c + 160] = True
    kept = boxes | painted
    np.testing.assert_array_equal(layer.data[kept], corrected[kept])  # the corrected boxes stay on screen
    np.testing.assert_array_equal(layer.data[~kept], new_prediction[~kept])  # the new prediction elsewhere
    np.testing.assert_array_equal(w.session.records.for_labels(layer).previous, corrected)
    assert panel.start_btn.isEnabled() and not panel.stop_btn.isEnabled()
    (job_file,) = jobs_dir().glob("*/job.json")
    assert jobs_dir().parent == user_models_dir()  # job files stay under CSUNET_MODELS_DIR
    spec = json.loads(job_file.read_text())
    assert spec["mode"] == "finetune" and spec["model"].endswith("tiny-test.safetensors") and spec["steps"] == 30
    assert spec["pairs"] == w.correct_panel.store.pairs() and spec["class_names"] == CLASSES
    assert spec["distill_weight"] == finetune_defaults()["distill_weight"]
    assert spec["pseudo_weight"] == TrainConfig.__dataclass_fields__["pseudo_weight"].default  # not the panel's

    assert panel.revert_btn.isEnabled() and not panel.use_btn.isEnabled()
    panel.resegmented = None
    panel.revert_btn.click()  # one click back to the model from before, the corrections still on screen
    qtbot.waitUntil(lambda: not w.session.busy and not w.segment_panel.running and panel.resegmented is not None,
                    timeout=120_000)
    assert w.session.path.name == "tiny-test.safetensors" and new_model.exists()
    np.testing.assert_array_equal(w.session.records.for_labels(layer).prediction, first_prediction)
    np.testing.assert_array_equal(layer.data[kept], corrected[kept])
    assert panel.use_btn.isEnabled() and not panel.revert_btn.isEnabled()


def test_a_finetune_that_cannot_improve_says_so_and_keeps_the_model(widget, qtbot):
    """Every pixel accepted as the model predicted it: the starting model already scores 100% on
    the held-out part (the child validates with the GUI's predictor), so nothing can beat it."""
    w = widget
    layer = segment(w, qtbot)
    shown = layer.data.copy()
    w.correct_panel.region.choose(WHOLE_IMAGE)
    assert w.correct_panel.add_to_training_set() is not None
    panel = w.finetune_panel
    _fast(panel, 2)
    panel.form.lr.value = 1e-6
    assert panel.start(), panel.status.text()
    qtbot.waitUntil(lambda: panel.last_done is not None and not panel.running, timeout=180_000)
    decision = panel.last_done["decision"]
    assert decision["verdict"] == "not_better" and decision["best_step"] == 0, panel.result.text()
    assert panel.result.kind == "warning" and "Kept the current model" in panel.result.text()
    assert "tiny-test.safetensors is unchanged" in panel.status.text()
    assert w.session.path.name == "tiny-test.safetensors"
    assert not panel.use_btn.isEnabled() and not panel.revert_btn.isEnabled()
    assert not list(user_models_dir().glob("tiny-test-ft-*"))  # no identical "new" model registered
    np.testing.assert_array_equal(layer.data, shown)


def test_stop_on_painted_pixels_only_offers_the_model_without_making_it_current(widget, qtbot):
    """Painted pixels cannot judge: every step may run, and the model waits for the user's word."""
    w = widget
    layer = segment(w, qtbot)
    layer.data[:64, :64] = 3
    assert w.correct_panel.add_to_training_set() is not None
    panel = w.finetune_panel
    _fast(panel, 10_000)
    assert panel.start()
    qtbot.waitUntil(lambda: len(panel.plot.loss) >= 1, timeout=120_000)
    panel.stop_btn.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_done is not None and panel.last_done["stopped"] is True, panel.status.text()
    assert panel.last_done["steps"] < 10_000
    decision = panel.last_done["decision"]
    assert decision["verdict"] == "unjudged" and not decision["keep"] and not decision["fair"]
    assert w.session.path.name == "tiny-test.safetensors" and not w.session.busy  # offered, not made current
    assert "stopped" in panel.result.text() and "Nothing fair" in panel.result.text()
    assert panel.use_btn.isEnabled() and panel.revert_btn.isEnabled()
    assert panel.resegmented is None and not w.segment_panel.running  # nothing segmented with it yet
    panel.use_btn.click()
    qtbot.waitUntil(lambda: not w.session.busy and not w.segment_panel.running and panel.resegmented is not None,
                    timeout=120_000)
    assert w.session.path.name.startswith("tiny-test-ft-") and panel.revert_btn.isEnabled()
    assert "You chose to use it" in panel.result.text() and "Nothing fair" in panel.result.text()
