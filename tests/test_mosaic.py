"""Larger than memory: automatic tiles, lazy array-likes in, chunked (OME-)Zarr out."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from test_inference import NeighbourNet, assert_matches, pixel_segmenter, untiled_probs

from napari_csunet.engine.lazy import is_lazy_input, lazy_stats, open_lazy
from napari_csunet.engine.memory_plan import Budget
from napari_csunet.engine.mosaic import class_counts, segment_mosaic
from napari_csunet.engine.tiling import CONTEXT_PX, TileLayout, choose_tile


@pytest.mark.parametrize(("shape", "area", "expected"), [
    ((2048, 2048), 2048**2, (2048, 2048)),  # fits: one tile, no seam at all
    ((1000, 1000), 2048**2, (1024, 1024)),
    ((40, 3000), 2048**2, (256, 3072)),
    ((4096, 4096), 2048**2, (768, 4096)),  # 6 tiles, 1.125x the pixels (square 2048s: 9 tiles, 2.25x)
])
def test_choose_tile_takes_the_least_work(shape, area, expected):
    assert choose_tile(shape, 256, CONTEXT_PX, area) == expected


def test_choose_tile_keeps_the_band_within_its_bytes():
    th, tw = choose_tile((32768, 32768), 256, 64, 2048**2, row_bytes=12 * 32768, max_band_bytes=384 * 2**20)
    assert th * 12 * 32768 <= 384 * 2**20 and th * tw <= 2048**2
    lay = TileLayout.plan((32768, 32768), (th, tw), None, 256, 64)
    assert lay.num_tiles * th * tw / 32768**2 < 1.15


@pytest.mark.parametrize(("device", "bpp", "tile", "batch"), [
    ("cpu", 500.0, 512, 4),  # a CPU batches at most 1 Mpx
    ("cuda", 500.0, 512, 32),
    ("cuda", 5e5, 256, 1),  # not even one 512^2 tile fits: the smallest tile, one at a time
])
def test_budget_sizes_the_tile_and_batch_to_memory(device, bpp, tile, batch):
    budget = Budget(device, 8 * 2**30, bpp, 256, 3)
    assert budget.plan((512, 512), 64) == ((tile, tile), batch)
    assert budget.plan((512, 512), 64, tile=256, batch=3) == ((256, 256), 3)


@pytest.mark.parametrize("shape", [(300, 700), (1100, 900), (2, 3000)])
def test_default_tiles_stay_seamless(shape):
    """Tile and batch chosen by the engine (here under a tiny budget, so there are many tiles)."""
    image = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    seg = pixel_segmenter(net=NeighbourNet)
    seg._budgets[False] = Budget("cpu", 4 * 2**20, 10.0, 256, 3)
    layout, _ = seg.plan(shape)
    assert shape[0] < 256 or layout.num_tiles > 1
    assert_matches(seg.predict(image, want_probs=True), untiled_probs(seg, image))


@pytest.mark.parametrize("kind", ["zarr", "ome-zarr", "tiff", "numpy"])
def test_predict_to_a_zarr_equals_predict(tmp_path, kind):
    image = np.random.default_rng(1).integers(0, 4000, (700, 900)).astype(np.uint16)
    if kind == "zarr":
        arr = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(256, 256), dtype="uint16")
        arr[:] = image
    elif kind == "ome-zarr":
        group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w", zarr_format=2)
        group.attrs["multiscales"] = [{"version": "0.4", "axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]
        group.create_array("0", shape=(1, *image.shape), chunks=(1, 256, 256), dtype="uint16")[:] = image[None]
    elif kind == "tiff":
        tifffile.imwrite(tmp_path / "in.tif", image, tile=(256, 256))
    source = image if kind == "numpy" else open_lazy(tmp_path / ("in.tif" if kind == "tiff" else "in.zarr"))[0]
    seg = pixel_segmenter(net=NeighbourNet, tile=256, batch_size=2)
    expected = seg.predict(image, want_probs=True)
    summary = segment_mosaic(seg, source, tmp_path / "out.zarr", probs=True)
    labels = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    probs = zarr.open_array(str(tmp_path / "out_probs.zarr"), mode="r")
    np.testing.assert_array_equal(labels[:], expected.labels)
    np.testing.assert_array_equal(probs[:], expected.probs)
    assert labels.chunks == (1024, 1024) and labels.attrs["class_names"] == ["c0", "c1", "c2"]
    counts = np.bincount(expected.labels.ravel(), minlength=4)[1:]
    assert summary["area_fractions"]["c1"] == pytest.approx(counts[1] / counts.sum())


def test_ome_zarr_input_gives_ome_zarr_labels(tmp_path):
    image = np.random.default_rng(2).integers(0, 255, (300, 400)).astype(np.uint8)
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": ["y", "x"], "datasets": [{"path": "0"}, {"path": "1"}]}]
    group.create_array("0", shape=image.shape, chunks=(128, 128), dtype="uint8")[:] = image
    assert is_lazy_input(tmp_path / "in.zarr")
    seg = pixel_segmenter(tile=256, batch_size=1)
    summary = segment_mosaic(seg, tmp_path / "in.zarr", tmp_path / "labels.zarr")
    out = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")
    assert summary["input_kind"] == "ome-zarr"
    assert out.attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    colors = out.attrs["image-label"]["colors"]
    assert [c["label-value"] for c in colors] == [1, 2, 3] and len(colors[0]["rgba"]) == 4
    np.testing.assert_array_equal(out["0"][:], seg.predict(image).labels)


def test_lazy_statistics_match_the_whole_image(monkeypatch):
    from napari_csunet.engine import lazy

    image = np.random.default_rng(3).normal(100, 20, (900, 700)).astype(np.float32)
    exact = lazy_stats(image, 1, rows=128)
    assert exact == pytest.approx((float(image.mean()), float(image.std())), rel=1e-6)
    monkeypatch.setattr(lazy, "STATS_PIXELS", 30_000)
    assert lazy_stats(image, 1, rows=128) == pytest.approx(exact, rel=0.02)


def test_class_counts_read_block_by_block():
    labels = np.random.default_rng(4).integers(0, 4, (3000, 50)).astype(np.uint8)
    np.testing.assert_array_equal(class_counts(labels, 3, rows=700), np.bincount(labels.ravel(), minlength=4))
    np.testing.assert_array_equal(class_counts(labels, 3, rows=700, cols=16), np.bincount(labels.ravel(), minlength=4))


@pytest.mark.parametrize(("shape", "message"), [((2, 3, 40, 40), "not one 2D"), ((40, 40, 7), "not one 2D")])
def test_stacks_and_channels_first_are_refused_clearly(tmp_path, shape, message):
    zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=shape, dtype="uint8")
    with pytest.raises(ValueError, match=message):
        open_lazy(tmp_path / "s.zarr")


@pytest.mark.parametrize("kind", ["zarr", "big tiff"])
def test_csunet_segment_writes_chunked_zarr_labels_for_lazy_inputs(tmp_path, monkeypatch, capsys, kind):
    """A zarr folder (not a folder of images) and a TIFF over the lazy threshold go the mosaic way;
    an ordinary TIFF beside them still gets its label TIFF."""
    import json

    from napari_csunet.cli.main import main
    from napari_csunet.engine import lazy
    from napari_csunet.models import build_model, get_preset
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    config = get_preset("csunet-tiny").config
    model = save_model_file(tmp_path / "m.safetensors", build_model(config), ModelInfo(config, ["a", "b", "c"]))
    image = np.random.default_rng(5).integers(0, 255, (300, 520)).astype(np.uint8)
    if kind == "zarr":
        zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=image.shape, chunks=(256, 256), dtype="uint8")[:] = image
        inputs = [str(tmp_path / "big.zarr")]
    else:
        monkeypatch.setattr(lazy, "LAZY_TIFF_PIXELS", 100_000)
        tifffile.imwrite(tmp_path / "big.tif", image, tile=(256, 256))
        inputs = [str(tmp_path / "big.tif")]
    tifffile.imwrite(tmp_path / "small.tif", image[:100, :100])
    rc = main(["segment", *inputs, str(tmp_path / "small.tif"), "--model", str(model), "--out", str(tmp_path / "out"),
               "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["failed"] == 0
    big, small = result["images"]
    assert big["labels"].endswith("big_labels.zarr") and small["labels"].endswith("small_labels.tif")
    labels = zarr.open_array(big["labels"], mode="r")
    assert labels.shape == image.shape and labels[:].min() >= 1
    assert sum(big["area_fractions"].values()) == pytest.approx(1.0)
