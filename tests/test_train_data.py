"""Training data rules: label checks, colour decoding, validation splits, crops, determinism, loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from csunet_train.config import ConfigError, TrainConfig, load_job, load_recipe, recipe_names
from csunet_train.data import (
    DataError,
    check_classes,
    holdout_blocks,
    holdout_region,
    labelled_image,
    load_data,
    read_folder,
    read_pairs,
    split_validation,
)
from csunet_train.losses import segmentation_loss
from csunet_train.sampling import CropDataset, prepare_image
from napari_csunet.models.catalog import resolve_model


def _item(h: int = 300, w: int = 300, labels: np.ndarray | None = None, name: str = "img"):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w), dtype=np.uint8)
    if labels is None:
        labels = np.zeros((h, w), np.uint8)
        labels[: h // 2] = 1
        labels[h // 2:] = 2
    return labelled_image(image, labels, name)


@pytest.mark.parametrize(
    ("image_shape", "labels", "message"),
    [
        ((64, 64), np.ones((64, 32), np.uint8), "labels are 64x32 but the image is 64x64"),
        ((64, 64), np.ones((64, 64), np.float32), "must hold integers"),
        ((64, 64), -np.ones((64, 64), np.int16), "negative label"),
        ((64, 64), np.ones((64, 64, 3), np.uint8), "2D label map"),
        ((64, 64, 7), np.ones((64, 64), np.uint8), "7 channels"),
    ],
)
def test_bad_pairs_are_refused_with_a_clear_message(image_shape, labels, message) -> None:
    with pytest.raises(DataError, match=message):
        labelled_image(np.zeros(image_shape, np.uint8), labels, "x")


def test_pair_files_must_be_label_maps(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "a_rgb.tif", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="pair label files must be label maps"):
        read_pairs([{"image": str(tmp_path / "a.tif"), "labels": str(tmp_path / "a_rgb.tif")}])
    with pytest.raises(DataError, match="no such file"):
        read_pairs([{"image": str(tmp_path / "missing.tif"), "labels": str(tmp_path / "a.tif")}])


def test_labels_above_the_classes_and_empty_label_sets_are_errors() -> None:
    high = _item(labels=np.full((300, 300), 4, np.uint8), name="high")
    with pytest.raises(DataError, match="high: label 4 is above the 3 classes"):
        check_classes([high], [], ["a", "b", "c"])
    empty = _item(labels=np.zeros((300, 300), np.uint8))
    with pytest.raises(DataError, match="training labels are empty"):
        check_classes([empty], [], ["a", "b"])


def test_a_class_only_in_validation_is_a_warning() -> None:
    train = _item()  # classes 1, 2
    val_labels = np.full((300, 300), 3, np.uint8)
    warnings = check_classes([train], [_item(labels=val_labels)], ["a", "b", "crack"])
    assert any("'crack' appears in validation but not in training" in w for w in warnings)


def test_colour_overlays_and_nasa_label_maps_decode_to_1_to_k(data_dir: Path) -> None:
    items, names, colors = read_folder(data_dir / "nasa" / "Super1", "val")
    assert names == ["matrix", "secondary", "tertiary"] and len(colors) == 3
    assert set(np.unique(items[0].labels)) == {1, 2, 3}  # blue/red overlay -> 2/3, the rest matrix
    items, names, _ = read_folder(data_dir / "nasa" / "EBC2", "val")
    assert names == []  # label maps without a dataset.json: the labels say how many classes there are
    assert items[0].labels.min() >= 1  # NASA's 0 (background) is class 1: nothing is unlabelled


def test_blocks_hold_out_a_lattice_that_samples_every_corrected_area() -> None:
    labels = np.zeros((1024, 1024), np.uint8)
    labels[512:768, :256] = 1  # one corrected region, its lower part another phase (as a strip would see)
    labels[700:768, :256] = 2
    train, val = holdout_blocks(_item(1024, 1024, labels), 0.2)
    held = val.labels > 0
    assert not (train.labels[held]).any() and ((train.labels > 0) | held).sum() == (labels > 0).sum()
    assert 0.15 < held.sum() / (labels > 0).sum() <= 0.25  # about the fraction: 4 of the 16 blocks of 64²
    assert set(np.unique(val.labels[held])) == {1, 2}  # both phases are judged, not the end strip's one
    assert held[512:576].any() and held[704:768].any()  # from the region's top to its bottom
    assert val.image is train.image and "held-out blocks" in val.name
    assert holdout_blocks(_item(1024, 1024, np.pad(np.ones((40, 40), np.uint8), ((0, 984), (0, 984)))), 0.2) is None
    data = split_validation([_item(1024, 1024, labels)], 0.2, 0, holdout="blocks")
    assert data[1][0].name.endswith("(held-out blocks)")


def test_single_image_holds_out_a_strip_whose_labels_leave_training() -> None:
    item = _item(400, 300)
    train, val = holdout_region(item, 0.25)
    assert val.image is item.image and val.labels.shape == item.labels.shape  # scored on the strip only
    held = int(val.labels.any(axis=1).sum())
    assert 0 < held < 400 and val.labels[-held:].all() and not val.labels[:-held].any()
    assert not train.labels[-held:].any() and train.labels[:-held].all()
    assert 0.2 < val.labelled_pixels / item.labelled_pixels < 0.3
    assert train.image.shape == item.image.shape  # the unlabelled strip still gives context


def test_partial_labels_hold_out_a_share_of_the_labelled_pixels() -> None:
    labels = np.zeros((512, 512), np.uint8)
    labels[100:200, 50:450] = 1
    labels[300:340, 50:450] = 2
    train, val = split_validation([_item(512, 512, labels)], 0.2, seed=0)
    assert len(train) == len(val) == 1
    assert val[0].labelled_pixels > 0 and train[0].labelled_pixels > 0
    assert val[0].labelled_pixels + train[0].labelled_pixels == int((labels > 0).sum())


def test_validation_split_by_image_is_seeded() -> None:
    items = [_item(name=f"i{i}") for i in range(6)]
    a = split_validation(items, 0.34, seed=1)
    b = split_validation(items, 0.34, seed=1)
    assert [x.name for x in a[1]] == [x.name for x in b[1]] and len(a[1]) == 2 and len(a[0]) == 4


@pytest.mark.parametrize("count", [1, 4])
def test_val_fraction_zero_holds_out_nothing(count: int) -> None:
    items = [_item(name=f"i{i}") for i in range(count)]
    train, val = split_validation(items, 0.0, seed=0)
    assert val == [] and [x.name for x in train] == [x.name for x in items]


def test_crops_are_centred_near_labelled_pixels_and_tiny_images_are_padded() -> None:
    labels = np.zeros((1024, 1024), np.uint8)
    labels[900:940, 20:60] = 1  # a small labelled patch far from the centre
    labels[950:960, 30:40] = 2
    prepared = [prepare_image(_item(1024, 1024, labels), 1, 256)]
    ds = CropDataset(prepared, 256, 40, aug_strength=1.0, seed=3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 256, 256) and y.shape == (256, 256)
        assert (y > 0).any(), f"crop {i} holds no labelled pixel"
    tiny = prepare_image(_item(100, 80), 1, 256)
    x, y = CropDataset([tiny], 256, 1, aug_strength=0.0)[0]
    assert x.shape == (1, 256, 256) and int((y > 0).sum()) == 100 * 80  # mirrored border is unlabelled


def test_unaugmented_crops_match_per_image_standardisation() -> None:
    from napari_csunet.images.reading import standardize

    item = _item(256, 256)
    x, y = CropDataset([prepare_image(item, 1, 256)], 256, 1, aug_strength=0.0)[0]
    np.testing.assert_allclose(x[0].numpy(), standardize(item.image), atol=1e-4)
    np.testing.assert_array_equal(y.numpy(), item.labels)


def test_crops_are_deterministic_under_a_seed() -> None:
    prepared = [prepare_image(_item(), 1, 256)]

    def batch(seed: int) -> torch.Tensor:
        ds = CropDataset(prepared, 256, 4, aug_strength=0.8, seed=seed)
        return torch.stack([ds[i][0] for i in range(4)])

    assert torch.equal(batch(5), batch(5))
    assert not torch.equal(batch(5), batch(6))
    ds = CropDataset(prepared, 256, 4, aug_strength=0.8, seed=5)
    loaded = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)))[0]
    assert torch.equal(loaded, batch(5))  # the same crops whatever the number of workers


def test_the_loss_ignores_unlabelled_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    labels = torch.randint(1, 4, (2, 16, 16))
    labels[:, :8] = 0
    loss = segmentation_loss(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad[:, :, :8].abs().max() == 0 and logits.grad[:, :, 8:].abs().max() > 0
    changed = logits.detach().clone()
    changed[:, :, :8] = 100.0
    assert torch.allclose(segmentation_loss(changed, labels), loss.detach())
    assert segmentation_loss(logits, torch.zeros_like(labels)).item() == 0.0


def test_load_data_takes_class_names_from_the_folder_and_holds_out_images(data_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), preset="csunet-tiny",
                      data_dir=str(data_dir / "super1_test"), names=["spot2_0d_0", "spot2_0d_4", "spot2_180d_3"])
    data = load_data(cfg)
    assert data.class_names == ["matrix", "secondary", "tertiary"]
    assert len(data.train) == 2 and len(data.val) == 1 and data.in_chans == 1


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"mode": "train", "preset": "csunet-tiny", "out": "m.safetensors", "colour": 1}, "unknown job keys"),
        ({"mode": "train", "preset": "csunet-tiny", "out": "m.safetensors", "crop": 300}, "multiple of 256"),
        ({"mode": "finetune", "out": "m.safetensors"}, "needs a model file"),
        ({"mode": "train", "preset": "csunet-tiny", "out": ""}, "out: a path"),
        ({"mode": "train", "preset": "csunet-tiny", "out": "m", "aug_strength": 2}, "aug_strength"),
        ({"mode": "train", "preset": "csunet-tiny", "out": "m", "pairs": [{"image": "a"}]}, "pairs\\[0\\]"),
    ],
)
def test_bad_jobs_are_refused(tmp_path: Path, job: dict, message: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    with pytest.raises(ConfigError, match=message):
        load_job(path)


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_loads(recipe: str, tmp_path: Path) -> None:
    for name in ("Super1", "EBC2"):
        (tmp_path / name).mkdir()
    cfg = load_recipe(recipe, data_root=tmp_path, steps=7)
    assert cfg.steps == 7 and cfg.recipe == recipe and Path(cfg.data_dir).parent == tmp_path
    assert Path(cfg.out).is_absolute()
    assert cfg.preset or Path(cfg.model).is_absolute() or resolve_model(cfg.model)[0] == "file"  # a path or a name
    if recipe.startswith("starter-"):
        assert cfg.half and (cfg.preset == "csunet-tiny" and len(cfg.class_names) == 3 or cfg.mode == "finetune")
        assert cfg.out.endswith(f"src/napari_csunet/starter_models/{cfg.name}.safetensors")
    if recipe == "super3":
        assert cfg.names == ["spot7_180d_3"]


def test_an_annotation_set_saved_by_the_gui_is_a_training_folder(tmp_path: Path) -> None:
    from napari_csunet.images.annotations import AnnotationStore

    store = AnnotationStore(tmp_path / "annotations")
    labels = np.zeros((64, 80), np.uint8)
    labels[:10] = 2  # a partial correction
    store.add(np.zeros((64, 80), np.uint8), labels, name="corrected", class_names=["a", "b"],
              class_colors=["#000000", "#ffffff"])
    items, names, colors = read_folder(tmp_path / "annotations", "train")
    assert names == ["a", "b"] and colors == ["#000000", "#ffffff"]
    assert len(items) == 1 and items[0].labelled_pixels == 10 * 80


@pytest.mark.parametrize(
    ("job_names", "model_names", "expected", "model_colours_kept"),
    [
        (None, None, ["matrix", "secondary", "tertiary"], False),
        (None, ["a", "b", "c"], ["matrix", "secondary", "tertiary"], False),  # the folder names its classes
        (None, ["grain", "boundary"], ["matrix", "secondary", "tertiary"], False),  # other count: a new head
        (["x", "y", "z", "w"], ["a", "b", "c"], ["x", "y", "z", "w"], False),  # the job's names win
        (None, ["matrix", "secondary", "tertiary"], ["matrix", "secondary", "tertiary"], True),
    ],
)
def test_the_data_names_its_classes_not_the_model(data_dir: Path, tmp_path: Path, job_names, model_names,
                                                  expected, model_colours_kept) -> None:
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), mode="finetune", model="m.safetensors",
                      data_dir=str(data_dir / "super1_test"), names=["spot2_0d_0", "spot2_0d_4"],
                      class_names=job_names)
    colours = ["#010203"] * len(model_names) if model_names else None
    data = load_data(cfg, model_names, colours)
    assert data.class_names == expected
    assert (data.class_colors == colours) is model_colours_kept


def test_unnamed_labels_above_the_model_classes_get_numbered_names(tmp_path: Path) -> None:
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), mode="finetune", model="m.safetensors")
    labels = np.ones((300, 300), np.uint8)
    labels[:100] = 4
    data = load_data(cfg, ["a", "b"], train=[_item(labels=labels)], val=[_item(labels=labels)])
    assert data.class_names == ["class 1", "class 2", "class 3", "class 4"]  # a new head for 4 (job._fit_head)
    assert any("4 classes" in w for w in data.warnings)
