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

    from napari_csunet.samples import DATA_DIR

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
