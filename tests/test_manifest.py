"""The manifest: one file at the repository's top level, read by every install; samples/reader/writer
round-trip. (That it validates and that its modules load cheaply: tests/test_packaging.py.)"""

from __future__ import annotations

import subprocess
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_csunet.plugin import samples
from napari_csunet.plugin.reader import napari_get_reader, read_labels
from napari_csunet.plugin.writer import write_labels

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = ROOT / "napari.yaml"
MANIFEST = yaml.safe_load(MANIFEST_PATH.read_text())
PYTHON_NAMES = [c["python_name"] for c in MANIFEST["contributions"]["commands"]]


def test_the_manifest_is_one_plain_file_at_the_top_level():
    """No symlink (git on Windows checks symlinks out as text files, which npe2 cannot read) and no
    tracked twin: the package's copy is what the build hook (hatch_build.py) writes at install."""
    assert MANIFEST_PATH.is_file() and not MANIFEST_PATH.is_symlink()
    tracked = subprocess.run(["git", "ls-files", "*napari.yaml"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0:  # a checkout (not an unpacked sdist)
        assert tracked.stdout.split() == ["napari.yaml"]
    installed = files("napari_csunet") / "napari.yaml"  # what npe2 reads: this install's copy
    assert installed.read_text() == MANIFEST_PATH.read_text(), "stale manifest: run scripts/setup_env.sh"


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
