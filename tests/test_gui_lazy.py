"""The Segment panel on lazy images: dask and multiscale layers into zarr-backed Labels layers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

import dask.array as da  # noqa: E402
import zarr  # noqa: E402
from napari.layers import Labels  # noqa: E402

from napari_csunet._qt import segment_panel  # noqa: E402

IMAGE = "superalloy spot2_0d_0"


@pytest.mark.parametrize("multiscale", [False, True])
def test_a_lazy_layer_is_segmented_into_zarr_without_loading_it(widget, qtbot, monkeypatch, multiscale):
    """Above LAZY_PIXELS (lowered here) a dask layer goes through ``predict_to`` (tiles read one
    by one), never the in-memory ``predict``, into a zarr-backed Labels layer equal to the
    in-memory prediction."""
    monkeypatch.setattr(segment_panel, "LAZY_PIXELS", 10_000)
    w = widget
    seg = w.session.segmenter
    pixels = np.asarray(w.viewer.layers[IMAGE].data)[:512, :512]
    monkeypatch.setattr(seg, "tile", 256)  # 3 x 3 tiles, so reads of single tiles can be seen
    lazy = da.from_array(pixels, chunks=(128, 128))
    read_shapes: list[tuple] = []
    real_predict_to = seg.predict_to

    def spy(source, *args, **kw):
        class Reads:  # records every block the engine reads
            shape, dtype, ndim = source.shape, source.dtype, source.ndim

            def __getitem__(self, key):
                block = np.asarray(source[key])
                read_shapes.append(block.shape)
                return block

        return real_predict_to(Reads(), *args, **kw)

    monkeypatch.setattr(seg, "predict_to", spy)
    monkeypatch.setattr(seg, "predict", lambda *a, **k: pytest.fail("the lazy image was loaded"))
    data = [lazy, lazy[::2, ::2]] if multiscale else lazy
    layer = w.viewer.add_image(data, name="mosaic", multiscale=multiscale)
    assert w.segment_panel.segment([layer]) is not None, w.segment_panel.status.text()
    qtbot.waitUntil(lambda: not w.segment_panel.running, timeout=120_000)
    labels = w.viewer.layers["mosaic labels"]
    assert isinstance(labels, Labels) and isinstance(labels.data, zarr.Array), w.segment_panel.status.text()
    monkeypatch.undo()
    seg.tile = 256
    expected = seg.predict(pixels).labels
    np.testing.assert_array_equal(labels.data[:], expected)
    assert "labels in" in w.segment_panel.status.text()
    assert read_shapes[0] == pixels.shape  # the statistics, band by band (one band here)
    assert read_shapes[1:] == [(256, 256)] * 9
    counts = np.bincount(expected.ravel(), minlength=4)[1:]
    assert f"{counts.max() / counts.sum():.1%}" in w.segment_panel.status.text()
