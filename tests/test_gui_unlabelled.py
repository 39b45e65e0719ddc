"""The Fine-tune tab keeps the other open images as they are: the images open in napari that were
not corrected go to the training job as ``unlabelled`` TIFFs (no training child runs here: the
spec it would get is caught), the check box is remembered, and the status line counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from test_gui import CLASSES, IMAGE  # noqa: E402 (fixtures: conftest.py)

from napari_csunet._qt import finetune_panel as finetune_module  # noqa: E402
from napari_csunet._qt.common import OUTPUT  # noqa: E402
from napari_csunet._qt.other_images import KEEP_OTHERS, MAX_OTHERS, unlabelled_dir  # noqa: E402
from napari_csunet.settings import load_settings  # noqa: E402

if TYPE_CHECKING:
    from csunet_train.config import TrainConfig


class _Job:
    """Stands in for the training child: the panel only stops or kills it."""

    def stop(self) -> None:
        pass

    def kill(self) -> None:
        pass


@pytest.fixture
def specs(widget, monkeypatch) -> list[TrainConfig]:
    """The job specs the panel would start children with; the sample image is in the training set."""
    caught: list[dict] = []

    def start_training_child(spec, on_event, status, **_):
        caught.append(spec)
        return _Job()

    monkeypatch.setattr(finetune_module, "start_training_child", start_training_child)
    image = np.asarray(widget.viewer.layers[IMAGE].data)
    labels = np.ones(image.shape[:2], np.uint8)
    widget.session.annotations.add(image, labels, name=IMAGE, class_names=CLASSES)
    return caught


def _start(w, qtbot, specs: list[TrainConfig]) -> TrainConfig:
    panel, before = w.finetune_panel, len(specs)
    assert panel.start(), panel.status.text()
    qtbot.waitUntil(lambda: len(specs) > before or panel.status.kind == "error", timeout=30_000)
    assert len(specs) > before, panel.status.text()
    return specs[-1]


def _kept(spec: TrainConfig) -> list[np.ndarray]:
    return [tifffile.imread(path) for path in spec.unlabelled]


@pytest.mark.parametrize("keep", [True, False])
def test_the_other_open_images_are_kept_as_they_are(widget, qtbot, specs, keep):
    import dask.array as da

    w = widget
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65535, (64, 80), dtype=np.uint16)
    rgb = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    w.viewer.add_image(grey, name="other grey")
    w.viewer.add_image(rgb, name="other rgb", rgb=True)
    w.viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="a stack")  # not one plane
    w.viewer.add_image(da.zeros((64, 64), dtype=np.uint8), name="lazy")  # dask: never loaded here
    w.viewer.add_image(np.zeros((4097, 16), np.uint8), name="too large")
    w.viewer.add_image(np.full((64, 64), np.nan, np.float32), name="nan")  # the child would refuse it
    w.viewer.add_image(np.zeros((64, 64), np.float32), name="other grey p(matrix)", metadata={OUTPUT: True})
    w.viewer.add_labels(np.zeros((64, 80), np.uint8), name="other grey labels")
    stale = unlabelled_dir() / "000-from-the-last-run.tif"
    stale.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(stale, np.zeros((16, 16), np.uint8))
    w.finetune_panel.keep_others.value = keep
    spec = _start(w, qtbot, specs)
    status = w.finetune_panel.status.text()
    assert load_settings().finetune[KEEP_OTHERS] is keep
    if keep:  # the corrected sample, the stack, the lazy, large, NaN, probability and labels layers are not
        kept = _kept(spec)
        assert len(kept) == 2, spec.unlabelled
        np.testing.assert_array_equal(kept[0], rgb)  # the most recently added first
        np.testing.assert_array_equal(kept[1], grey)
        assert [p.rsplit("/", 1)[-1] for p in spec.unlabelled] == ["000-other_rgb.tif", "001-other_grey.tif"]
        assert not stale.exists()
        assert "1 corrected image(s) and 2 other open images kept as they are" in status
    else:
        assert not spec.unlabelled and stale.exists()
        assert "kept as they are" not in status
    assert spec.pairs and w.finetune_panel.running


def test_at_most_four_other_images_newest_first_and_the_choice_is_remembered(widget, qtbot, specs):
    w = widget
    for i in range(MAX_OTHERS + 2):
        w.viewer.add_image(np.full((32, 32), i, np.uint8), name=f"image {i}")
    spec = _start(w, qtbot, specs)
    assert [int(a[0, 0]) for a in _kept(spec)] == [5, 4, 3, 2]
    assert "and 4 other open images kept" in w.finetune_panel.status.text()

    w.finetune_panel.job = None
    w.finetune_panel.keep_others.value = False
    spec = _start(w, qtbot, specs)
    assert not spec.unlabelled
    again = finetune_module.FinetunePanel(w.viewer, w.session)
    assert again.keep_others.value is False
    assert again.params() == w.finetune_panel.params()  # the form's values still come back as before


@pytest.mark.parametrize(("new_head", "semi", "said"), [
    (False, 0.0, "kept as they are"),
    (True, 0.0, None),  # a new output layer has no answers to keep, and semi-supervised is off by default
    (True, 1.0, "learned from without labels"),
])
def test_what_the_other_images_are_for_follows_the_model(widget, qtbot, specs, new_head, semi, said):
    """A trained model keeps its answers on the other open images; a new model for new classes has
    none: it learns from them only with the mean teacher on (an expert setting), and the box and
    the status line say which."""
    w = widget
    w.viewer.add_image(np.full((32, 32), 7, np.uint8), name="unlabelled neighbour")
    if new_head:
        w.session.info.provenance = {"head_reinitialised": {"reason": "new classes"}}
    if semi:
        w.finetune_panel.overrides["semi_weight"] = semi
    w.finetune_panel.show_training_set()
    box = w.finetune_panel.keep_others
    assert box.enabled is (said is not None)
    assert box.text.startswith({"kept as they are": "Keep", "learned from without labels": "Learn",
                                None: "Other open images: not used"}[said])
    spec = _start(w, qtbot, specs)
    status = w.finetune_panel.status.text()
    if said is None:
        assert not spec.unlabelled and "other open image" not in status
        assert load_settings().finetune[KEEP_OTHERS] is True  # the user's choice stays for trained models
    else:
        assert len(spec.unlabelled) == 1 and f"1 other open image {said}" in status


def test_a_new_model_gets_more_steps_proposed_and_the_users_steps_come_back(widget, qtbot, specs):
    """A new output layer learns from nothing (docs/training.md: the few-shot runs trained ~200 steps);
    a trained model is corrected in the tab's 60. The proposal is not saved as the user's choice."""
    from napari_csunet.loop.finetune_job import NEW_MODEL_STEPS

    w = widget
    panel, info = w.finetune_panel, w.session.info
    trained = dict(info.provenance or {})
    panel.form.steps.value = 40  # the user's choice for corrections
    info.provenance = {"head_reinitialised": {"reason": "new classes"}}
    w.session.changed.emit()
    assert panel.form.steps.value == NEW_MODEL_STEPS and "new model" in panel.status.text()
    assert _start(w, qtbot, specs).steps == NEW_MODEL_STEPS
    assert load_settings().finetune["steps"] == 40
    info.provenance = trained  # e.g. the fine-tuned model, or a starter, loaded
    w.session.changed.emit()
    assert panel.form.steps.value == 40
