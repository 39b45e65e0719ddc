"""Hostile and broken inputs (issue 24): a catalogue that future bad inputs join.

Each case is a fabricated file or argument and the one clear error it must end in: no traceback,
no gigabytes allocated, no other model or run affected. Add a row to the matching table.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_csunet.models.catalog import STARTER_DIR
from napari_csunet.models.modelfile import ModelFileError, load_model_file, read_model_info
from napari_csunet.models.registry import PRESETS

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
    ("metrics a string", _top(provenance={"metrics": "0.9"}), "provenance.metrics: expected dict, got str"),
    ("steps a bool", _top(provenance={"steps": True}), "provenance.steps: expected int, got bool"),
    ("val_images an object", _top(provenance={"val_images": {}}), "provenance.val_images: expected list"),
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


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_passes_the_header_checks(preset: str) -> None:
    """The gates must never refuse a real model: each preset's config is in range and its
    parameter floor is below what its network (built on the meta device) really holds."""
    from napari_csunet.models import get_preset
    from napari_csunet.models.header_check import _expected_shapes, check_config, parameter_floor

    config = get_preset(preset).config
    as_json = json.loads(json.dumps(config.to_dict()))
    check_config(as_json)
    held = sum(int(np.prod(s)) for _, s in _expected_shapes(json.dumps(config.to_dict(), sort_keys=True)))
    assert parameter_floor(as_json) < held


@pytest.mark.parametrize(("text", "message"), [
    (_nested(100_000), "nested too deeply"),
    (json.dumps({"provenance": {"log": "x" * 5_000_000}}), "at most 4,000,000"),
    ("[1, 2", "invalid model description"),
])
def test_description_that_is_not_sane_json_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = fabricate_model_file(tmp_path / "deep.safetensors", text=text)
    with pytest.raises(ModelFileError, match=message):
        read_model_info(path)


def test_header_cases_are_refused_before_torch_is_imported(tmp_path: Path) -> None:
    """Bounded memory: no case gets as far as importing torch, let alone building a network."""
    paths = [str(fabricate_model_file(tmp_path / f"{i}.safetensors", c[1])) for i, c in enumerate(HEADER_CASES)]
    code = ("import sys, json\nfrom napari_csunet.models.modelfile import ModelFileError, load_model_file\n"
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
    path.mkdir() if kind == "folder" else os.mkfifo(path)
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
    from napari_csunet.images.datasets import MaskError, find_samples

    root = _tiny_folder(tmp_path / "set", text)
    with pytest.raises(MaskError) as err:
        find_samples(root, None)
    assert message in str(err.value) and "dataset.json" in str(err.value) and "\n" not in str(err.value)


def test_short_colours_are_normalised_where_they_enter(tmp_path: Path) -> None:
    from napari_csunet.images.datasets import find_samples

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
    from napari_csunet.models.catalog import resolve_model, scan_model_files

    make(models_dir / "odd.safetensors")
    entries, unreadable = scan_model_files()
    assert [u["path"] for u in unreadable] == [str(models_dir / "odd.safetensors")]
    assert reason in unreadable[0]["reason"]
    assert "starter-superalloy" in [e["name"] for e in entries]
    assert resolve_model("starter-superalloy") == ("file", STARTER)


def test_csunet_models_lists_unreadable_files_with_their_reason(models_dir: Path, capsys) -> None:
    from napari_csunet.cli.main import main

    fabricate_model_file(models_dir / "odd.safetensors", _top(provenance="x"))
    assert main(["models", "--no-params", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["unreadable"][0]["path"].endswith("odd.safetensors")
    assert main(["models", "--no-params"]) == 0
    assert "cannot be read (skipped)" in capsys.readouterr().out


# -- names -----------------------------------------------------------------------------------------

def test_a_user_file_with_a_shipped_name_never_shadows_it(models_dir: Path) -> None:
    import shutil

    from napari_csunet.models.catalog import resolve_model, scan_model_files

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


# -- one error path: a user's mistake is one line, exit code 2, no traceback -------------------------

def _labelled_folder(root: Path) -> Path:
    return _tiny_folder(root, '{"classes": ["matrix", "secondary", "tertiary"]}')


def _bad_header(tmp: Path) -> str:
    return str(fabricate_model_file(tmp / "bad.safetensors", _swin(embed_dim=1536)))


def _existing(tmp: Path) -> str:
    (tmp / "old.safetensors").write_bytes(b"a model worth keeping")
    return str(tmp / "old.safetensors")


def _a_file(tmp: Path) -> str:
    (tmp / "file").write_text("x")
    return str(tmp / "file")


def _finetune(model: str = "starter-superalloy", out: str | Callable[[Path], str] = "new.safetensors",
              data: Callable[[Path], Path] = _labelled_folder, *extra: str) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        where = out(tmp) if callable(out) else str(tmp / out)
        return ["finetune", "--model", model(tmp) if callable(model) else model, "--data", str(data(tmp / "set")),
                "--out", where, "--steps", "1", "--device", "cpu", *extra]
    return argv


def _segment(model: str | Callable[[Path], str] = "starter-superalloy",
             out: Callable[[Path], str] = lambda t: str(t / "out")) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        image = _tiny_folder(tmp / "set", None) / "images" / "a.tif"
        return ["segment", str(image), "--model", model(tmp) if callable(model) else model, "--out", out(tmp),
                "--device", "cpu"]
    return argv


def _evaluate(dataset_json: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["evaluate", "--data", str(_tiny_folder(tmp / "set", dataset_json)), "--model",
                        "starter-superalloy", "--device", "cpu"]


#: (case, argv from a temporary folder, what the one line says); none gets as far as training
CLI_CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("segment: bad header", _segment(model=_bad_header), "embed_dim: 1536 must be"),
    ("segment: unknown model", _segment(model="starter-nothing"), "unknown model 'starter-nothing'"),
    ("segment: --out is a file", _segment(out=_a_file), "is a file, not a folder"),
    ("segment: a FIFO as --model", _segment(model=lambda t: (os.mkfifo(t / "m.safetensors"), str(t / "m.safetensors"))[1]),
     "not a regular file"),
    ("evaluate: dataset.json a list", _evaluate("[1, 2]"), "expected a JSON object, got a list"),
    ("evaluate: colours", _evaluate('{"classes": ["a"], "colors": ["#12"]}'), "'#12' is not a colour"),
    ("finetune: bad header", _finetune(model=_bad_header), "embed_dim: 1536 must be"),
    ("finetune: --out exists", _finetune(out=_existing), "exists; pass --overwrite"),
    ("finetune: --out a folder", _finetune(out=lambda t: str(t)), "is a folder; give a file name"),
    ("finetune: --out not a model file", _finetune(out="m.txt"), "a model file ends in .safetensors"),
    ("finetune: --out under a file", _finetune(out=lambda t: _a_file(t) + "/m.safetensors"), "is a file, not a folder"),
    ("finetune: shipped --name", _finetune("starter-superalloy", "new.safetensors", _labelled_folder, "--name",
                                           "starter-superalloy"), "is a shipped model's name"),
]


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_user_errors_are_one_line_and_exit_code_2(tmp_path: Path, capsys, models_dir: Path, argv, message: str) -> None:
    from napari_csunet.cli.main import main

    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "new.safetensors").exists()


def test_cli_refuses_bad_headers_before_importing_torch(tmp_path: Path) -> None:
    """`segment` and `finetune` with a hostile header: one line, exit 2, torch never imported."""
    bad = _bad_header(tmp_path)
    runs = [make(model=bad)(tmp_path / name) for name, make in (("s", _segment), ("f", _finetune))]
    code = ("import json, sys\nfrom napari_csunet.cli.main import main\n"
            f"codes = [main(argv) for argv in {runs!r}]\nprint(json.dumps([codes, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [[2, 2], False]
    assert out.stderr.count("embed_dim: 1536 must be") == 2 and "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from napari_csunet.cli.main import main

    with pytest.raises(ModelFileError):
        main(["--debug", *_segment(model=_bad_header)(tmp_path)])


@pytest.mark.parametrize(("exc", "line"), [
    (FileNotFoundError(2, "No such file or directory", "x.tif"), "No such file or directory: 'x.tif'"),
    (KeyError("unknown model 'm'"), "unknown model 'm'"),
    (MemoryError(), "out of memory"),
    (ValueError("bad\nsecond line"), "bad"),
    (ValueError("name \x1b[31mred\r!"), "name \\x1b[31mred\\r!"),
    (RuntimeError("a bug"), None),
    (AttributeError("'str' object has no attribute 'get'"), None),
])
def test_which_failures_are_the_user_s(exc: BaseException, line: str | None) -> None:
    from napari_csunet.cli.errors import user_error_message

    message = user_error_message(exc)
    if line is None:
        assert message is None
    else:
        assert message is not None and line in message and "\n" not in message


def test_sigterm_stops_a_command_like_ctrl_c(capsys) -> None:
    import argparse
    import signal

    from napari_csunet.cli.errors import run_command

    def handler(args: argparse.Namespace) -> int:
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    previous = signal.getsignal(signal.SIGTERM)
    assert run_command(handler, argparse.Namespace()) == 130
    assert "interrupted" in capsys.readouterr().err and signal.getsignal(signal.SIGTERM) is previous


# -- outputs stay consistent -----------------------------------------------------------------------

def test_two_runs_never_write_one_output(tmp_path: Path, capsys) -> None:
    from napari_csunet.cli.main import main
    from napari_csunet.cli.outputs import out_lock

    argv = _segment()(tmp_path)
    (tmp_path / "out").mkdir()
    with out_lock(tmp_path / "out"):
        assert main(argv) == 2
    assert "is being written by another csunet run" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.tif"))
    with out_lock(tmp_path / "m.safetensors"), pytest.raises(ValueError, match="another csunet run"):
        with out_lock(tmp_path / "m.safetensors"):
            pass
    with out_lock(tmp_path / "m.safetensors"):  # released: the next run goes ahead
        pass


@pytest.mark.parametrize(("signals", "done"), [(1, ["a.tif", "b.tif"]), (2, ["a.tif"])])
def test_an_interrupted_batch_writes_the_summary_of_what_finished(tmp_path: Path, monkeypatch, capsys, signals: int,
                                                                  done: list[str]) -> None:
    """SIGTERM while b.tif is read: b is finished, c is not started; a second signal stops b too."""
    import shutil
    import signal

    from napari_csunet.cli import segment as segment_cli
    from napari_csunet.cli.main import main

    folder = _tiny_folder(tmp_path / "set", None) / "images"
    for name in ("b.tif", "c.tif"):
        shutil.copy(folder / "a.tif", folder / name)
    real = segment_cli.read_image

    def read(path: Path):
        if Path(path).name == "b.tif":
            for _ in range(signals):
                signal.raise_signal(signal.SIGTERM)
        return real(path)

    monkeypatch.setattr(segment_cli, "read_image", read)
    assert main(["segment", str(folder), "--model", "starter-superalloy", "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--tile", "256"]) == 130
    summary = (tmp_path / "o" / "summary.csv").read_text()
    assert [n for n in ("a.tif", "b.tif", "c.tif") if n in summary] == done
    assert f"interrupted after {len(done)} of 3" in capsys.readouterr().err


def test_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    import os
    import time

    from napari_csunet.atomic import STALE_AFTER_S, atomic_write_bytes

    target = tmp_path / "m.safetensors"
    dead = tmp_path / f".tmp-{target.name}-999999999-abc.safetensors"  # above any pid_max
    old = tmp_path / f".tmp-{target.name}-k3j4h5.safetensors"  # before pids were in the name
    live = tmp_path / f".tmp-{target.name}-{os.getpid()}-xyz.safetensors"
    for p in (dead, old, live):
        p.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - STALE_AFTER_S - 10,) * 2)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert not dead.exists() and not old.exists() and live.exists()


def test_model_files_follow_the_umask(tmp_path: Path) -> None:
    import os

    import torch

    from napari_csunet.models import get_preset
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    info = ModelInfo(get_preset("csunet-tiny").config, ["a", "b", "c"])
    previous = os.umask(0o022)
    try:
        path = save_model_file(tmp_path / "m.safetensors", torch.nn.Linear(2, 2), info)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file of the library's


def test_training_refuses_an_image_whose_header_claims_too_many_pixels(tmp_path: Path) -> None:
    import tifffile

    from napari_csunet.images.datasets import find_samples
    from napari_csunet.images.reading import ImageError

    root = _tiny_folder(tmp_path / "set", None)
    tifffile.imwrite(root / "images" / "a.tif", shape=(20000, 20000), dtype=np.uint8)  # a sparse file: 8 KB on disk
    with pytest.raises(ImageError, match=r"20000 x 20000 pixels \(381 Mpx\) is more than"):
        find_samples(root, None)[0].load()


@pytest.mark.parametrize(("cell", "written"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK"), ("+1", "'+1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM"),
    ("matrix", "matrix"),
])
def test_csv_cells_never_run_as_formulas(cell: str, written: str) -> None:
    from napari_csunet.measure.report import statistics_csv

    text = statistics_csv([{"class": cell, "label": 1, "pixels": -3}], (), ("class", "label", "pixels"))
    assert text.splitlines()[1].lstrip('"').startswith(written) and text.rstrip().endswith(",-3")


def test_control_characters_are_shown_escaped() -> None:
    from napari_csunet.safetext import shown

    assert shown("a\x1b[2Jb\rc\x07") == "a\\x1b[2Jb\\rc\\x07" and shown("µm ok") == "µm ok"


@pytest.mark.parametrize("name", ["$\\frac{a$", "a_{b}^c $x", "width: 100%; }</style><script>", "\x1b[31mred"])
def test_report_plots_draw_any_class_name(name: str) -> None:
    from napari_csunet.measure.plots import fractions_png, size_histogram_png

    colors = {name: "#ff0000", "matrix": "#808080"}
    rows = [{"class": name, "area_fraction": 0.3}, {"class": "matrix", "area_fraction": 0.7}]
    assert fractions_png(rows, colors).startswith(b"\x89PNG")
    assert size_histogram_png({name: np.array([1.0, 2.0, 3.0])}, colors).startswith(b"\x89PNG")


def test_one_stray_label_does_not_make_a_200_class_model(tmp_path: Path) -> None:
    from csunet_train.config import TrainConfig
    from csunet_train.data import DataError, labelled_image, load_data

    labels = np.ones((64, 64), np.uint8)
    labels[:20] = 2
    labels[40, 40] = 200
    item = labelled_image(np.zeros((64, 64), np.uint8), labels, "img")
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), mode="finetune", model="m.safetensors")
    with pytest.raises(DataError, match=r"label 200 \(1 pixel\(s\) in img\) would make 200 classes, but only 3"):
        load_data(cfg, ["a", "b", "c"], train=[item])


# -- finetune --resume -----------------------------------------------------------------------------

def _checkpoint(path: Path, run_steps: int) -> Path:
    hyper = {"lr": 1e-4, "crop": 256, "batch_size": 2, "seed": 5}
    return fabricate_model_file(path, _top(name="mine-ft", provenance={"mode": "finetune", "run_steps": run_steps,
                                                                       "hyperparameters": hyper}))


@pytest.mark.parametrize(("flags", "expected"), [
    (["--steps", "10"], {"steps": 7, "lr": 1e-4, "batch_size": 2, "seed": 8, "name": "mine-ft"}),
    (["--steps", "10", "--lr", "0.001", "--seed", "1"], {"steps": 7, "lr": 1e-3, "seed": 1}),
])
def test_finetune_resume_continues_the_checkpoint_at_out(tmp_path: Path, flags: list[str], expected: dict) -> None:
    from csunet_train.cli import config_from_args
    from napari_csunet.cli.main import build_parser

    out = _checkpoint(tmp_path / "ft.safetensors", run_steps=3)
    cfg = config_from_args(build_parser().parse_args(["finetune", "--resume", "--out", str(out), *flags]))
    assert cfg.model == str(out) and cfg.mode == "finetune"
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize(("make", "flags", "message"), [
    (None, [], "no fine-tune saved at --out"),
    (lambda p: _checkpoint(p, 10), ["--steps", "10"], "has run 10 of 10 steps"),
    (lambda p: fabricate_model_file(p, _top(provenance={"mode": "train"})), [], "not a fine-tune checkpoint"),
])
def test_finetune_resume_refuses_what_it_cannot_continue(tmp_path: Path, make, flags: list[str], message: str) -> None:
    from csunet_train.cli import config_from_args
    from csunet_train.config import ConfigError
    from napari_csunet.cli.main import build_parser

    out = tmp_path / "ft.safetensors"
    if make is not None:
        make(out)
    with pytest.raises(ConfigError, match=message):
        config_from_args(build_parser().parse_args(["finetune", "--resume", "--out", str(out), *flags]))


@pytest.mark.parametrize("colors", [["x", "#00ff00"], ["#12", "#00ff00"], 5])
def test_the_annotation_set_refuses_bad_colours_before_writing(tmp_path: Path, colors) -> None:
    from napari_csunet.images.annotations import AnnotationError, AnnotationStore

    store = AnnotationStore(tmp_path / "ann")
    with pytest.raises(AnnotationError, match="colour|expected a list"):
        store.add(np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8), name="a", class_names=["a", "b"],
                  class_colors=colors)
    assert not (tmp_path / "ann").exists()


@pytest.mark.parametrize(("meta", "colors"), [
    ({"class_names": ["a", "b"], "class_colors": ["x", "#12"]}, ["#1f77b4", "#ff7f0e"]),
    ({"class_names": ["a", "b"], "class_colors": ["#ff0000"]}, ["#1f77b4", "#ff7f0e"]),
    ({"class_names": ["a", "b"], "class_colors": ["#F00", "#00ff00"]}, ["#ff0000", "#00ff00"]),
    ({"class_names": "ab"}, None),
    ("deep", None),
])
def test_a_label_tiff_s_stored_colours_are_checked(tmp_path: Path, meta: dict | str, colors: list[str] | None) -> None:
    import tifffile

    from napari_csunet.plugin.reader import classes_from_tiff

    path = tmp_path / "l.tif"
    text = "[" * 100_000 + "]" * 100_000 if meta == "deep" else json.dumps(meta)
    tifffile.imwrite(path, np.ones((4, 4), np.uint8), description=text)
    found = classes_from_tiff(path)
    assert (found[1] if found else None) == colors


def test_cli_warnings_are_one_plain_line() -> None:
    import warnings

    from napari_csunet.cli.errors import plain_warnings

    with plain_warnings():
        assert warnings.formatwarning("two files\x1b", UserWarning, "x.py", 3) == "warning: two files\\x1b\n"
        assert "x.py:3" in warnings.formatwarning("old", DeprecationWarning, "x.py", 3)


# -- job files ---------------------------------------------------------------------------------------

#: (case, job keys over a valid fine-tune job, what the ConfigError says)
JOB_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("lr a word", {"lr": "fast"}, "lr: 'fast' must be float"),
    ("steps a bool", {"steps": True}, "steps: True must be int"),
    ("class_names a text", {"class_names": "ab"}, "class_names: 'ab' must be list or null"),
    ("pairs an object", {"pairs": {"image": "a"}}, "pairs: {'image': 'a'} must be list"),
    ("amp a number", {"amp": 1}, "amp: 1 must be bool"),
    ("bad colour", {"class_names": ["a"], "class_colors": ["#12"]}, "class_colors[0]: '#12' is not a colour"),
    ("shipped name", {"name": "starter-ebc"}, "'starter-ebc' is a shipped model's name"),
]


@pytest.mark.parametrize(("keys", "message"), [c[1:] for c in JOB_CASES], ids=[c[0] for c in JOB_CASES])
def test_a_bad_job_file_is_refused_by_key(tmp_path: Path, keys: dict[str, Any], message: str) -> None:
    from csunet_train.config import ConfigError, load_job

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"mode": "finetune", "model": "m.safetensors", "out": str(tmp_path / "o.safetensors")}
                              | keys))
    with pytest.raises(ConfigError) as err:
        load_job(job)
    assert message in str(err.value)


@pytest.mark.parametrize(("raw", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"out": "\xff\xfe"}', "cannot be parsed"),
    (b"[1, 2]", "a job file is a mapping"),
])
def test_a_job_file_that_is_not_a_json_object(tmp_path: Path, raw: bytes, message: str) -> None:
    from csunet_train.config import ConfigError, load_job

    (tmp_path / "job.json").write_bytes(raw)
    with pytest.raises(ConfigError, match=message):
        load_job(tmp_path / "job.json")


@pytest.mark.parametrize("text", ["[1, 2]", '{"entries": 5}', "[" * 100_000 + "]" * 100_000, "{bad"])
def test_a_broken_annotation_index_is_named(tmp_path: Path, text: str) -> None:
    from napari_csunet.images.annotations import AnnotationError, AnnotationStore

    store = AnnotationStore(tmp_path / "ann")
    store.root.mkdir()
    store.index_path.write_text(text)
    with pytest.raises(AnnotationError, match="annotation index"):
        store.entries()
