"""Measurements in physical units on hand-made label images whose true numbers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk

from napari_csunet.images.databar import DataBar
from napari_csunet.images.pixelsize import PixelSize
from napari_csunet.measure.measurements import (
    FIELDS,
    astm_grain_size,
    between_images_ci,
    block_bootstrap_ci,
    default_matrix,
    folder_summary,
    mean_intercept,
    measure,
    particle_table,
    phase_shape,
    sized_particles,
)

NAMES = ["matrix", "precipitate", "pore"]
UM = PixelSize(0.5, 0.5, "test")


def discs() -> np.ndarray:
    """200 x 200 matrix with nine interior discs of radius 8 (class 2), one cut by the edge, speckle (3)."""
    labels = np.ones((200, 200), np.uint8)
    for cy in (40, 100, 160):
        for cx in (40, 100, 160):
            labels[disk((cy, cx), 8)] = 2
    labels[disk((0, 100), 8, shape=labels.shape)] = 2  # half a disc on the top edge
    labels[70, 70] = labels[130, 130] = 3  # single-pixel speckle: below any sensible minimum size
    return labels


def test_particles_sizes_and_units():
    m = measure(discs(), NAMES, UM)
    matrix, prec, pore = m.rows
    assert [tuple(r) for r in m.rows] == [FIELDS] * 3
    assert matrix["role"] == "matrix" and matrix["particles"] is None
    assert prec["particles"] == 10 and pore["particles"] == 0  # speckle below 9 px is not a particle
    area = float(disk((0, 0), 8)[0].size)
    assert prec["mean_area_px"] == area  # the edge-cut half disc is not in the size distribution
    assert math.isclose(prec["mean_eq_diameter_px"], math.sqrt(4 * area / math.pi))
    assert math.isclose(prec["mean_area_um2"], prec["mean_area_px"] * 0.25)
    assert math.isclose(prec["mean_eq_diameter_um"], prec["mean_eq_diameter_px"] * 0.5)
    assert math.isclose(prec["median_eq_diameter_um"], prec["median_eq_diameter_px"] * 0.5)
    assert 15 < prec["mean_feret_max_um"] / 0.5 < 18 and 0.95 < prec["mean_aspect_ratio"] < 1.1
    area_mm2 = 200 * 200 * 0.25e-6
    assert math.isclose(prec["density_per_mm2"], 9.5 / area_mm2)  # the edge particle counts half
    assert math.isclose(sum(r["area_fraction"] for r in m.rows), 1.0)
    assert prec["pixel_size_um"] == 0.5 and prec["analysed_px"] == 200 * 200


def test_particle_table_columns_are_px_times_pixel_size():
    table = particle_table(discs() == 2, pixel_size=UM)
    assert np.allclose(table["area_um2"], table["area_px"] * 0.25)
    assert np.allclose(table["eq_diameter_um"], table["eq_diameter_px"] * 0.5)
    assert np.allclose(table["feret_max_um"], table["feret_max_px"] * 0.5)
    assert table["touches_edge"].sum() == 1
    rows = measure(discs(), NAMES, UM).particle_rows()
    assert len(rows) == 10 and {r["class"] for r in rows} == {"precipitate"}


def test_without_pixel_size_only_px_numbers():
    prec = measure(discs(), NAMES).rows[1]
    assert prec["mean_eq_diameter_px"] > 0 and prec["mean_eq_diameter_um"] is None
    assert prec["density_per_mm2"] is None and prec["pixel_size_source"] == "none (px only)"


def test_the_data_bar_is_out_of_every_number():
    labels = discs()
    labels[180:] = 3  # what a model might call the bar: all "pore"
    m = measure(labels, NAMES, UM, databar=DataBar("bottom", 20))
    assert m.rows[2]["pixels"] == 2 and m.rows[0]["analysed_px"] == 180 * 200
    assert m.rows[2]["area_fraction"] < 1e-4


def test_named_matrix_and_bad_inputs():
    m = measure(discs(), NAMES, UM, matrix="precipitate")
    assert m.rows[1]["role"] == "matrix" and "as chosen" in m.rows[1]["role_reason"]
    assert m.rows[0]["role"] == "continuous" and m.rows[0]["particles"] is None  # one region across the image
    with pytest.raises(ValueError, match="matrix class"):
        measure(discs(), NAMES, matrix="gamma")
    with pytest.raises(ValueError, match="classes"):
        measure(discs() + 5, NAMES)


def test_block_bootstrap_interval_holds_the_fraction_and_shrinks_with_more_tiles():
    rng = np.random.default_rng(1)
    labels = np.where(rng.random((400, 400)) < 0.3, 2, 1).astype(np.uint8)
    low, high = block_bootstrap_ci(labels, 2)
    fraction = (labels == 2).mean()
    assert low[1] < fraction < high[1] and high[1] - low[1] < 0.02
    blobs = np.ones((400, 400), np.uint8)
    blobs[:, :120] = 2  # a structure that is not uniform: the interval is wide
    low2, high2 = block_bootstrap_ci(blobs, 2)
    assert high2[1] - low2[1] > 0.2


def test_between_images_interval_is_student_t():
    mean, low, high = between_images_ci(np.array([[0.2, 0.8], [0.4, 0.6]]))
    assert np.allclose(mean, [0.3, 0.7])
    assert math.isclose(high[0] - mean[0], 12.7062047 * 0.1, rel_tol=1e-6)
    _, low1, _ = between_images_ci(np.array([[0.2, 0.8]]))
    assert np.isnan(low1).all()


def test_mean_intercept_and_astm_grain_size():
    board = ((np.arange(64)[:, None] // 8 + np.arange(64)[None, :] // 8) % 2).astype(bool)
    padded = np.pad(board, 8)  # every chord of the squares is interior
    assert math.isclose(mean_intercept(padded), 8.0)
    assert math.isclose(astm_grain_size(5.0), 12.0, abs_tol=1e-3)  # E112 table: G 12 <-> 5.0 µm
    assert math.isclose(astm_grain_size(320.0), 0.0, abs_tol=1e-3)
    assert mean_intercept(np.zeros((5, 5), bool)) is None and astm_grain_size(None) is None
    row = measure(padded.astype(np.uint8) + 1, ["bulk", "grains"], UM, matrix="bulk").rows[1]
    assert math.isclose(row["mean_intercept_um"], 4.0) and math.isclose(row["astm_grain_size"], astm_grain_size(4.0))


def test_folder_summary():
    a = measure(discs(), NAMES, UM).rows
    b = measure(np.ones((200, 200), np.uint8), NAMES, UM).rows
    summary = folder_summary([a, b])
    assert summary[0]["images"] == 2
    assert math.isclose(summary[1]["area_fraction_mean"], a[1]["area_fraction"] / 2)
    assert summary[1]["area_fraction_ci_low"] < summary[1]["area_fraction_mean"] < summary[1]["area_fraction_ci_high"]
    assert summary[1]["particles"] == 10 and math.isclose(summary[1]["mean_eq_diameter_um"], a[1]["mean_eq_diameter_um"])


@pytest.mark.parametrize(("names", "counts", "expected"), [
    (["gamma", "gamma prime"], [40, 60], 1),  # no matrix-like name: the largest class
    (["matrix", "secondary", "tertiary"], [45, 52, 3], 0),  # named: even where it is not the largest
    (["oxide", "Background", "crack"], [50, 40, 10], 1),
])
def test_default_matrix(names, counts, expected):
    assert default_matrix(names, np.array(counts)) == expected


def layer_and_discs() -> np.ndarray:
    """A 200 x 200 image: a coating layer (2) across it with three cracks, discs (3) above."""
    labels = np.ones((200, 200), np.uint8)
    labels[120:160] = 2
    labels[130:160, [50, 100, 150]] = 1  # cracks from below, not through
    for cx in (40, 100, 160):
        labels[disk((60, cx), 8)] = 3
    labels[disk((0, 20), 6, shape=labels.shape)] = 3  # cut by the edge
    return labels


def test_a_continuous_phase_gets_no_particle_statistics():
    m = measure(layer_and_discs(), ["bulk", "coating", "pores"], UM)
    bulk, coating, pores = m.rows
    assert bulk["role"] == "matrix" and "by its name" in bulk["role_reason"]
    assert coating["role"] == "continuous" and coating["particles"] is None and coating["mean_eq_diameter_px"] is None
    assert "one region across" in coating["role_reason"] and coating["connectivity"] > 0.5
    assert coating["mean_intercept_um"] is not None and "coating" not in m.particles
    assert pores["role"] == "particles" and (pores["particles"], pores["particles_sized"]) == (4, 3)


@pytest.mark.parametrize(("mask", "continuous"), [
    (layer_and_discs() == 2, True),  # a layer: one region across the image
    (layer_and_discs() == 3, False),  # discs
    (discs() == 1, True),  # a matrix
    (np.pad(np.ones((60, 60), bool), 70), False),  # one big particle in the middle: not across the image
])
def test_phase_shape(mask, continuous):
    assert phase_shape(mask).continuous is continuous


def test_the_count_shown_is_the_count_of_the_size_distribution():
    m = measure(discs(), NAMES, UM)
    for row in m.rows:
        table = m.particles.get(row["class"])
        if table is not None:
            assert row["particles_sized"] == int(sized_particles(table).sum()) == len(
                m.distribution("eq_diameter_um")[row["class"]])
    assert m.rows[1]["particles_sized"] == 9 and m.rows[1]["particles"] == 10
