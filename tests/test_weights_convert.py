"""Key conversion: checkpoints fabricated in each source's own format reproduce the source's features.

Each source architecture is built from its own package (torchvision, efficientnet_pytorch,
pretrainedmodels) with random weights and random BatchNorm statistics (so a swapped BN would
show), saved as NASA saved its encoders (``torch.save(state_dict)``), imported, loaded into our
timm encoder, and compared feature by feature at strides 4..32 in eval mode.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from napari_csunet.models.encoders import CNNEncoder
from napari_csunet.weights import (
    UnknownWeights,
    WeightsFormatError,
    apply_sources,
    converted_path,
    get_source,
    import_weights,
    load_cnn,
)

SIZE = 64


def _randomize_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in ((m.weight.data, 0.5, 1.5), (m.bias.data, -0.2, 0.2),
                              (m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5)):
                t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model.eval()


def _last_at_each_stride(x: torch.Tensor, modules) -> list[torch.Tensor]:
    """Run modules in order; keep the last output at strides 4, 8, 16, 32 (smp's and timm's rule)."""
    found: dict[int, torch.Tensor] = {}
    for m in modules:
        x = m(x)
        found[SIZE // x.shape[-1]] = x
    return [found[s] for s in (4, 8, 16, 32)]


def _torchvision_resnet(name: str):
    import torchvision

    net = getattr(torchvision.models, name)()
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return net, lambda x: _last_at_each_stride(x, [stem, net.layer1, net.layer2, net.layer3, net.layer4])


def _torchvision_vgg16_bn():
    from torchvision.models.vgg import cfgs, make_layers

    net = nn.Module()
    net.features = make_layers(cfgs["D"], batch_norm=True)  # torchvision's VGG16-bn body, without the 120M-weight classifier
    return net, lambda x: _last_at_each_stride(x, list(net.features))


def _efficientnet_pytorch(name: str):
    from efficientnet_pytorch import EfficientNet

    # static "same" padding computed for our test size, as timm's tf_ models compute it per input
    net = EfficientNet.from_name(name, image_size=SIZE)

    def features(x):
        ends = net.extract_endpoints(x)
        return [ends[f"reduction_{i}"] for i in (2, 3, 4, 5)]

    return net, features


def _pretrainedmodels_se_resnext50():
    import pretrainedmodels

    net = pretrainedmodels.se_resnext50_32x4d(num_classes=1000, pretrained=None)
    return net, lambda x: _last_at_each_stride(x, [net.layer0, net.layer1, net.layer2, net.layer3, net.layer4])


#: NASA id -> (source builder, prefixes segmentation_models_pytorch deleted before saving)
CASES = {
    "resnet50-micronet": (lambda: _torchvision_resnet("resnet50"), ()),  # fc kept: a classifier file
    "resnext50_32x4d-imagenet-micronet": (lambda: _torchvision_resnet("resnext50_32x4d"), ("fc.",)),
    "vgg16_bn-micronet": (_torchvision_vgg16_bn, ()),
    "efficientnet-b0-micronet": (lambda: _efficientnet_pytorch("efficientnet-b0"), ("_fc.",)),
    "se_resnext50_32x4d-micronet": (_pretrainedmodels_se_resnext50, ("last_linear.",)),
}


@pytest.mark.parametrize("weight_id", list(CASES))
def test_nasa_checkpoint_reproduces_source_features(weight_id, tmp_path):
    torch.manual_seed(0)
    build, dropped = CASES[weight_id]
    net, source_features = build()
    _randomize_bn(net)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith(dropped)}
    src = get_source(weight_id)
    nasa_file = tmp_path / src.filename
    torch.save(state, nasa_file)

    path, report = import_weights(weight_id, nasa_file)
    assert path == converted_path(src) and path.suffix == ".safetensors"
    assert report.loaded > 0 and not report.filled
    with torch.device("meta"):  # no random init: every tensor is about to be loaded (strictly)
        encoder = CNNEncoder(src.arch)
    encoder.to_empty(device="cpu").eval()
    load_cnn(encoder, path)

    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = source_features(x), encoder(x)
    assert len(got) == 4
    for stride, w, g in zip((4, 8, 16, 32), want, got, strict=True):
        assert g.shape == w.shape, f"stride {stride}"
        err = (g - w).abs().max() / w.abs().max()
        assert err < 1e-5, f"stride {stride}: relative error {err:.2e}"


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-b4"])
def test_efficientnet_blocks_map_one_to_one(name, tmp_path):
    """b4 repeats blocks (two without expansion in stage 0): every block must land in timm's order."""
    from efficientnet_pytorch import EfficientNet

    with torch.device("meta"):
        net = EfficientNet.from_name(name)
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in net.state_dict().items()}
    file = tmp_path / f"{name}.pth"
    torch.save(state, file)
    _, report = import_weights(f"{name}-imagenet-micronet", file)
    assert report.source_format == "efficientnet_pytorch" and not report.filled
    assert report.loaded == len([k for k in state if k.startswith(("_blocks.", "_conv_stem", "_bn0"))])
    assert set(report.to_dict()["dropped"]) == {"conv_head", "bn2", "classifier"}


def test_wrong_architecture_lists_what_did_not_match(tmp_path):
    import torchvision

    file = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), file)
    with pytest.raises(WeightsFormatError) as err:
        import_weights("resnet50-micronet", file)
    msg = str(err.value)
    assert str(file) in msg and "timm resnet50" in msg
    assert "missing from the file" in msg and "differ in shape" in msg and "layer1.0.conv3.weight" in msg
    assert not converted_path(get_source("resnet50-micronet")).exists()


def test_unknown_tensors_are_an_error_not_ignored(tmp_path):
    import torchvision

    state = torchvision.models.resnet18().state_dict() | {"extra.weight": torch.zeros(3)}
    file = tmp_path / "r18.pth"
    torch.save(state, file)
    with pytest.raises(WeightsFormatError, match=r"1 tensors of the file have no place in the model: extra\.weight"):
        import_weights("resnet18-micronet", file)


# ---------------------------------------------------------------------------------------- Swin


def _timm_swin(depths, classes=10, width=96, device="cpu"):
    """A Microsoft-shaped Swin (window 7, 224 px); ``width`` < 96 keeps the exact-match test cheap."""
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    heads = tuple(h * width // 96 for h in (3, 6, 12, 24))
    with torch.device(device):
        return SwinTransformer(img_size=224, window_size=7, embed_dim=width, depths=depths, num_heads=heads,
                               num_classes=classes).eval()


def _random_state(meta_model: nn.Module) -> dict[str, torch.Tensor]:
    """Random tensors in a model's names and shapes, without its slow initialisation."""
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in meta_model.state_dict().items()}


def _microsoft_named(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """timm's Swin state dict renamed back to Microsoft's original layout.

    Microsoft keeps patch merging at the *end* of stage l (timm: start of l+1), names the
    classifier ``head`` and stores the relative-position index and shift masks as buffers.
    """
    out = {}
    for key, value in (state or model.state_dict()).items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    for stage, layer in enumerate(model.layers):
        for block, blk in enumerate(layer.blocks):
            n = blk.window_size[0] * blk.window_size[1]
            out[f"layers.{stage}.blocks.{block}.attn.relative_position_index"] = torch.zeros(n, n, dtype=torch.long)
            if block % 2:
                out[f"layers.{stage}.blocks.{block}.attn_mask"] = torch.zeros(4, n, n)
    return out


def _microsoft_patch_merging(x: torch.Tensor, norm: nn.Module, reduction: nn.Module) -> torch.Tensor:
    """Swin's PatchMerging as the paper's code defines it: 2x2 neighbours concatenated, (0,0) (1,0) (0,1) (1,1)."""
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    return reduction(norm(torch.cat(parts, dim=-1)))


def test_microsoft_swin_converts_exactly(tmp_path):
    from napari_csunet.weights.checkpoint import read_checkpoint
    from napari_csunet.weights.convert import convert_swin

    source = _timm_swin((2, 2, 2, 2), width=32)
    ms = _microsoft_named(source)
    assert "layers.0.downsample.reduction.weight" in ms and "head.weight" in ms
    file = tmp_path / "swin.pth"
    torch.save({"model": ms}, file)  # Microsoft's training code wraps the weights in "model"

    target = _timm_swin((2, 2, 2, 2), classes=0, width=32)
    state, report = convert_swin(read_checkpoint(file)[0], target, str(file))
    target.load_state_dict(state, strict=True)
    assert report.source_format == "microsoft swin" and not report.resized and report.dropped
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(target.forward_features(x), source.forward_features(x), rtol=1e-5, atol=1e-5)
        # the patch merging that moved stage: Microsoft's stage-0 merging is timm's stage-1 one
        tokens = torch.randn(1, 56, 56, 32)
        merge = target.layers[1].downsample
        want = _microsoft_patch_merging(tokens, merge.norm, merge.reduction)
        torch.testing.assert_close(merge(tokens), want)
        torch.testing.assert_close(merge.reduction.weight, ms["layers.0.downsample.reduction.weight"])


@pytest.fixture(scope="module")
def swinunet():
    from napari_csunet.models import build_model

    return build_model("swinunet-t")


def _blocks_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_imagenet_swin_t_end_to_end(tmp_path, swinunet):
    """Original-depth window-7 weights into the intermediate window-8 Swin-UNet: cut, resized, mirrored."""
    file = tmp_path / "swin_tiny_patch4_window7_224.pth"
    meta = _timm_swin((2, 2, 6, 2), device="meta")
    torch.save({"model": _microsoft_named(meta, _random_state(meta))}, file)
    _, report = import_weights("swin-t-imagenet", file)
    assert len(report.resized) == 12  # one relative-position table per block, stored at window 8
    applied = apply_sources(swinunet, None, "imagenet", allow_download=False)
    assert applied["swin_id"] == "swin-t-imagenet"
    assert applied["swin_report"]["truncated"] == [f"layers.2.blocks.{i}" for i in range(2, 6)]
    assert applied["swin_report"]["mirrored"] == ["decoder.stages.0", "decoder.stages.1", "decoder.stages.2"]
    enc = swinunet.swin.model
    assert enc.layers[0].blocks[0].attn.relative_position_bias_table.shape == (15 * 15, 3)
    for level in ("0", "1", "2"):
        assert _blocks_equal(swinunet.decoder.stages[level].blocks, enc.layers[int(level)].blocks)
    # a MicroLite file is never cut: the wrong depths are an error that names the right file
    with pytest.raises(WeightsFormatError, match=r"depths \[2, 2, 6, 2\].*\[2, 2, 2, 2\].*swin-t-intermediate-microlite"):
        import_weights("swin-t-intermediate-microlite", file)


def test_swin_source_for_a_narrow_swin_is_a_clear_error():
    from napari_csunet.models import build_model

    tiny = build_model("csunet-tiny")
    with pytest.raises(UnknownWeights, match="fit Swin-T only.*32 wide"):
        apply_sources(tiny, None, "microlite", allow_download=False)
    with pytest.raises(UnknownWeights, match="no CNN encoder"):
        apply_sources(build_model("swinunet-t"), "imagenet", None, allow_download=False)
    with pytest.raises(UnknownWeights, match="no micronet weights for the CNN 'resnet10t'"):
        apply_sources(tiny, "micronet", None, allow_download=False)
    with pytest.raises(UnknownWeights, match="resnet50-micronet fit the CNN resnet50; this model's CNN is resnet10t"):
        apply_sources(tiny, "resnet50-micronet", None, allow_download=False)


def test_model_file_as_cnn_source(tmp_path):
    from napari_csunet.models import build_model
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    donor = build_model("csunet-tiny")
    file = save_model_file(tmp_path / "donor.safetensors", donor,
                           ModelInfo(donor.config, ["a", "b", "c"], preset="csunet-tiny"))
    model = build_model("csunet-tiny")
    applied = apply_sources(model, str(file), None, allow_download=False)
    assert applied["cnn_id"] is None and applied["cnn"] == str(file)
    assert _blocks_equal(model.cnn.body, donor.cnn.body)
    assert not _blocks_equal(model.swin, donor.swin)  # only the CNN was asked for
