from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"

os.environ.setdefault("CSUNET_OFFLINE_TESTS", "1")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Weight cache and user model folder in temp dirs: tests never touch the user's files."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CSUNET_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("CSUNET_MODELS_DIR", str(base / "models"))
    monkeypatch.setenv("CSUNET_ANNOTATIONS_DIR", str(base / "annotations"))
    monkeypatch.setenv("CSUNET_CONFIG_DIR", str(base / "config"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def sem_with_databar(bar_rows: int = 60, side: str = "bottom") -> np.ndarray:
    """A real micrograph (NASA Super1 sample) with a fabricated SEM data bar of text and a scale bar.

    Built like the instruments draw it: a separator line, a black strip with white text and a white
    scale bar with end ticks; the micrograph keeps its full 512 x 512 pixels above (or below) it.
    """
    import tifffile
    from PIL import Image, ImageDraw

    from napari_csunet.plugin.samples import DATA_DIR

    micrograph = tifffile.imread(DATA_DIR / "super1_spot2_0d_0.tif")
    width = micrograph.shape[1]
    bar = Image.new("L", (width, bar_rows), 0)
    draw = ImageDraw.Draw(bar)
    draw.line([(0, 0), (width, 0)], fill=255, width=2)
    draw.text((8, 10), "HV 15.00 kV  WD 10.1 mm  mag 20 000 x  HFW 6.4 um  det TLD", fill=255)
    draw.text((8, 30), "SE  spot 3.0  2026-11-27  Ni superalloy", fill=200)
    draw.rectangle([(width - 140, 36), (width - 20, 40)], fill=255)  # the scale bar ...
    draw.line([(width - 140, 30), (width - 140, 46)], fill=255, width=2)  # ... with end ticks
    draw.line([(width - 20, 30), (width - 20, 46)], fill=255, width=2)
    draw.text((width - 110, 14), "2 um", fill=255)
    strip = np.asarray(bar, dtype=np.uint8)
    return np.vstack([micrograph, strip] if side == "bottom" else [strip[::-1], micrograph])


@pytest.fixture
def sem_image() -> np.ndarray:
    """A 572 x 512 SEM micrograph whose last 60 rows are the instrument's data bar."""
    return sem_with_databar()


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A csunet-tiny model file (random weights, the superalloy classes) for the command-line tests."""
    from fabricated import tiny_model_file

    return tiny_model_file(tmp_path_factory.mktemp("model"))


# -- GUI fixtures (test_gui*.py): napari's make_napari_viewer, the plugin docked, a tiny model ----

TINY_CLASSES = ["matrix", "secondary", "tertiary"]


@pytest.fixture(scope="session")
def tiny_model_bytes(tmp_path_factory) -> bytes:
    """A csunet-tiny model file (random weights) for the superalloy classes, built once per session."""
    from napari_csunet._qt.compat import avoid_triton_llvm_clash

    avoid_triton_llvm_clash()  # a viewer may exist already (Mesa's LLVM): torch must not pull triton in
    import torch

    from napari_csunet.models import build_model, get_preset
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    torch.manual_seed(0)
    config = get_preset("csunet-tiny").config
    info = ModelInfo(config, TINY_CLASSES, ["#808080", "#0000ff", "#ff0000"], preset="csunet-tiny", name="tiny-test")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model_file(path, build_model(config), info)
    return path.read_bytes()


@pytest.fixture
def tiny_model(tiny_model_bytes) -> Path:
    """The tiny model file in the user's model folder (so the Model panel lists it)."""
    from napari_csunet.models.catalog import user_models_dir

    path = user_models_dir() / "tiny-test.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_model_bytes)
    return path


@pytest.fixture
def docked(make_napari_viewer):
    """The plugin docked in a fresh viewer (``docked.viewer``), no model loaded yet."""
    from napari_csunet._qt.main_widget import CSUNetWidget

    _, w = make_napari_viewer().window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    assert isinstance(w, CSUNetWidget)
    return w


@pytest.fixture
def widget(docked, tiny_model, qtbot):
    """The docked plugin with the tiny model loaded and the superalloy sample open."""
    w = docked
    w.viewer.open_sample("napari-csunet", "superalloy")
    w.model_panel.refresh_files()
    items = [w.model_panel.files.item(i).text() for i in range(w.model_panel.files.count())]
    w.model_panel.files.setCurrentRow(next(i for i, t in enumerate(items) if t.startswith("tiny-test")))
    w.model_panel.load_selected()
    qtbot.waitUntil(lambda: w.session.segmenter is not None and not w.session.busy, timeout=60_000)
    return w
