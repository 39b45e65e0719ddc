"""Training from the GUI's annotation set: only corrected/accepted pixels train and validate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csunet_train.config import TrainConfig
from csunet_train.data import MIN_VAL_PIXELS, load_data, read_folder
from napari_csunet.images.annotations import AnnotationStore

NAMES = ["background", "oxide", "crack"]


def _store(tmp_path: Path, boxes: list[tuple[int, int, int]]) -> tuple[AnnotationStore, np.ndarray]:
    """One 512² image predicted all background, with ``(row, col, side)`` boxes accepted after
    painting their left half 'crack'."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (512, 512), dtype=np.uint8)
    prediction = np.ones((512, 512), np.uint8)
    labels = prediction.copy()
    for r, c, side in boxes:
        labels[r:r + side, c:c + side // 2] = 3
    store = AnnotationStore(tmp_path / "annotations")
    store.add(image, labels, name="ebc", class_names=NAMES, prediction=prediction,
              regions=[[r, c, r + side, c + side] for r, c, side in boxes])
    return store, labels


def test_uncorrected_predictions_never_train_or_validate(tmp_path: Path) -> None:
    from csunet_train.fair import fair_split

    boxes = [(20, 20, 100), (200, 300, 100), (380, 60, 100)]
    store, labels = _store(tmp_path, boxes)
    items, names, _ = read_folder(store.root, "train")
    assert names == NAMES and len(items) == 1
    inside = np.zeros(labels.shape, bool)
    for r, c, side in boxes:
        inside[r:r + side, c:c + side] = True
    np.testing.assert_array_equal(items[0].labels, np.where(inside, labels, 0))

    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), mode="finetune", model="m", pairs=store.pairs())
    data = load_data(cfg, NAMES)
    assert not data.val and not data.warnings  # corrections: the job holds reviewed blocks out (fair.py)
    split = fair_split(data.train, NAMES)
    (train,), (val,) = split.train, split.val
    assert val.labelled_pixels >= MIN_VAL_PIXELS and train.labelled_pixels > 0
    assert val.labelled_pixels + train.labelled_pixels == int(inside.sum())  # held out, not shared
    assert not (val.labels[~inside]).any()


@pytest.mark.parametrize(("side", "validated"), [(30, False), (120, True)])
def test_too_few_corrections_train_without_validation(tmp_path: Path, side: int, validated: bool) -> None:
    from csunet_train.fair import fair_split

    store, _ = _store(tmp_path, [(100, 100, side)])
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), mode="finetune", model="m", pairs=store.pairs())
    assert fair_split(load_data(cfg, NAMES).train, NAMES).fair is validated


def test_uncorrected_predictions_become_pseudo_labels_that_count_only_with_a_weight(tmp_path: Path) -> None:
    import torch

    from csunet_train.losses import segmentation_loss
    from csunet_train.sampling import prepare_image

    store, labels = _store(tmp_path, [(20, 20, 100)])
    (item,) = read_folder(store.root, "train")[0]
    assert item.pseudo is not None and not (item.pseudo.astype(bool) & (item.labels > 0)).any()
    assert int((item.pseudo > 0).sum() + (item.labels > 0).sum()) == labels.size
    assert int(prepare_image(item, 1, 256).labels.min()) == 0  # weight 0: the pseudo-labels are not even loaded
    prepared = prepare_image(item, 1, 256, pseudo=True)
    assert int(prepared.labels.min()) == -1 and prepared.weight == 100 * 100  # drawn by its corrected pixels

    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8, requires_grad=True)
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[:, :4] = 3
    y[:, 4:] = -1
    corrected_only = segmentation_loss(logits, y.clamp(min=0))
    assert torch.equal(segmentation_loss(logits, y), corrected_only)  # weight 0: ignored
    segmentation_loss(logits, y, pseudo_weight=0.1).backward()
    grad = logits.grad.abs().sum(dim=1)[0]
    assert grad[4:].max() > 0 and grad[4:].mean() < 0.5 * grad[:4].mean()  # they count, but less
