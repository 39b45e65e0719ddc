"""Hostile and broken inputs (issue 24): a catalogue that future bad inputs join.

Each case is a fabricated file or argument and the one clear error it must end in: no traceback,
no gigabytes allocated, no other model or run affected. Add a row to the matching table.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_csunet.model_catalog import STARTER_DIR
from napari_csunet.modelfile import ModelFileError, load_model_file, read_model_info

STARTER = STARTER_DIR / "starter-superalloy.safetensors"


def starter_description() -> dict[str, Any]:
    """The shipped superalloy model's header description, as a dict to mutate."""
    raw = STARTER.read_bytes()[:200_000]
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(json.loads(raw[8:8 + n])["__metadata__"]["napari_csunet"])


def fabricate_model_file(path: Path, mutate: Callable[[dict[str, Any]], Any] | None = None, text: str | None = None,
                         tensors: dict[str, np.ndarray] | None = None) -> Path:
    """A small (~3 KB) safetensors file whose header is the starter's description after ``mutate``
    (or the raw ``text``); its tensors are ``tensors`` (default: one 4x4 zero matrix)."""
    from safetensors.numpy import save_file

    if text is None:
        meta = starter_description()
        if mutate is not None:
            mutate(meta)
        text = json.dumps(meta)
    save_file(tensors or {"w": np.zeros((4, 4), np.float32)}, str(path), metadata={"napari_csunet": text})
    return path


def _swin(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["config"]["swin"].update(values)


def _config(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["config"].update(values)


def _top(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update(values)


def _nested(depth: int) -> str:
    return json.dumps(starter_description())[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"


#: (case, header mutation, what the one-line error must say); all refused before torch is imported
HEADER_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("embed_dim 1536", _swin(embed_dim=1536), "embed_dim: 1536 must be an integer in 8..1024"),
    ("embed_dim 512 (in range, too big for the tensors)", _swin(embed_dim=512), "needs at least"),
    ("depths 20000", _swin(depths=[20000, 2, 2, 2]), "depths: 20000 must be"),
    ("too many blocks", _swin(depths=[32, 32, 2, 2]), "blocks in all"),
    ("depths not a list", _swin(depths=7), "depths: expected a list"),
    ("three stages", _swin(depths=[2, 2, 2]), "depths: expected a list of 4..4"),
    ("window_size 0", _swin(window_size=0), "window_size: 0 must be"),
    ("negative window", _swin(window_size=-8), "window_size: -8 must be"),
    ("heads do not divide", _swin(num_heads=[3, 2, 4, 8]), "num_heads[0]: 3 does not divide"),
    ("mlp_ratio text", _swin(mlp_ratio="3"), "mlp_ratio"),
    ("unknown swin key", _swin(shift=1), "unknown keys ['shift']"),
    ("zero classes", _config(num_classes=0), "num_classes: 0 must be"),
    ("negative classes", _config(num_classes=-3), "num_classes: -3 must be"),
    ("classes as bool", _config(num_classes=True), "num_classes: True must be"),
    ("in_chans text", _config(in_chans="1"), "in_chans"),
    ("unknown arch", _config(arch="resnet-transformer-9000"), "not a known architecture"),
    ("cnn not a name", _config(cnn="../../etc/passwd"), "is not a CNN encoder name"),
    ("huge decoder", _config(arch="unet", decoder_channels=[4096] * 5), "needs at least"),
    ("config a list", _top(config=[1, 2]), "config: expected an object"),
    ("provenance a string", _top(provenance="trained by me"), "provenance: expected an object"),
    ("sources a list", _top(sources=["imagenet"]), "sources: expected an object"),
    ("class_names a number", _top(class_names=5), "class_names: expected a list"),
    ("class names objects", _top(class_names=[{}, {}, {}]), "class_names: expected a list"),
    ("colour 'x'", _top(class_colors=["x", "#0000ff", "#ff0000"]), "class_colors[0]: 'x' is not a colour"),
    ("colour '#12'", _top(class_colors=["#808080", "#12", "#ff0000"]), "class_colors[1]: '#12' is not a colour"),
    ("colors a number", _top(class_colors=5), "class_colors: expected a list"),
    ("name a number", _top(name=7), "name: expected a text"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
def test_bad_header_is_refused_by_name(tmp_path: Path, mutate, message: str) -> None:
    path = fabricate_model_file(tmp_path / "bad.safetensors", mutate)
    with pytest.raises(ModelFileError) as err:
        load_model_file(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    path = fabricate_model_file(tmp_path / "deep.safetensors", text=_nested(100_000))
    with pytest.raises(ModelFileError, match="nested too deeply"):
        read_model_info(path)


def test_header_cases_are_refused_before_torch_is_imported(tmp_path: Path) -> None:
    """Bounded memory: no case gets as far as importing torch, let alone building a network."""
    paths = [str(fabricate_model_file(tmp_path / f"{i}.safetensors", c[1])) for i, c in enumerate(HEADER_CASES)]
    code = ("import sys, json\nfrom napari_csunet.modelfile import ModelFileError, load_model_file\n"
            f"for p in {paths!r}:\n    try:\n        load_model_file(p)\n    except ModelFileError:\n        pass\n"
            "    else:\n        raise SystemExit('accepted ' + p)\nprint(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False


def test_unknown_cnn_is_refused_by_name(tmp_path: Path) -> None:
    mutate = _config(arch="unet", cnn="resnet9000", decoder_channels=[1, 1, 1, 1, 1])
    with pytest.raises(ModelFileError, match="unknown CNN encoder 'resnet9000'"):
        load_model_file(fabricate_model_file(tmp_path / "cnn.safetensors", mutate, tensors={"w": np.zeros(64)}))


def test_tensors_must_match_the_config_before_building(tmp_path: Path) -> None:
    """The shipped weights under a header that claims 4 classes: refused by tensor shape."""
    from safetensors.numpy import load_file

    def four(meta: dict[str, Any]) -> None:
        meta["config"]["num_classes"] = 4
        meta["class_names"] = [*meta["class_names"], "extra"]
        meta["class_colors"] = [*meta["class_colors"], "#00ff00"]

    path = fabricate_model_file(tmp_path / "four.safetensors", four, tensors=load_file(str(STARTER)))
    with pytest.raises(ModelFileError, match=r"wrong shape \['decoder.head"):
        load_model_file(path)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_model_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.safetensors"
    path.mkdir() if kind == "folder" else __import__("os").mkfifo(path)
    with pytest.raises(ModelFileError, match="not a regular file"):
        read_model_info(path)


# -- dataset.json ----------------------------------------------------------------------------------

def _tiny_folder(root: Path, dataset_json: str | None) -> Path:
    import tifffile

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    labels = np.ones((16, 16), np.uint8)
    tifffile.imwrite(root / "images" / "a.tif", labels * 50)
    tifffile.imwrite(root / "masks" / "a.tif", labels)
    if dataset_json is not None:
        (root / "dataset.json").write_text(dataset_json)
    return root


#: (case, dataset.json text, what the error must say)
DATASET_JSON_CASES = [
    ("not JSON", "{classes: [a, b]", "not valid JSON"),
    ("a list", '["matrix", "precipitate"]', "expected a JSON object, got a list"),
    ("classes a number", '{"classes": 5}', '"classes" must be a list of class names, not 5'),
    ("classes objects", '{"classes": [{"name": "a"}]}', '"classes" must be a list of class names'),
    ("colors a number", '{"classes": ["a", "b"], "colors": 5}', "colors: expected a list"),
    ("colour 'x'", '{"classes": ["a", "b"], "colors": ["x", "#ff0000"]}', "colors[0]: 'x' is not a colour"),
    ("colour '#12'", '{"classes": ["a", "b"], "colors": ["#12", "#ff0000"]}', "colors[0]: '#12' is not a colour"),
    ("colour count", '{"classes": ["a", "b"], "colors": ["#ff0000"]}', '2 "classes" but 1 "colors"'),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in DATASET_JSON_CASES], ids=[c[0] for c in DATASET_JSON_CASES])
def test_bad_dataset_json_is_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    from napari_csunet.datasets import MaskError, find_samples

    root = _tiny_folder(tmp_path / "set", text)
    with pytest.raises(MaskError) as err:
        find_samples(root, None)
    assert message in str(err.value) and "dataset.json" in str(err.value) and "\n" not in str(err.value)


def test_short_colours_are_normalised_where_they_enter(tmp_path: Path) -> None:
    from napari_csunet.datasets import find_samples

    root = _tiny_folder(tmp_path / "set", '{"classes": ["a", "b"], "colors": ["#F00", "00ff00"]}')
    assert find_samples(root, None)[0].spec.colors == ("#ff0000", "#00ff00")


# -- the catalogue ---------------------------------------------------------------------------------

@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("CSUNET_MODELS_DIR", str(folder))
    return folder


#: (case, how to make the bad file in the user's models folder, what the listing says about it)
BAD_CATALOGUE_FILES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("provenance a string", lambda p: fabricate_model_file(p, _top(provenance="x")), "provenance: expected an object"),
    ("deep JSON", lambda p: fabricate_model_file(p, text=_nested(100_000)), "nested too deeply"),
    ("not safetensors", lambda p: p.write_bytes(b"\x00" * 64), "not a safetensors model file"),
    ("a folder", lambda p: p.mkdir(), "not a regular file"),
    ("no description", lambda p: __import__("safetensors.numpy").numpy.save_file({"w": np.zeros(2)}, str(p)),
     "without a napari-csunet description"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in BAD_CATALOGUE_FILES], ids=[c[0] for c in BAD_CATALOGUE_FILES])
def test_a_bad_file_in_the_models_folder_is_listed_as_unreadable_and_skipped(models_dir: Path, make, reason: str) -> None:
    from napari_csunet.model_catalog import resolve_model, scan_model_files

    make(models_dir / "odd.safetensors")
    entries, unreadable = scan_model_files()
    assert [u["path"] for u in unreadable] == [str(models_dir / "odd.safetensors")]
    assert reason in unreadable[0]["reason"]
    assert "starter-superalloy" in [e["name"] for e in entries]
    assert resolve_model("starter-superalloy") == ("file", STARTER)


def test_csunet_models_lists_unreadable_files_with_their_reason(models_dir: Path, capsys) -> None:
    from napari_csunet.cli import main

    fabricate_model_file(models_dir / "odd.safetensors", _top(provenance="x"))
    assert main(["models", "--no-params", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["unreadable"][0]["path"].endswith("odd.safetensors")
    assert main(["models", "--no-params"]) == 0
    assert "cannot be read (skipped)" in capsys.readouterr().out


# -- names -----------------------------------------------------------------------------------------

def test_a_user_file_with_a_shipped_name_never_shadows_it(models_dir: Path) -> None:
    import shutil

    from napari_csunet.model_catalog import resolve_model, scan_model_files

    shutil.copy(STARTER, models_dir / "mine.safetensors")  # its header says "starter-superalloy"
    with pytest.warns(UserWarning, match="2 model files are named 'starter-superalloy'"):
        assert resolve_model("starter-superalloy") == ("file", STARTER)
    user = [e for e in scan_model_files()[0] if e["kind"] == "user"]
    assert user[0]["shadowed"] is True


@pytest.mark.parametrize(("job", "start", "expected"), [
    ({"mode": "finetune", "model": "starter-superalloy", "out": "X.safetensors"}, "starter-superalloy",
     r"starter-superalloy-ft-\d{8}-\d{6}"),
    ({"mode": "finetune", "model": "m", "out": "X.safetensors", "name": "mine"}, "starter-superalloy", "mine"),
    ({"mode": "train", "preset": "csunet-tiny", "out": "x/starter-ebc.safetensors"}, "", r"starter-ebc-ft-\d{8}-\d{6}"),
    ({"mode": "train", "preset": "csunet-tiny", "out": "x/own.safetensors"}, "", "own"),
])
def test_a_saved_model_never_takes_its_start_s_or_a_shipped_name(job: dict, start: str, expected: str) -> None:
    import re

    from csunet_train.config import TrainConfig

    assert re.fullmatch(expected, TrainConfig.from_dict(job).model_name(start))


def test_a_shipped_name_is_refused_for_a_new_model() -> None:
    from csunet_train.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="'starter-superalloy' is a shipped model's name"):
        TrainConfig.from_dict({"mode": "finetune", "model": "m", "out": "X.safetensors", "name": "starter-superalloy"})
    recipe_out = str(STARTER_DIR / "starter-superalloy.safetensors")  # the starter recipe regenerates it
    assert TrainConfig.from_dict({"mode": "finetune", "model": "m", "out": recipe_out, "name": "starter-superalloy"})
