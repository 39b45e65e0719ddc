"""One source of truth per concept: safetensors metadata, file hashes, Swin stage outputs, valid sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.numpy import save_file

from csunet_train.config import ConfigError, TrainConfig
from napari_csunet.engine.tiling import check_tile
from napari_csunet.models import build_model
from napari_csunet.models.config import nearest_multiple
from napari_csunet.models.modelfile import (
    ModelFileError,
    ModelInfo,
    read_model_info,
    save_model_file,
)
from napari_csunet.weights.cache import sha256_file


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a safetensors model file"),
    ((2**40).to_bytes(8, "little") + b"{}", "not a safetensors model file"),
    ((9).to_bytes(8, "little") + b"{not json", "not a safetensors model file"),
    (None, "model file not found"),
    ("bare", "without a napari-csunet description"),
])
def test_model_file_headers_are_read_by_safetensors(tmp_path: Path, content: bytes | str | None, message: str) -> None:
    path = tmp_path / "m.safetensors"
    if content == "bare":
        import numpy as np

        save_file({"w": np.zeros(3, np.float32)}, str(path))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        read_model_info(path)


def test_a_saved_model_describes_itself(tmp_path: Path) -> None:
    model = build_model("csunet-tiny", num_classes=2)
    info = ModelInfo(model.config, ["pore", "grain"], provenance={"steps": 3})
    save_model_file(tmp_path / "m.safetensors", model, info)
    again = read_model_info(tmp_path / "m.safetensors")
    assert again.class_names == ["pore", "grain"] and again.provenance == {"steps": 3} and again.config == model.config


def test_file_hashes_are_pooch_hashes(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"weights" * 1000).hexdigest()


def test_swin_stage_outputs_equal_a_walk_over_timms_stages() -> None:
    """timm's forward_intermediates (norm on the last stage) is the encoder: same numbers as walking
    the stages by hand, channels last for the decoder."""
    torch.manual_seed(0)
    encoder = build_model("csunet-tiny", num_classes=3).swin.eval()
    x = torch.randn(1, 3, 256, 512)
    with torch.no_grad():
        h, expected = encoder.model.patch_embed(x), []
        for i, stage in enumerate(encoder.model.layers):
            h = stage(h)
            expected.append(encoder.model.norm(h) if i == len(encoder.model.layers) - 1 else h)
        got = encoder(x)
    assert [tuple(g.shape) for g in got] == [tuple(e.shape) for e in expected]
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(("n", "nearest"), [(1, 256), (300, 256), (400, 512), (384, 512), (1000, 1024)])
def test_every_size_error_suggests_the_same_nearest_multiple(n: int, nearest: int) -> None:
    assert nearest_multiple(n) == nearest
    with pytest.raises(ValueError, match=f"try {nearest}"):
        check_tile(n, 256, 0.25)
    with pytest.raises(ConfigError, match=f"try {nearest}"):
        TrainConfig(out="m.safetensors", preset="csunet-tiny", crop=n)


def test_every_folder_of_the_plugin_is_chosen_by_one_rule(tmp_path: Path, monkeypatch) -> None:
    """An environment variable redirects each folder; otherwise the platform's folder for napari-csunet."""
    import platformdirs

    from napari_csunet.images.annotations import default_annotations_dir
    from napari_csunet.models.catalog import user_models_dir
    from napari_csunet.settings import settings_path
    from napari_csunet.weights.cache import cache_dir

    variables = ("CSUNET_ANNOTATIONS_DIR", "CSUNET_MODELS_DIR", "CSUNET_CONFIG_DIR", "CSUNET_CACHE_DIR")
    for key in variables:
        monkeypatch.setenv(key, str(tmp_path / key))
    assert [default_annotations_dir(), user_models_dir(), settings_path().parent, cache_dir()] == \
        [tmp_path / key for key in variables]
    for key in variables:
        monkeypatch.delenv(key)
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(tmp_path / "data" / app))
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda app: str(tmp_path / "config" / app))
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "cache" / app))
    assert default_annotations_dir() == tmp_path / "data" / "napari-csunet" / "annotations"
    assert user_models_dir() == tmp_path / "data" / "napari-csunet" / "models"
    assert settings_path() == tmp_path / "config" / "napari-csunet" / "settings.json"
    assert cache_dir() == tmp_path / "cache" / "napari-csunet" / "weights"  # no folder chosen in the settings
