"""What a fine-tuned model changes against the model before it (loop.compare): per image, the
pixels whose class changes (in their new class) and per class 1 - IoU of the two answers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fabricated import micrograph, tiny_model_file

from napari_csunet.engine.predictor import Cancelled
from napari_csunet.images.databar import DataBar
from napari_csunet.loop.compare import changes_text, compare_models, model_change
from napari_csunet.measure.metrics import change_from_confusion, label_change

NAMES = ["matrix", "secondary", "tertiary"]


@pytest.mark.parametrize("flip, share, per_class", [
    (0, 0.0, {0: 0.0, 1: 0.0}),  # nothing changes
    (25, 0.25, {0: 0.5, 1: 0.0, 2: 1.0}),  # a quarter of class 1 becomes class 3: class 3 is all new
    (50, 0.5, {0: 1.0, 1: 0.0, 2: 1.0}),  # all of class 1 becomes class 3
])
def test_label_change_counts_the_share_and_each_class(flip, share, per_class):
    old = np.ones((10, 10), np.uint8)
    old[5:] = 2
    new = old.copy()
    new.ravel()[:flip] = 3
    got_share, got = label_change(old, new, 3)
    assert got_share == pytest.approx(share)
    assert got == pytest.approx(per_class)


def test_change_from_an_empty_confusion_is_nothing():
    assert change_from_confusion(np.zeros((3, 3))) == (0.0, {})


def test_model_change_marks_changed_pixels_in_their_new_class():
    old = np.full((8, 8), 1, np.uint8)
    new = old.copy()
    new[:2, :4] = 3
    change = model_change("img", old, new, NAMES)
    assert change.share == pytest.approx(8 / 64)
    np.testing.assert_array_equal(change.changed, np.where(new != old, new, 0))
    assert set(change.class_changed) == {"matrix", "tertiary"}  # secondary is in neither answer
    assert changes_text([change]) == "img: 12.5% of the pixels change (tertiary 100%, matrix 12%)"
    assert changes_text([model_change("same", old, old, NAMES)]) == "same: nothing changes"


def test_model_change_refuses_answers_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        model_change("img", np.ones((4, 4), np.uint8), np.ones((4, 5), np.uint8), NAMES)


def _models(tmp_path):
    (tmp_path / "old").mkdir()
    old = tiny_model_file(tmp_path / "old")
    same = tmp_path / "same.safetensors"
    shutil.copy(old, same)
    (tmp_path / "other").mkdir()
    return old, same, tiny_model_file(tmp_path / "other")  # other random weights: other answers


def _image() -> np.ndarray:
    labels = np.ones((256, 256), np.uint8)
    labels[64:128] = 2
    return micrograph(labels, 3, seed=0)


def test_compare_models_segments_with_both_files(tmp_path):
    old, same, other = _models(tmp_path)
    image = _image()
    from napari_csunet.engine.predictor import Segmenter

    unchanged = compare_models(Segmenter.from_file(old, device="cpu"), same, [("a", image, None)], {"device": "cpu"})
    assert unchanged.class_names == NAMES and len(unchanged.class_colors) == 3
    assert unchanged.changes[0].share == 0 and not unchanged.changes[0].changed.any()
    changed = compare_models(old, other, [("a", image, None), ("b", image[::-1].copy(), None)], {"device": "cpu"})
    assert [c.name for c in changed.changes] == ["a", "b"]
    first = changed.changes[0]
    assert first.changed.shape == image.shape and first.share == pytest.approx(np.count_nonzero(first.changed) / image.size)


def test_the_data_bar_never_reaches_the_models_and_never_changes(tmp_path):
    old, _, other = _models(tmp_path)
    image = _image()
    image[-40:] = 0  # an SEM data bar: black with white text
    image[-30:-20, 10:200] = 255
    bar = DataBar("bottom", 40)
    change = compare_models(old, other, [("a", image, bar)], {"device": "cpu"}).changes[0]
    assert not change.changed[-40:].any()
    analysed = change.changed[:-40]
    assert change.share == pytest.approx(np.count_nonzero(analysed) / analysed.size)


def test_a_comparison_stops_when_cancelled(tmp_path):
    old, _, other = _models(tmp_path)
    with pytest.raises(Cancelled):
        compare_models(old, other, [("a", _image(), None)], {"device": "cpu"}, cancel=lambda: True)


def test_compare_models_refuses_models_of_other_classes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    three, four = tiny_model_file(tmp_path / "a"), tiny_model_file(tmp_path / "b", num_classes=4)
    with pytest.raises(ValueError, match="different classes"):
        compare_models(three, four, [("a", np.zeros((64, 64), np.uint8), None)], {"device": "cpu"})
