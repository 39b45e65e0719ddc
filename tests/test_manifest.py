"""The manifest: it validates, its modules load cheaply, samples/reader/writer round-trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_csunet import samples
from napari_csunet._reader import napari_get_reader, read_labels
from napari_csunet._writer import write_labels

MANIFEST_PATH = Path(samples.__file__).with_name("napari.yaml")
MANIFEST = yaml.safe_load(MANIFEST_PATH.read_text())
PYTHON_NAMES = [c["python_name"] for c in MANIFEST["contributions"]["commands"]]


def test_the_manifest_is_a_plain_file_in_the_package():
    """No symlink: git on Windows checks symlinks out as text files, which npe2 cannot read."""
    assert MANIFEST_PATH.is_file() and not MANIFEST_PATH.is_symlink()
    assert not (Path(__file__).resolve().parents[1] / "napari.yaml").exists()  # one copy, no twin to drift


def test_manifest_validates_with_npe2():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-csunet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("python_name", [n for n in PYTHON_NAMES if "._qt." not in n])
def test_manifest_modules_import_neither_torch_nor_qt(python_name):
    module, attr = python_name.split(":")
    code = (f"import importlib, sys, json; m = importlib.import_module({module!r}); getattr(m, {attr!r}); "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = sorted(m for m in loaded if m.split(".")[0] in {"torch", "timm", "qtpy", "PyQt6", "PySide6", "napari"})
    assert not heavy, f"{python_name} imported {heavy[:5]}"


def test_widget_command_resolves():
    module, attr = next(n for n in PYTHON_NAMES if "._qt." in n).split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), attr))


@pytest.mark.parametrize(
    ("func", "layer_type", "shape", "classes"),
    [
        (samples.superalloy, "image", (512, 512), None),
        (samples.superalloy_labels, "labels", (512, 512), ["matrix", "secondary", "tertiary"]),
        (samples.ebc, "image", (1024, 1024), None),
        (samples.ebc_labels, "labels", (1024, 1024), ["background", "oxide", "crack"]),
    ],
)
def test_samples(func, layer_type, shape, classes):
    ((data, meta, kind),) = func()
    assert kind == layer_type and data.shape == shape
    if classes:
        assert set(np.unique(data)) == {1, 2, 3}
        assert meta["features"]["class"] == ["unlabelled", *classes]
        assert meta["colormap"][0] == "transparent"


def test_writer_then_reader_keeps_class_names(tmp_path):
    ((labels, meta, _),) = samples.ebc_labels()
    (written,) = write_labels(str(tmp_path / "ebc_labels.tif"), labels, meta)
    reader = napari_get_reader(written)
    assert reader is read_labels
    ((again, meta2, kind),) = reader(written)
    np.testing.assert_array_equal(again, labels)
    assert kind == "labels" and meta2["features"]["class"][1:] == ["background", "oxide", "crack"]
    assert meta2["colormap"][3] == "#ff00ff"


def test_reader_decodes_nasa_colour_overlays(data_dir):
    path = str(data_dir / "nasa/Super1/val_annot/spot1_0d_0_mask.tif")
    ((labels, meta, _),) = napari_get_reader(path)(path)
    assert labels.shape == (512, 512) and set(np.unique(labels)) <= {1, 2, 3} and (labels == 2).any()
    assert meta["features"]["class"][1:] == ["matrix", "secondary", "tertiary"]


@pytest.mark.parametrize("path", ["does_not_exist_labels.tif", "notes.txt", ["a_labels.tif", "b.csv"]])
def test_reader_declines_what_it_cannot_read(path):
    assert napari_get_reader(path) is None
