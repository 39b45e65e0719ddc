"""The SEM data bar: found on a fabricated SEM image, never on NASA's bar-free micrographs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_csunet.images.databar import DataBar, clear_databar, detect_databar, predict_outside
from napari_csunet.plugin.samples import DATA_DIR

TESTS = Path(__file__).parent / "data"
NASA_IMAGES = sorted([*TESTS.glob("super1_test/images/*.tif"), *TESTS.glob("ebc2_test/images/*.tif"),
                      *TESTS.glob("nasa/*/val/*.tif"), DATA_DIR / "super1_spot2_0d_0.tif",
                      DATA_DIR / "ebc2_040617-2_S127-2-0015.tif"])


@pytest.mark.parametrize("side", ["bottom", "top"])
@pytest.mark.parametrize("rows", [30, 60, 120])
def test_fabricated_data_bar_is_found_to_the_row(sem_image, side, rows):
    from conftest import sem_with_databar

    image = sem_with_databar(rows, side)
    assert detect_databar(image) == DataBar(side, rows)


def test_a_real_jpeg_compressed_data_bar_is_found():
    import skimage.io

    image = skimage.io.imread(TESTS / "databar" / "nanocomposite_orig_0.5wtpctun_2_bottom.png")
    assert detect_databar(image) == DataBar("bottom", 30)


def test_rgb_and_16_bit_images_with_a_bar(sem_image):
    assert detect_databar(np.repeat(sem_image[..., None], 3, axis=-1)) == DataBar("bottom", 60)
    assert detect_databar(sem_image.astype(np.uint16) * 257) == DataBar("bottom", 60)


@pytest.mark.parametrize("path", NASA_IMAGES, ids=lambda p: p.name)
def test_no_false_bar_on_nasa_micrographs(path):
    assert len(NASA_IMAGES) >= 10
    assert detect_databar(tifffile.imread(path)) is None


@pytest.mark.parametrize("image", [np.zeros((100, 80), np.uint8), np.full((100, 80), 7, np.uint16)],
                         ids=["black", "flat"])
def test_a_blank_image_is_not_a_bar(image):
    assert detect_databar(image) is None  # nothing above the "bar": it never ends


def test_clear_databar_zeroes_the_bar_rows_of_2d_and_stacks():
    labels = np.ones((2, 10, 4), np.uint8)
    cleared = clear_databar(labels, DataBar("top", 3))
    assert (cleared[:, :3] == 0).all() and (cleared[:, 3:] == 1).all() and (labels == 1).all()
    assert (clear_databar(labels[0], DataBar("bottom", 4))[6:] == 0).all()
    assert (clear_databar(labels[0], None) == 1).all()


@dataclass
class _Pred:
    labels: np.ndarray
    probs: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


@pytest.mark.parametrize("shape", [(50, 30), (50, 30, 3), (2, 50, 30)])
def test_the_bar_never_reaches_the_model(shape):
    seen = []

    def predict(image: np.ndarray) -> _Pred:
        seen.append(image.shape)
        rows = image.shape[1] if len(shape) == 3 and shape[-1] != 3 else image.shape[0]
        lead = shape[:1] if len(shape) == 3 and shape[-1] != 3 else ()
        return _Pred(np.full((*lead, rows, 30), 2, np.uint8), np.ones((*lead, 3, rows, 30), np.float32))

    pred = predict_outside(predict, np.ones(shape, np.uint8), DataBar("bottom", 8))
    assert 42 in seen[0] and 50 not in seen[0]
    assert pred.labels.shape[-2:] == (50, 30) and (pred.labels[..., 42:, :] == 0).all()
    assert (pred.labels[..., :42, :] == 2).all() and pred.probs.shape[-2] == 50 and pred.uncertainty is None


def test_bad_bars_are_refused():
    with pytest.raises(ValueError, match="bottom"):
        DataBar("left", 3)
    with pytest.raises(ValueError, match="whole image"):
        predict_outside(lambda im: im, np.ones((5, 5)), DataBar("bottom", 5))
