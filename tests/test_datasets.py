"""Data a new user brings: label maps with more classes than NASA's, no dataset.json, 16-bit overlays."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fabricated import write_nasa_folder

from csunet_train.config import TrainConfig
from csunet_train.data import DataError, load_data, read_folder
from napari_csunet.images.datasets import (
    NAMING_HINT,
    SUPER_CLASSES,
    decode_color_mask,
    find_samples,
)

OVERLAY = Path("nasa/Super1/val_annot/spot1_0d_0_mask.tif")


def test_label_maps_without_dataset_json_count_their_classes(tmp_path: Path) -> None:
    root = write_nasa_folder(tmp_path / "five", classes=5)
    (sample, *_) = find_samples(root, "train")
    assert sample.spec.names == () and sample.zero_is_class  # NASA's layout: 0 is a class
    items, names, _ = read_folder(root, "train")
    assert names == [] and set(np.unique(items[0].labels)) == {1, 2, 3, 4, 5}
    data = load_data(TrainConfig(out=str(tmp_path / "m.safetensors"), preset="csunet-tiny", data_dir=str(root)))
    assert data.class_names == [f"class {i}" for i in range(1, 6)] and len(data.class_colors) == 5
    assert any("dataset.json" in w for w in data.warnings)


@pytest.mark.parametrize(("named", "message"), [(["a", "b", "c"], "label 4 is above the 3 classes"),
                                                (["a", "b", "c", "d", "e"], None)])
def test_a_dataset_json_names_the_classes_and_a_short_one_says_how_to_fix_it(tmp_path: Path, named: list[str],
                                                                           message: str | None) -> None:
    root = write_nasa_folder(tmp_path / "five", classes=5, splits={"train": 1})
    (root / "dataset.json").write_text(json.dumps({"classes": named}))
    if message:
        with pytest.raises(DataError, match=message) as info:
            read_folder(root, "train")
        assert NAMING_HINT in str(info.value)
    else:
        assert read_folder(root, "train")[1] == named


def _as(overlay8: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in ("uint16", "int32"):
        return overlay8.astype(dtype) * 257  # NASA's 16-bit masks: pure blue is (0, 0, 65535)
    if dtype == "float32":
        return overlay8.astype(np.float32) / 255
    return overlay8


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32"])
def test_colour_overlays_decode_alike_at_any_bit_depth(data_dir: Path, tmp_path: Path, dtype: str) -> None:
    overlay8 = tifffile.imread(data_dir / OVERLAY)
    expected = decode_color_mask(overlay8, SUPER_CLASSES)
    assert set(np.unique(expected)) == {1, 2, 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown-colour warning would mean a wrong decode
        np.testing.assert_array_equal(decode_color_mask(_as(overlay8, dtype), SUPER_CLASSES), expected)
    root = tmp_path / "Super"
    for sub in ("val", "val_annot"):
        (root / sub).mkdir(parents=True)
    tifffile.imwrite(root / "val" / "spot.tif", tifffile.imread(data_dir / "nasa/Super1/val/spot1_0d_0.tif"))
    tifffile.imwrite(root / "val_annot" / "spot_mask.tif", _as(overlay8, dtype))
    items, names, _ = read_folder(root, "val")
    assert names == list(SUPER_CLASSES.names)
    np.testing.assert_array_equal(items[0].labels, expected)


def _plain_folder(root: Path, meta: dict | None) -> Path:
    """An images/ + masks/ set of two 32² images whose label maps use 0 for a phase (the left half)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        labels = np.zeros((32, 32), np.uint8)
        labels[:, 16:] = 1 + i  # 0 = matrix (half the image), 1/2 = the other phases
        tifffile.imwrite(root / "images" / f"im{i}.tif", (labels * 60 + 30).astype(np.uint8))
        tifffile.imwrite(root / "masks" / f"im{i}.tif", labels)
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize(("meta", "zero_is_class", "labels", "warned"), [
    ({"classes": ["matrix", "a", "b"], "zero_is_class": True}, True, {1, 2, 3}, False),
    ({"classes": ["a", "b"], "zero_is_class": False}, False, {0, 1, 2}, False),
    ({"classes": ["a", "b"]}, False, {0, 1, 2}, True),
    (None, False, {0, 1, 2}, True),
])
def test_dataset_json_says_whether_label_0_is_a_class(tmp_path: Path, meta: dict | None, zero_is_class: bool,
                                                      labels: set[int], warned: bool) -> None:
    root = _plain_folder(tmp_path / "set", meta)
    assert all(s.zero_is_class is zero_is_class for s in find_samples(root, None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items, names, _ = read_folder(root, "train")
    assert set(np.unique(np.concatenate([it.labels.ravel() for it in items]))) == labels
    assert names == (list(meta["classes"]) if meta else [])
    messages = [str(w.message) for w in caught if "label 0 covers" in str(w.message)]
    assert bool(messages) is warned
    if warned:
        assert '"zero_is_class": true' in messages[0] and "50%" in messages[0]


def test_the_caller_overrides_dataset_json_and_a_wrong_type_is_refused(tmp_path: Path) -> None:
    root = _plain_folder(tmp_path / "set", {"classes": ["matrix", "a", "b"], "zero_is_class": True})
    assert not find_samples(root, None, zero_is_class=False)[0].zero_is_class
    (root / "dataset.json").write_text(json.dumps({"classes": ["matrix", "a", "b"], "zero_is_class": "yes"}))
    with pytest.raises(ValueError, match='"zero_is_class" must be true'):
        find_samples(root, None)


@pytest.mark.parametrize(("rare_pixels", "images", "warned"), [(312, 1, True), (600, 2, True), (5000, 1, False),
                                                               (0, 0, False)])
def test_a_class_with_too_few_labelled_pixels_is_named_before_training(rare_pixels: int, images: int,
                                                                       warned: bool) -> None:
    from csunet_train.data import labelled_image, rare_class_warnings

    items = []
    for i in range(2):
        labels = np.ones((100, 100), np.uint8)
        if i < images:
            labels.flat[: rare_pixels // images] = 3  # the precipitates
        items.append(labelled_image(np.zeros((100, 100), np.uint8), labels, f"im{i}"))
    messages = rare_class_warnings(items, ["matrix", "ferrite", "precipitate"])
    assert len(messages) == int(warned)  # ferrite (absent) is not warned about
    if warned:
        assert messages[0].startswith(f"precipitate: {rare_pixels:,} labelled pixels in {images} image")
        assert "label a few more" in messages[0]
