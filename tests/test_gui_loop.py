"""The user's whole loop in a real viewer, with the real training child (tiny preset, 3 steps).

sample image -> segment -> paint a correction -> add to training set -> fine-tune in the child
process -> the new model is current -> the image is segmented again; and Stop keeps the best.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = [pytest.mark.gui, pytest.mark.slow]

from test_gui import CLASSES, IMAGE, segment, tiny_model, tiny_model_bytes, widget  # noqa: E402,F401

from napari_csunet._qt.segment_panel import PREDICTION, PREVIOUS  # noqa: E402
from napari_csunet.jobs import jobs_dir  # noqa: E402
from napari_csunet.model_catalog import user_models_dir  # noqa: E402


def _fast(panel, steps: int) -> None:
    panel.steps.setValue(steps)
    panel.crop.setCurrentText("256")
    panel.batch.setValue(1)


def test_segment_correct_add_finetune_replace_resegment(widget, qtbot):  # noqa: F811 - fixture
    w = widget
    layer = segment(w, qtbot)
    first_prediction = layer.metadata[PREDICTION].copy()
    w.correct_panel.set_class(3)
    layer.paint((200, 200), new_label=3)  # a brush stroke, as the user paints
    layer.data[300:340, 100:180] = 2
    corrected = layer.data.copy()
    assert not np.array_equal(corrected, first_prediction)
    entry = w.correct_panel.add_to_training_set()
    assert entry is not None and (w.correct_panel.store.root / entry.labels).exists()
    assert w.correct_panel.table.rowCount() == 1

    panel = w.finetune_panel
    _fast(panel, 3)
    assert panel.start(), panel.status.text()
    assert panel.running and not panel.start_btn.isEnabled() and panel.stop_btn.isEnabled()
    qtbot.waitUntil(lambda: panel.last_done is not None and not panel.running, timeout=180_000)
    qtbot.waitUntil(lambda: not w.session.busy and not w.segment_panel.running, timeout=120_000)

    done = panel.last_done
    new_model = user_models_dir() / done["path"].split("/")[-1]
    assert new_model.exists() and new_model.name.startswith("tiny-test-ft-")
    assert w.session.path == new_model and w.session.info.class_names == CLASSES
    assert any(new_model.name in w.model_panel.files.item(i).toolTip() for i in range(w.model_panel.files.count()))
    assert "→" in panel.result.text() and "mIoU" in panel.result.text()
    assert len(panel.plot.loss) >= 1 and len(panel.plot.val) >= 2  # step 0 (before) and after
    assert layer.metadata["csunet_model"] == w.session.segmenter.name
    np.testing.assert_array_equal(layer.metadata[PREVIOUS], corrected)  # the corrections survive as undo
    assert set(np.unique(layer.data)) <= {1, 2, 3}
    assert panel.start_btn.isEnabled() and not panel.stop_btn.isEnabled()
    (job_file,) = jobs_dir().glob("*/job.json")
    spec = json.loads(job_file.read_text())
    assert spec["mode"] == "finetune" and spec["model"].endswith("tiny-test.safetensors") and spec["steps"] == 3
    assert spec["pairs"] == w.correct_panel.store.pairs() and spec["class_names"] == CLASSES


def test_stop_keeps_the_best_model(widget, qtbot):  # noqa: F811 - fixture
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
    qtbot.waitUntil(lambda: not w.session.busy and not w.segment_panel.running, timeout=120_000)
    assert w.session.path.name.startswith("tiny-test-ft-") and "stopped" in panel.result.text()
