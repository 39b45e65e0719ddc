"""Weight ids and URLs, preset-level names, safe checkpoint reading, and the `csunet weights` command."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

from napari_csunet.cli.main import main
from napari_csunet.models.registry import PRESETS
from napari_csunet.weights import (
    UnknownWeights,
    UnsafeCheckpointError,
    WeightsFormatError,
    all_sources,
    download_path,
    get_source,
    read_checkpoint,
    source_id_for,
)

NASA = "https://nasa-public-data.s3.amazonaws.com/microscopy_segmentation_models/"


@pytest.mark.parametrize("weight_id, arch, file", [
    ("resnet50-micronet", "resnet50", "resnet50_pretrained_microscopynet_v1.1.pth.tar"),
    ("resnet50-imagenet-micronet", "resnet50", "resnet50_pretrained_imagenet-microscopynet_v1.0.pth.tar"),
    ("resnext101_32x8d-micronet", "resnext101_32x8d", "resnext101_pretrained_microscopynet_v1.0.pth.tar"),
    ("efficientnet-b4-micronet", "tf_efficientnet_b4", "efficientnet-b4_pretrained_microscopynet_v1.0.pth.tar"),
    ("se_resnext50_32x4d-imagenet-micronet", "legacy_seresnext50_32x4d",
     "se_resnext50_32x4d_pretrained_imagenet-microscopynet_v1.0.pth.tar"),
    ("vgg16_bn-micronet", "vgg16_bn", "vgg16_bn_pretrained_microscopynet_v1.0.pth.tar"),
])
def test_nasa_ids(weight_id, arch, file):
    src = get_source(weight_id)
    assert (src.arch, src.url, src.filename, src.kind) == (arch, NASA + file, file, "cnn")
    assert download_path(src).name == file  # a copy downloaded by hand keeps NASA's name


def test_imagenet_urls_come_from_timm():
    from timm.models import get_pretrained_cfg

    for wid, arch in (("resnet50-imagenet", "resnet50"), ("swin-t-imagenet", "swin_tiny_patch4_window7_224")):
        hub = get_pretrained_cfg(arch).hf_hub_id
        assert get_source(wid).url == f"https://huggingface.co/{hub}/resolve/main/model.safetensors"
    # any timm CNN with pretrained weights has an id, listed or not
    assert get_source("convnext_atto-imagenet").arch == "convnext_atto"


@pytest.mark.parametrize("weight_id, file_id, depths", [
    ("swin-t-microlite", "1SZsdAYgQXDUHRoxENoUICL_SxcToKzd0", (2, 2, 6, 2)),
    ("swin-t-imagenet-microlite", "1ksqnjN1aiM133ASSg4PEswOnZtklg7Jb", (2, 2, 6, 2)),
    ("swin-t-intermediate-microlite", "11iuqZUfZEDmKJ_2UimDRFZraqPoCDWMu", (2, 2, 2, 2)),
    ("swin-t-intermediate-imagenet-microlite", "1uNRH0DjAQiRPRdIvEraZdLpS6P1kDQUw", (2, 2, 2, 2)),
])
def test_microlite_ids_are_manual_downloads(weight_id, file_id, depths):
    src = get_source(weight_id)
    assert src.manual_download and file_id in src.url and src.swin_depths == depths and src.kind == "swin"


@pytest.mark.parametrize("kind, family, cnn, depths, expected", [
    ("cnn", "imagenet", "resnet50", None, "resnet50-imagenet"),
    ("cnn", "micronet", "resnet50", None, "resnet50-micronet"),
    ("cnn", "imagenet-micronet", "tf_efficientnet_b4", None, "tf_efficientnet_b4-imagenet-micronet"),
    ("swin", "imagenet", None, (2, 2, 2, 2), "swin-t-imagenet"),
    ("swin", "microlite", None, (2, 2, 2, 2), "swin-t-intermediate-microlite"),
    ("swin", "microlite", None, (2, 2, 6, 2), "swin-t-microlite"),
    ("swin", "imagenet-microlite", None, (2, 2, 2, 2), "swin-t-intermediate-imagenet-microlite"),
    ("swin", "imagenet-microlite", None, (2, 2, 6, 2), "swin-t-imagenet-microlite"),
])
def test_preset_level_names_map_to_ids(kind, family, cnn, depths, expected):
    assert source_id_for(kind, family, cnn=cnn, swin_depths=depths) == expected


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_source_has_a_weight_id(preset):
    p = PRESETS[preset]
    for family in p.cnn_sources:
        assert get_source(source_id_for("cnn", family, cnn=p.config.cnn)).arch == p.config.cnn
    for family in p.swin_sources:
        src = get_source(source_id_for("swin", family, swin_depths=p.config.swin.depths))
        assert src.family == family


@pytest.mark.parametrize("call, message", [
    (lambda: get_source("resnet50-mcronet"), "did you mean resnet50-micronet"),
    (lambda: get_source("tf_efficientnet_b6-micronet"), "unknown weight id"),
    (lambda: source_id_for("cnn", "micronet", cnn="resnet10t"), "no micronet weights for the CNN 'resnet10t'"),
    (lambda: source_id_for("swin", "micronet"), "unknown Swin weight source 'micronet'"),
])
def test_unknown_sources_are_clear(call, message):
    with pytest.raises(UnknownWeights, match=message):
        call()


def test_listing_has_unique_ids_and_both_kinds():
    ids = [s.id for s in all_sources()]
    assert len(ids) == len(set(ids)) and {s.kind for s in all_sources()} == {"cnn", "swin"}


# ------------------------------------------------------------------------ reading checkpoints


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('x')",)

    file = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, file)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: refused to load.*\bexec\b"):
        read_checkpoint(file)
    assert not marker.exists()


def test_training_checkpoint_with_config_is_read(tmp_path, monkeypatch):
    """Microsoft-style training files: weights under "model" next to a yacs config and optimizer state."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):  # like yacs': a dict with instance state
        def __init__(self, **kw):
            super().__init__(**kw)
            self.__dict__["__immutable__"] = False

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    cfg = CfgNode(MODEL=CfgNode(TYPE="swin"))
    file = tmp_path / "ckpt.pth"
    torch.save({"model": {"module.a.weight": torch.ones(2)}, "config": cfg, "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, file)
    monkeypatch.delitem(sys.modules, "yacs.config")  # reading needs no yacs, and runs none of it
    state, meta = read_checkpoint(file)
    assert list(state) == ["a.weight"] and meta == {}  # unwrapped from "model", DDP prefix gone


@pytest.mark.parametrize("content, message", [
    (b"garbage" * 10, "not a PyTorch checkpoint"),
    (None, "not a readable PyTorch checkpoint"),  # a torch file cut in half
])
def test_damaged_files_are_clear_errors(tmp_path, content, message):
    file = tmp_path / "bad.pth"
    if content is None:
        torch.save({"a": torch.zeros(100)}, file)
        content = file.read_bytes()[: file.stat().st_size // 2]
    file.write_bytes(content)
    with pytest.raises(WeightsFormatError, match=message):
        read_checkpoint(file)


def test_file_without_a_state_dict(tmp_path):
    file = tmp_path / "list.pth"
    torch.save([1, 2, 3], file)
    with pytest.raises(WeightsFormatError, match="no state dict of tensors found"):
        read_checkpoint(file)


# ---------------------------------------------------------------------------------- command


def test_cli_list_json(capsys):
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in rows}
    assert {"resnet50-imagenet", "resnet50-micronet", "swin-t-intermediate-microlite"} <= set(by_id)
    for r in rows:
        assert {"id", "url", "cached", "path", "kind", "sha256", "manual_download"} <= set(r)
        assert r["cached"] is False
    assert by_id["swin-t-microlite"]["manual_download"] is True


def test_cli_fetch_google_drive_guides_the_user(capsys):
    assert main(["weights", "fetch", "swin-t-intermediate-microlite"]) == 1
    out = capsys.readouterr().out
    assert "https://drive.google.com/file/d/11iuqZUfZEDmKJ_2UimDRFZraqPoCDWMu/view" in out
    assert "csunet weights import swin-t-intermediate-microlite /path/to/the/file" in out


def test_cli_import_then_path(tmp_path, capsys):
    import timm

    file = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), file)
    assert main(["weights", "path", "resnet10t-imagenet"]) == 1
    capsys.readouterr()
    assert main(["weights", "import", "resnet10t-imagenet", str(file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"]["dropped"] == ["fc"]
    assert main(["weights", "path", "resnet10t-imagenet"]) == 0
    assert capsys.readouterr().out.strip() == out["path"]
    state, _ = read_checkpoint(out["path"])
    assert "fc.weight" not in state and "conv1.0.weight" in state  # timm naming, encoder only


def test_cli_errors(tmp_path, capsys):
    assert main(["weights", "path", "no-such-weights"]) == 2
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["weights", "import", "resnet50-micronet", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "unknown weight id 'no-such-weights'" in err and f"{bad}: not a PyTorch checkpoint" in err


def test_importing_the_package_and_command_needs_no_torch():
    code = ("import sys, napari_csunet.weights, napari_csunet.weights.cli; "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
