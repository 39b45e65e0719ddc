"""The Inspect tab measures in µm from the file's pixel size, leaves the SEM data bar out, plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from napari.layers import Shapes  # noqa: E402

from napari_csunet._qt.calibration import LINE_LAYER  # noqa: E402
from napari_csunet.images.pixelsize import recall_calibration  # noqa: E402

FEI = "[User]\r\nDate=11/27/2026\r\n[Scan]\r\nPixelWidth=5e-09\r\nPixelHeight=5e-09\r\n"


@pytest.fixture
def sem_widget(docked, qtbot, tmp_path, sem_image):
    """The docked plugin, a random csunet-tiny model loaded, an FEI SEM file with a data bar open."""
    from fabricated import tiny_model_file

    path = tmp_path / "sem.tif"
    tifffile.imwrite(path, sem_image[300:], extratags=[(34682, "s", 0, FEI, True)])
    w, viewer = docked, docked.viewer
    w.session.load_file(tiny_model_file(tmp_path))
    qtbot.waitUntil(lambda: w.session.segmenter is not None and not w.session.busy, timeout=60_000)
    viewer.open(str(path), plugin="napari")
    return w, path


def test_inspect_in_micrometres_without_the_data_bar(sem_widget, qtbot, tmp_path):
    w, path = sem_widget
    image = w.viewer.layers["sem"]
    box = w.inspect_panel.calibration
    box.image.choose("sem")
    assert math.isclose(box.size.value(), 0.005) and "FEI" in box.source.text()
    assert tuple(image.scale) == pytest.approx((0.005, 0.005)) and str(image.units[-1]) == "micrometer"
    assert box.use_bar.isChecked() and box.bar_rows.value() == 60 and box.bar_side.currentText() == "bottom"
    assert isinstance(w.viewer.layers["sem data bar (not analysed)"], Shapes)

    assert w.segment_panel.segment([image]) is not None
    qtbot.waitUntil(lambda: not w.segment_panel.running, timeout=120_000)
    labels = w.viewer.layers["sem labels"]
    assert (labels.data[-60:] == 0).all() and (labels.data[:-60] > 0).all()
    assert tuple(labels.scale) == pytest.approx((0.005, 0.005))

    panel = w.inspect_panel
    panel.labels.choose("sem labels")
    assert panel.compute() is not None
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    rows = panel.rows
    assert rows[0]["analysed_px"] == 212 * 512 and rows[0]["databar_rows"] == 60
    assert math.isclose(sum(r["area_fraction"] for r in rows), 1.0) and rows[0]["pixel_size_um"] == 0.005
    assert rows[0]["role"] == "matrix" and "by its name" in rows[0]["role_reason"]  # the class named "matrix"
    assert {r["role"] for r in rows[1:]} <= {"particles", "continuous"}  # random weights: blobs or a network
    assert "µm" in panel.table.horizontalHeaderItem(5).text()
    assert not panel.fractions_plot.pixmap().isNull() and panel.sizes_plot.pixmap().width() > 200
    assert "data bar (60 rows) not analysed" in panel.status.text()
    assert "mean_eq_diameter_um" in panel.csv_text().splitlines()[0]

    box.use_bar.setChecked(False)  # the user turns the bar off: its rows count again
    assert w.session.records.for_image(image).databar is None
    panel.compute()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    assert panel.rows[0]["analysed_px"] == 212 * 512  # still 0 in these labels: not analysed
    assert not w.viewer.layers["sem data bar (not analysed)"].visible


def test_scale_bar_line_calibration_is_remembered(sem_widget):
    w, path = sem_widget
    box = w.inspect_panel.calibration
    box.image.choose("sem")
    assert box.calibrate_from_line() is None and LINE_LAYER in w.viewer.layers  # first: draw a line
    lines = w.viewer.layers[LINE_LAYER]
    lines.add_lines(np.array([[20.0, 10.0], [20.0, 210.0]]))  # 200 px (the layer's data is in pixels)
    box.bar_length.setValue(2.0)
    box.bar_unit.setCurrentText("µm")
    size = box.calibrate_from_line()
    assert size is not None and math.isclose(size.x_um, 0.01, rel_tol=1e-6)
    assert recall_calibration(path) == size and math.isclose(box.size.value(), 0.01)
    assert tuple(w.viewer.layers["sem"].scale) == pytest.approx((0.01, 0.01))


def test_disagreement_pickers_start_on_two_layers(sem_widget):
    w, _ = sem_widget
    w.viewer.add_labels(np.ones((8, 8), np.uint8), name="a")
    w.viewer.add_labels(np.ones((8, 8), np.uint8), name="b")
    panel = w.inspect_panel
    assert panel.layer_a.current_choice != panel.layer_b.current_choice
    assert panel.min_area.value() == 9


def test_reopened_labels_measure_in_their_own_scale(sem_widget, qtbot):
    w, _ = sem_widget
    data = np.ones((40, 40), np.uint8)
    data[10:20, 10:20] = 2
    w.viewer.add_labels(data, name="reopened", scale=(0.5, 0.5), units=("um", "um"))
    panel = w.inspect_panel
    panel.labels.choose("reopened")
    panel.compute()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    assert panel.rows[1]["pixel_size_um"] == 0.5 and panel.rows[1]["mean_area_um2"] == pytest.approx(25.0)


def test_data_bar_of_a_pyramid_is_found_on_a_small_level(sem_image):
    from napari.layers import Image

    from napari_csunet._qt.calibration import databar_of
    from napari_csunet._qt.records import ImageRecord

    big = np.kron(sem_image, np.ones((10, 10), np.uint8))  # 5720 rows: level 0 is never loaded for this
    layer = Image([big, big[::4, ::4], big[::16, ::16]], multiscale=True)
    assert databar_of(ImageRecord(layer)).to_dict() == {"side": "bottom", "rows": 600}
