from __future__ import annotations

import numpy as np
import pytest

from napari_csunet.measure.metrics import confusion_matrix, segmentation_metrics


def test_perfect_prediction() -> None:
    t = np.array([[1, 2], [3, 3]])
    m = segmentation_metrics(t, t, ["a", "b", "c"])
    assert m["miou"] == 1 and m["iou_paper"] == 1 and m["pixel_accuracy"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_iou_is_accuracy_over_two_minus_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 4, size=(64, 64))
    p = np.where(rng.random((64, 64)) < 0.8, t, rng.integers(1, 4, size=(64, 64)))
    m = segmentation_metrics(p, t, ["a", "b", "c"])
    acc = m["pixel_accuracy"]
    assert m["iou_paper"] == pytest.approx(acc / (2 - acc))
    # per-class IoU by hand
    for i, name in enumerate("abc", start=1):
        inter = np.sum((p == i) & (t == i))
        union = np.sum((p == i) | (t == i))
        assert m["iou_per_class"][name] == pytest.approx(inter / union)


def test_unlabelled_pixels_are_ignored() -> None:
    t = np.array([0, 0, 1, 2])
    p = np.array([2, 2, 1, 2])
    m = segmentation_metrics(p, t, ["a", "b"])
    assert m["pixels"] == 2 and m["miou"] == 1


def test_labels_beyond_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="only 2 classes"):
        confusion_matrix(np.array([1]), np.array([3]), 2)
