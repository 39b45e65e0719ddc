"""Area fractions and particle statistics on hand-made label images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_csunet import analysis, metrics
from napari_csunet.analysis import STAT_FIELDS, area_fractions, class_statistics, particle_sizes

NAMES = ("matrix", "gamma_prime", "carbide")


def hand_made() -> np.ndarray:
    """10 x 10: matrix, two gamma' squares (2x2 and 3x3), a diagonal carbide pair (one particle
    with 8-connectivity) and a lone carbide pixel; two unlabelled pixels."""
    lab = np.ones((10, 10), np.uint8)
    lab[1:3, 1:3] = 2
    lab[5:8, 5:8] = 2
    lab[0, 8] = lab[1, 9] = 3
    lab[9, 0] = 3
    lab[9, 8:10] = 0
    return lab


def test_area_fractions_ignore_unlabelled():
    fr = area_fractions(hand_made(), 3)
    np.testing.assert_allclose(fr, np.array([82, 13, 3]) / 98)
    assert area_fractions(np.zeros((4, 4), np.uint8), 3).tolist() == [0, 0, 0]


def test_class_statistics_on_a_hand_made_image():
    rows = class_statistics(hand_made(), NAMES)
    assert [tuple(r) for r in rows] == [STAT_FIELDS] * 3
    matrix, gamma, carbide = rows
    assert (matrix["pixels"], matrix["particles"]) == (82, 1)
    assert (gamma["label"], gamma["pixels"], gamma["particles"]) == (2, 13, 2)
    assert gamma["mean_area_px"] == pytest.approx(6.5)
    d4, d9 = math.sqrt(4 * 4 / math.pi), math.sqrt(4 * 9 / math.pi)
    assert gamma["mean_diameter_px"] == pytest.approx((d4 + d9) / 2)
    assert gamma["median_diameter_px"] == pytest.approx((d4 + d9) / 2)
    assert carbide["particles"] == 2  # the diagonal pair is one particle
    assert carbide["area_fraction"] == pytest.approx(3 / 98)


def test_min_area_and_absent_classes():
    rows = class_statistics(hand_made(), NAMES, min_area=3)
    assert rows[2]["particles"] == 0 and rows[2]["mean_diameter_px"] is None
    empty = class_statistics(np.ones((5, 5), np.uint8), NAMES)
    assert empty[1] == {"class": "gamma_prime", "label": 2, "pixels": 0, "area_fraction": 0.0, "particles": 0,
                        "mean_area_px": None, "mean_diameter_px": None, "median_diameter_px": None}


def test_stacks_are_measured_slice_by_slice():
    lab = hand_made()
    stack = np.stack([lab, lab])
    areas, diameters = particle_sizes(stack == 2)
    assert sorted(areas.tolist()) == [4, 4, 9, 9]  # not merged across slices
    assert class_statistics(stack, NAMES)[1]["particles"] == 4


@pytest.mark.parametrize("labels,match", [
    (np.full((4, 4), 4, np.uint8), "0..3"),
    (np.zeros((4, 4), np.float32), "integer"),
    (np.zeros(4, np.uint8), "2D or 3D"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        class_statistics(labels, NAMES)


def test_metrics_are_reexported_not_copied():
    assert analysis.segmentation_metrics is metrics.segmentation_metrics
    assert analysis.confusion_matrix is metrics.confusion_matrix
    assert analysis.metrics_from_confusion is metrics.metrics_from_confusion


def test_particle_sizes_match_regionprops():
    from skimage.measure import label, regionprops_table

    mask = np.random.default_rng(0).random((120, 90)) > 0.6
    table = regionprops_table(label(mask, connectivity=2), properties=("area", "equivalent_diameter_area"))
    areas, diameters = particle_sizes(mask)
    np.testing.assert_allclose(areas, table["area"])
    np.testing.assert_allclose(diameters, table["equivalent_diameter_area"])
