"""Tiled inference: tiled == untiled for a translation-equivariant model, inputs, outputs, control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_csunet.engine.predictor import (
    Cancelled,
    InferenceMemoryError,
    Prediction,
    Segmenter,
    pick_device,
    split_planes,
)
from napari_csunet.engine.tiling import TileLayout, tile_starts
from napari_csunet.images.reading import ImageError, image_stats, standardize, to_model_channels
from napari_csunet.models.config import ModelConfig
from napari_csunet.models.modelfile import ModelInfo


class PixelNet(torch.nn.Module):
    """A 1x1 convolution: perfectly translation-equivariant, with CS-UNet's size rule."""

    size_multiple = 256

    def __init__(self, in_chans: int = 1, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(in_chans, k, 1)
        with torch.no_grad():
            self.conv.weight.mul_(4.0)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 256 == 0 and x.shape[-1] % 256 == 0, x.shape
        self.calls.append(tuple(x.shape))
        return self.conv(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a whole image of any size (no tiles, no size rule)."""
        return self.conv(x)


class NeighbourNet(PixelNet):
    """A 3x3 convolution with reflect padding: each pixel sees its neighbours, so an unblended tile
    seam, a blending window that does not fade tile edges, or padding in the wrong place changes
    the result, where the 1x1 PixelNet cannot tell."""

    def __init__(self, in_chans: int = 1, k: int = 3, seed: int = 0) -> None:
        super().__init__(in_chans, k, seed)
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(in_chans, k, 3, padding=1, padding_mode="reflect")
        with torch.no_grad():
            self.conv.weight.mul_(4.0)


def pixel_segmenter(in_chans: int = 1, k: int = 3, normalization: dict | None = None, net: type = PixelNet,
                    **kw) -> Segmenter:
    info = ModelInfo(ModelConfig("unet", num_classes=k, in_chans=in_chans, cnn=None, swin=None),
                     [f"c{i}" for i in range(k)], normalization=normalization or {"mode": "image"})
    return Segmenter(net(in_chans, k), info, **{"device": "cpu", "amp": False, **kw})


def untiled_probs(seg: Segmenter, image: np.ndarray) -> np.ndarray:
    """The model applied to the whole (unpadded) image at once: the reference."""
    x = to_model_channels(image, seg.in_chans)
    mode = seg.info.normalization["mode"]
    stats = image_stats(x) if mode == "image" else (seg.info.normalization.get("mean", 0.0), seg.info.normalization.get("std", 1.0))
    with torch.no_grad():
        return seg.model.reference(torch.from_numpy(standardize(x, stats))[None]).softmax(1)[0].numpy()


def assert_matches(pred: Prediction, ref: np.ndarray) -> None:
    assert pred.labels.dtype == np.uint8 and pred.labels.min() >= 1
    np.testing.assert_allclose(pred.probs.astype(np.float32), ref, atol=2e-3)
    top2 = np.sort(ref, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 5e-3  # labels may differ only at near-ties
    np.testing.assert_array_equal(pred.labels[clear], ref.argmax(0)[clear] + 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 700), w=st.integers(1, 700), tile=st.sampled_from([256, 512]),
       overlap=st.floats(0.0, 0.75), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_tiled_equals_untiled(h, w, tile, overlap, batch, seed):
    image = np.random.default_rng(seed).integers(0, 256, (h, w)).astype(np.uint8)
    seg = pixel_segmenter(tile=tile, overlap=overlap, batch_size=batch)
    pred = seg.predict(image, want_probs=True)
    assert pred.labels.shape == (h, w)
    assert_matches(pred, untiled_probs(seg, image))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(2, 600), w=st.integers(2, 600), tile=st.sampled_from([256, 512]),
       overlap=st.floats(0.25, 0.75), seed=st.integers(0, 2**16))
def test_tiled_equals_untiled_for_a_3x3_receptive_field(h, w, tile, overlap, seed):
    """Tile edges see the tile's own (reflect) padding, not their true neighbours; the window must
    fade them out where tiles overlap, and the image's own padding must be a reflection."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w)).astype(np.uint8)
    seg = pixel_segmenter(net=NeighbourNet, tile=tile, overlap=overlap, batch_size=2)
    assert_matches(seg.predict(image, want_probs=True), untiled_probs(seg, image))


@pytest.mark.parametrize(("window", "pad_mode"), [("flat", "reflect"), ("ramp", "constant")])
def test_the_3x3_reference_catches_unfaded_seams_and_wrong_padding(monkeypatch, window: str, pad_mode: str) -> None:
    """The reference model is strict enough to fail a flat window or zero padding (the bugs it guards)."""
    import napari_csunet.engine.tiling as tiling

    if window == "flat":
        monkeypatch.setattr(tiling, "ramp_window", lambda size, *args, **kw: np.ones(size, np.float32))
    real_pad = np.pad
    monkeypatch.setattr(tiling.np, "pad", lambda a, widths, mode: real_pad(a, widths, mode=pad_mode))
    image = np.random.default_rng(3).integers(0, 256, (200, 700)).astype(np.uint8)  # 200 rows: padded to 256
    seg = pixel_segmenter(net=NeighbourNet, tile=256, overlap=0.25)
    with pytest.raises(AssertionError):
        assert_matches(seg.predict(image, want_probs=True), untiled_probs(seg, image))


@pytest.mark.parametrize("shape", [(40, 3000), (3000, 40), (40, 9000), (1, 1), (1, 600), (255, 257), (10, 17)])
def test_small_and_extreme_shapes(shape):
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    seg = pixel_segmenter(tile=512, overlap=0.5)
    pred = seg.predict(image, want_probs=True)
    assert pred.labels.shape == shape
    assert_matches(pred, untiled_probs(seg, image))
    assert max(c[-2] for c in seg.model.calls) <= 512  # a 40-row image runs 256-row tiles, not 512


def _catalogue() -> list:
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (70, 90))
    rgb = rng.integers(0, 256, (70, 90, 3))
    return [
        ("uint8 grey", grey.astype(np.uint8), (70, 90)),
        ("uint16 grey", (grey * 257).astype(np.uint16), (70, 90)),
        ("int32 grey", grey.astype(np.int32), (70, 90)),
        ("float32 grey", grey.astype(np.float32) / 255, (70, 90)),
        ("float64 grey", grey.astype(np.float64), (70, 90)),
        ("bool grey", grey > 128, (70, 90)),
        ("(H, W, 1)", grey.astype(np.uint8)[..., None], (70, 90)),
        ("uint8 RGB", rgb.astype(np.uint8), (70, 90)),
        ("uint16 RGB", (rgb * 257).astype(np.uint16), (70, 90)),
        ("uint8 RGBA", np.dstack([rgb, np.full((70, 90), 255)]).astype(np.uint8), (70, 90)),
        ("grey in RGB", np.repeat(grey[..., None], 3, -1).astype(np.uint8), (70, 90)),
        ("stack (Z, H, W)", rng.integers(0, 65535, (3, 70, 90)).astype(np.uint16), (3, 70, 90)),
        ("stack (Z, H, W, 3)", rng.integers(0, 256, (2, 70, 90, 3)).astype(np.uint8), (2, 70, 90)),
        ("stack (Z, H, W, 4)", rng.integers(0, 256, (2, 70, 90, 4)).astype(np.uint8), (2, 70, 90)),
    ]


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name,image,shape", _catalogue(), ids=[c[0] for c in _catalogue()])
def test_dtype_shape_catalogue(name, image, shape, in_chans):
    seg = pixel_segmenter(in_chans=in_chans, tile=256)
    pred = seg.predict(image, want_probs=True, want_uncertainty=True)
    k = seg.info.num_classes
    assert pred.labels.shape == shape and pred.labels.dtype == np.uint8
    assert pred.labels.min() >= 1 and pred.labels.max() <= k
    assert pred.probs.shape == shape[:-2] + (k,) + shape[-2:] and pred.probs.dtype == np.float16
    assert pred.uncertainty.shape == shape and pred.uncertainty.dtype == np.float32


def test_column_chunks_do_not_change_the_result(monkeypatch):
    from napari_csunet.engine import accumulator

    image = np.random.default_rng(8).random((300, 700)).astype(np.float32)
    whole = pixel_segmenter(tile=256).predict(image, want_probs=True, want_uncertainty=True)
    monkeypatch.setattr(accumulator, "CHUNK", 100)
    chunked = pixel_segmenter(tile=256).predict(image, want_probs=True, want_uncertainty=True)
    for a, b in zip((whole.labels, whole.probs, whole.uncertainty), (chunked.labels, chunked.probs, chunked.uncertainty), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stack_is_predicted_slice_by_slice():
    stack = np.random.default_rng(3).integers(0, 4000, (3, 50, 60)).astype(np.uint16)
    stack[1] += 20000  # per-slice normalisation: brightness of one slice must not leak into others
    seg = pixel_segmenter(tile=256)
    pred = seg.predict(stack, want_probs=True, want_uncertainty=True)
    for z in range(3):
        one = seg.predict(stack[z], want_probs=True, want_uncertainty=True)
        np.testing.assert_array_equal(pred.labels[z], one.labels)
        np.testing.assert_array_equal(pred.probs[z], one.probs)
        np.testing.assert_array_equal(pred.uncertainty[z], one.uncertainty)


def test_probs_uncertainty_and_labels_agree():
    image = np.random.default_rng(4).random((300, 520)).astype(np.float32)
    pred = pixel_segmenter(tile=256, overlap=0.5).predict(image, want_probs=True, want_uncertainty=True)
    probs = pred.probs.astype(np.float32)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=3e-3)
    np.testing.assert_allclose(pred.uncertainty, 1.0 - probs.max(0), atol=2e-3)
    assert pred.uncertainty.min() >= 0 and pred.uncertainty.max() <= 1 - 1 / 3 + 1e-3
    plain = pixel_segmenter(tile=256, overlap=0.5).predict(image)
    assert plain.probs is None and plain.uncertainty is None
    np.testing.assert_array_equal(plain.labels, pred.labels)


@pytest.mark.parametrize("normalization", [{"mode": "none"}, {"mode": "fixed", "mean": 100.0, "std": 20.0}])
def test_normalization_modes(normalization):
    image = np.random.default_rng(5).integers(50, 150, (100, 300)).astype(np.uint8)
    seg = pixel_segmenter(normalization=normalization, tile=256)
    assert_matches(seg.predict(image, want_probs=True), untiled_probs(seg, image))


def test_unknown_normalization_is_refused():
    seg = pixel_segmenter(normalization={"mode": "dataset"}, tile=256)
    with pytest.raises(ValueError, match="unknown normalization mode 'dataset'"):
        seg.predict(np.zeros((10, 10), np.uint8))


def test_flip_tta_on_a_flip_equivariant_model_changes_nothing():
    image = np.random.default_rng(6).random((200, 300)).astype(np.float32)
    plain = pixel_segmenter(tile=256).predict(image, want_probs=True)
    tta_seg = pixel_segmenter(tile=256, batch_size=4)  # no memory probe
    tta = tta_seg.predict(image, want_probs=True, tta=True)
    np.testing.assert_allclose(tta.probs.astype(np.float32), plain.probs.astype(np.float32), atol=1e-3)
    assert len(tta_seg.model.calls) == 4  # one tile, four flips


def test_toggling_tta_between_two_predictions_replans_the_memory(monkeypatch):
    """TTA is an option of the call, not of the shared Segmenter: its memory plan is its own
    (the network is probed once), so ticking TTA after a plain run never reuses the plain plan."""
    import napari_csunet.engine.predictor as inference

    probes: list[int] = []
    monkeypatch.setattr(inference, "bytes_per_pixel", lambda *a: probes.append(1) or 2000.0)
    monkeypatch.setattr(inference, "device_budget", lambda device: 3 * 2**30)
    seg = pixel_segmenter()
    image = np.zeros((1500, 1500), np.uint8)
    plain, flips = seg.plan(image.shape), seg.plan(image.shape, tta=True)
    assert seg.budget(tta=True).bytes_per_px > 1.9 * seg.budget().bytes_per_px
    assert flips[0].tile[0] * flips[0].tile[1] * flips[1] < plain[0].tile[0] * plain[0].tile[1] * plain[1]
    assert seg.plan(image.shape) == plain and len(probes) == 1  # toggled back: the plain plan again
    seg.predict(image[:300, :300], tta=True)
    seg.predict(image[:300, :300])
    assert len(probes) == 1


def test_progress_counts_tiles_and_batches():
    seg = pixel_segmenter(tile=256, overlap=0.25, batch_size=3)
    image = np.zeros((700, 900), np.uint8)
    calls = []
    seg.predict(image, progress=lambda done, total: calls.append((done, total)))
    total = seg.num_tiles(image.shape)
    assert total == TileLayout.plan(image.shape, 256, 0.25, 256).num_tiles == 4 * 5
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) == 1 + -(-total // 3)


@pytest.mark.parametrize(("polls", "calls", "conv_runs"), [(1, 0, 0), (2, 1, 0), (3, 1, 1), (4, 2, 1)])
def test_cancel_stops_before_the_next_batch_or_stage(polls: int, calls: int, conv_runs: int) -> None:
    """cancel() is polled before each batch and before each stage of the network (here its conv):
    the Nth poll answering True stops there, inside a forward pass if need be."""
    seg = pixel_segmenter(tile=256, batch_size=2)
    ran: list[int] = []
    seg.model.conv.register_forward_hook(lambda *_: ran.append(1))
    answers = iter([False] * (polls - 1) + [True])
    with pytest.raises(Cancelled):
        seg.predict(np.zeros((600, 600), np.uint8), cancel=lambda: next(answers))
    assert (len(seg.model.calls), len(ran)) == (calls, conv_runs)
    seg.predict(np.zeros((600, 600), np.uint8), cancel=lambda: False)  # usable again afterwards
    assert len(ran) == conv_runs + seg.num_tiles((600, 600)) // 2 + seg.num_tiles((600, 600)) % 2


@pytest.mark.parametrize("image,match", [
    (np.full((20, 20), np.nan, np.float32), "NaN"),
    (np.full((20, 20), np.inf), "NaN or infinite"),
    (np.zeros((64, 64, 5), np.uint8), "5 channels"),
    (np.zeros((20, 20), np.complex64), "unsupported pixel type"),
    (np.zeros((2, 2, 20, 20, 3), np.uint8), "neither a 2D image"),
    (np.zeros((0, 20, 20), np.uint8), "no slices"),
])
def test_bad_images_name_the_problem(image, match):
    with pytest.raises(ImageError, match=match) as err:
        pixel_segmenter(tile=256).predict(image, name="scan.tif")
    assert "scan.tif" in str(err.value)


def test_image_with_channels_the_model_cannot_take():
    seg = pixel_segmenter(in_chans=4, tile=256)
    with pytest.raises(ImageError, match="3 channels but model .* expects 4"):
        seg.predict(np.random.default_rng(0).integers(0, 255, (30, 30, 3)).astype(np.uint8), name="a.tif")
    assert seg.predict(np.zeros((30, 30), np.uint8)).labels.shape == (30, 30)  # grey is repeated


@pytest.mark.parametrize("kw,match", [
    ({"tile": 300}, "multiple of 256"), ({"tile": 0}, "multiple of 256"), ({"overlap": 0.9}, "overlap"),
    ({"overlap": -0.1}, "overlap"), ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"),
])
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        pixel_segmenter(**kw)


def test_model_with_wrong_output_is_reported():
    seg = pixel_segmenter(k=3, tile=256)
    seg.info = ModelInfo(ModelConfig("unet", num_classes=4, in_chans=1, cnn=None, swin=None), list("abcd"))
    with pytest.raises(ValueError, match=r"expected \(batch, 4 classes"):
        seg.predict(np.zeros((10, 10), np.uint8))


def test_out_of_memory_suggests_smaller_tiles(monkeypatch):
    seg = pixel_segmenter(tile=512, batch_size=4)

    def oom(x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(seg.model, "forward", oom)
    with pytest.raises(InferenceMemoryError, match="smaller batch.*tile/--tile 256"):
        seg.predict(np.zeros((600, 600), np.uint8))


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device(" CPU ").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda:1")


def test_split_planes_rules():
    assert split_planes(np.zeros((5, 64, 64)))[1] is True  # Z first
    assert split_planes(np.zeros((64, 64, 3)))[1] is False
    assert split_planes(np.zeros((64, 64, 4)))[0][0].shape == (64, 64)  # alpha and grey-in-RGB dropped


def test_tile_starts_cover_with_overlap():
    for length, tile, ov in [(1000, 256, 64), (257, 256, 0), (256, 256, 128), (5000, 512, 256)]:
        starts = tile_starts(length, tile, ov)
        assert starts[0] == 0 and starts[-1] == length - tile
        assert all(b - a <= tile - ov for a, b in zip(starts, starts[1:], strict=False))


def test_preset_warns_and_model_file_loads(tmp_path):
    from napari_csunet.models.modelfile import save_model_file

    with pytest.warns(UserWarning, match="random weights"):
        seg = Segmenter.from_spec("csunet-tiny", device="cpu", tile=256)
    path = save_model_file(tmp_path / "m.safetensors", seg.model, seg.info)
    loaded = Segmenter.from_spec(str(path), device="cpu", tile=256, overlap=0.0)
    image = np.random.default_rng(7).integers(0, 255, (300, 200)).astype(np.uint8)
    a = seg.predict(image, want_probs=True)
    b = loaded.predict(image, want_probs=True)
    assert a.labels.shape == (300, 200)
    np.testing.assert_allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)
    assert next(loaded.model.parameters()).device.type == "cpu"


def test_huge_images_take_statistics_from_a_pixel_grid(monkeypatch):
    from napari_csunet.engine import lazy

    image = np.random.default_rng(9).normal(120, 30, (600, 900)).astype(np.float32)
    seg = pixel_segmenter(tile=256)
    exact = seg._stats(image)
    assert exact == pytest.approx(image_stats(image))
    monkeypatch.setattr(lazy, "STATS_PIXELS", 20_000)
    grid = seg._stats(image)
    assert grid != exact and grid == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize(("device", "nhwc"), [("cpu", True), ("cuda", True), ("mps", False)])
def test_channels_last_where_it_is_faster(device: str, nhwc: bool) -> None:
    from napari_csunet.engine.device import prefers_channels_last

    assert prefers_channels_last(torch.device(device)) is nhwc


def test_channels_last_changes_the_layout_not_the_labels() -> None:
    import copy

    from napari_csunet.models import build_model

    torch.manual_seed(0)
    model = build_model("csunet-tiny", num_classes=3)
    info = ModelInfo(model.config, ["a", "b", "c"])
    nchw = Segmenter(copy.deepcopy(model), info, device="cpu", amp=False, channels_last=False)
    default = Segmenter(model, info, device="cpu", amp=False)  # None: NHWC on a CPU
    conv = next(m for m in default.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert default.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = np.random.default_rng(3).integers(0, 255, (300, 420)).astype(np.uint8)
    a, b = default.predict(image, want_probs=True), nchw.predict(image, want_probs=True)
    np.testing.assert_allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)
