from __future__ import annotations

import pytest
import torch

from napari_csunet.models import PRESETS, build_model, count_parameters
from napari_csunet.models.config import ModelConfig
from napari_csunet.models.networks import check_input_size

# the big presets are built at full size once (parameter counts) but run forward on the small ones
FAST = ["csunet-tiny", "csunet-small", "swinunet-t", "unet-r50"]


@pytest.mark.parametrize("preset", FAST)
@pytest.mark.parametrize("size", [256, 512])
def test_forward_backward_keeps_size(preset: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(preset, num_classes=4)
    x = torch.randn(1, 1, size, size)
    y = model(x)
    assert y.shape == (1, 4, size, size)
    y.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - set(FAST)))
def test_big_presets_run_forward(preset: str) -> None:
    model = build_model(preset, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 256, 256)).shape == (1, 3, 256, 256)


def test_rgb_and_rectangular_inputs() -> None:
    model = build_model("csunet-tiny", num_classes=2, in_chans=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 256, 768)).shape == (2, 2, 256, 768)


@pytest.mark.parametrize(("preset", "expected_m"), [("csunet-r50-swint", 56.3), ("csunet-r50-swint-orig", 71.7)])
def test_parameter_count_matches_the_paper(preset: str, expected_m: float) -> None:
    n = count_parameters(build_model(preset, num_classes=3)) / 1e6
    assert abs(n - expected_m) / expected_m < 0.05, n


@pytest.mark.parametrize(("h", "w", "nearest"), [(300, 256, "256x256"), (512, 700, "512x768"), (100, 100, "256x256")])
def test_invalid_size_names_nearest_valid_size(h: int, w: int, nearest: str) -> None:
    with pytest.raises(ValueError, match=nearest):
        check_input_size(h, w)
    model = build_model("csunet-tiny", num_classes=2)
    with pytest.raises(ValueError, match="multiples of 256"):
        model(torch.randn(1, 1, h, w))


def test_wrong_channel_count_is_explained() -> None:
    model = build_model("csunet-tiny", num_classes=2)
    with pytest.raises(ValueError, match="expects 1 input channel"):
        model(torch.randn(1, 3, 256, 256))


def test_config_round_trips_through_dict() -> None:
    cfg = PRESETS["csunet-r50-swint-orig"].config
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict(cfg.to_dict() | {"bogus": 1})


@pytest.mark.parametrize("window", [8, 4])  # 4: the cache already holds window-8 masks of the same sizes
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_shift_masks_are_cached_for_inference_and_change_nothing(mode: str, window: int) -> None:
    import dataclasses

    from timm.models.swin_transformer import SwinTransformerBlock

    from napari_csunet.models import get_preset, shift_masks

    torch.manual_seed(0)
    config = get_preset("csunet-tiny").config
    config = dataclasses.replace(config, swin=dataclasses.replace(config.swin, window_size=window))
    if window != 8:
        with torch.no_grad():
            build_model("csunet-tiny", num_classes=3).eval()(torch.randn(1, 1, 512, 256))
    model = build_model(config, num_classes=3).eval()
    x = torch.randn(1, 1, 512, 256)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    if window == 8:
        shift_masks.clear_shift_masks()
    with context():
        cached, again = model(x), model(x)
        for block in model.modules():  # timm's own masks, built on every call
            if isinstance(block, shift_masks.CachedMaskBlock):
                block.__class__ = SwinTransformerBlock
        reference = model(x)
    assert 0 < len(shift_masks._masks) <= shift_masks.MAX_MASKS
    assert torch.equal(cached, reference) and torch.equal(again, reference)


def test_training_builds_its_own_masks_after_inference() -> None:
    from napari_csunet.models import shift_masks

    model = build_model("csunet-tiny", num_classes=3)
    x = torch.randn(2, 1, 256, 256)
    shift_masks.clear_shift_masks()
    with torch.inference_mode():  # validation during training fills the cache with inference tensors
        model.eval()(x)
    filled = len(shift_masks._masks)
    model.train()(x).sum().backward()  # gradients on: timm's own masks, nothing cached
    assert filled > 0 and len(shift_masks._masks) == filled


def test_the_mask_cache_is_bounded() -> None:
    from napari_csunet.models import shift_masks

    model = build_model("csunet-tiny", num_classes=3).eval()
    shift_masks.clear_shift_masks()
    with torch.no_grad():
        for side in (256, 512, 768, 1024):
            model(torch.zeros(1, 1, side, 256))
    assert len(shift_masks._masks) == shift_masks.MAX_MASKS


def test_networks_with_cached_masks_pickle_and_big_masks_are_not_kept(monkeypatch) -> None:
    import pickle

    from napari_csunet.models import shift_masks

    model = build_model("csunet-tiny", num_classes=3).eval()
    copy = pickle.loads(pickle.dumps(model))  # our own object, in memory (spawned workers do this)
    assert isinstance(copy.swin.model.layers[0].blocks[1], shift_masks.CachedMaskBlock)
    monkeypatch.setattr(shift_masks, "MAX_BYTES", 1)
    shift_masks.clear_shift_masks()
    with torch.no_grad():
        model(torch.zeros(1, 1, 256, 256))
    assert not shift_masks._masks
