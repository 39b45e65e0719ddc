"""The HTML report and its plots: self-contained, escaped, log-binned."""

from __future__ import annotations

import numpy as np
import pytest

from napari_csunet.images.databar import DataBar
from napari_csunet.images.pixelsize import PixelSize
from napari_csunet.measure.measurements import measure
from napari_csunet.measure.plots import fractions_png, log_bins, size_histogram_png
from napari_csunet.measure.report import image_entry, report_html

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("values", "first", "last", "step"), [
    ([0.03, 0.4, 7.0], 0.0237, 7.5, 1 / 8), ([5.0], 4.21, 5.62, 1 / 8),
    ([], 1.0, 10.0, 1.0), ([0.0, -1.0, np.nan], 1.0, 10.0, 1.0),  # nothing positive: one decade to draw on
])
def test_log_bins_cover_the_values(values, first, last, step):
    edges = log_bins(np.array(values))
    assert edges[0] == pytest.approx(first, rel=0.01) and edges[-1] == pytest.approx(last, rel=0.01)
    assert np.allclose(np.diff(np.log10(edges)), step)


def test_plots_are_png_even_without_particles():
    rows = [{"class": "a", "area_fraction": 0.7, "fraction_ci_low": 0.6, "fraction_ci_high": 0.8},
            {"class": "b", "area_fraction": 0.3, "fraction_ci_low": None, "fraction_ci_high": None}]
    assert fractions_png(rows, {"a": "#ff0000"}).startswith(PNG)
    assert size_histogram_png({"a": np.zeros(0)}, {}, dark=True).startswith(PNG)


def test_report_is_self_contained_and_escaped():
    labels = np.ones((64, 64), np.uint8)
    labels[10:20, 10:20] = 2
    names = ["matrix", "<script>alert(1)</script>"]
    m = measure(labels, names, PixelSize(0.1, 0.1, "test"), DataBar("bottom", 4))
    entry = image_entry("a&b.tif", m, PixelSize(0.1, 0.1, "test"), DataBar("bottom", 4), np.zeros((64, 64, 3), np.uint8))
    page = report_html([entry], [], {"model": "m"}, dict(zip(names, ["#808080", "#ff0000"], strict=True)))
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b.tif" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing to fetch: every picture is inline
    assert page.count("data:image/png;base64,") == 3 and "4 rows at the bottom, left out" in page
    assert "mean ⌀ (µm)" in page and "1.13" in page  # 10 x 10 px at 0.1 µm: ⌀ = sqrt(4 / pi) µm
