"""Pixels kept out of the distillation measure what a fine-tune changes where nobody checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csunet_train.data import LabelledImage
from csunet_train.losses import correction_loss
from csunet_train.unseen import UNSEEN_EVERY, hold_out_unseen, unseen_lattice

NAMES = ["background", "oxide", "crack"]


def _item(labelled: bool, reviewed: bool = False) -> LabelledImage:
    labels = np.zeros((256, 256), np.uint8)
    if labelled:
        labels[:64, :64] = 2
    soft = np.zeros((3, 256, 256), np.float16)
    soft[0] = 0.9
    soft[1] = 0.1
    soft[:, 128:, :] = np.array([0.1, 0.1, 0.8], np.float16)[:, None, None]  # crack in the lower half
    rev = np.zeros((256, 256), bool)
    if reviewed:
        rev[:64, :128] = True  # a reviewed rectangle; its unlabelled part is the fair held-out block
    return LabelledImage(np.zeros((256, 256), np.uint8), labels, "im", reviewed=rev if reviewed else None, soft=soft)


@pytest.mark.parametrize("labelled", [True, False])
def test_a_lattice_of_unlabelled_pixels_is_kept_out_of_the_distillation(labelled: bool) -> None:
    item = _item(labelled)
    unseen = hold_out_unseen([item])
    held = unseen.teacher[0] > 0
    assert held.mean() == pytest.approx(1 / UNSEEN_EVERY, abs=0.05)
    assert not held[item.labels > 0].any()  # labels train; only distilled pixels are held out
    assert np.all(item.soft[:, held] == 0) and np.all(item.soft.sum(0)[~held] > 0.9)
    assert set(np.unique(unseen.teacher[0][held])) == {1, 3}  # the starting model's answers
    assert unseen.pixels == int(held.sum())


def test_the_fair_held_out_blocks_are_not_distilled_either() -> None:
    item = _item(True, reviewed=True)
    unseen = hold_out_unseen([item])
    fair = item.reviewed & (item.labels == 0)
    assert fair.any() and np.all(item.soft[:, fair] == 0)
    assert not (unseen.teacher[0][fair] > 0).any()  # judged by the user's labels, not counted as unchecked


def test_the_loss_skips_pixels_whose_soft_targets_are_zero() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 16, 16)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    teacher = torch.full((1, 3, 16, 16), 1 / 3)
    held = teacher.clone()
    held[..., 8:] = 0
    changed = logits.clone()
    changed[..., 8:] += 5 * torch.randn(1, 3, 16, 8)  # whatever the network says on held-out pixels
    assert correction_loss(changed, (labels, held)) == pytest.approx(correction_loss(logits, (labels, held)).item())
    assert correction_loss(changed, (labels, teacher)) != pytest.approx(correction_loss(logits, (labels, teacher)).item())


def test_the_change_is_counted_per_class_so_a_rare_phase_counts() -> None:
    item = _item(False)
    unseen = hold_out_unseen([item])
    teacher = unseen.teacher[0]

    def predict(it: LabelledImage) -> np.ndarray:
        new = teacher.copy()
        new[new == 0] = 1
        crack = np.flatnonzero(new == 3)
        new.flat[crack[: crack.size // 5]] = 1  # a fifth of the crack becomes background
        return new

    change = unseen.change(predict, NAMES)
    assert change["class_changed"]["crack"] == pytest.approx(0.2, abs=0.01)
    assert change["changed"] == pytest.approx(0.1, abs=0.01)  # half the held-out pixels are crack
    assert change["mean_class_changed"] == pytest.approx((0.2 + change["class_changed"]["background"]) / 2)
    assert "oxide" not in change["class_changed"]  # neither model says oxide there
    assert unseen_lattice((8, 8), block=2, every=4).sum() == 4 * 4


def test_the_images_that_hold_no_checked_area_are_counted_apart() -> None:
    checked, other = _item(True, reviewed=True), _item(False)  # other: no check of this round lies in it
    unseen = hold_out_unseen([checked, other])

    def predict(it: LabelledImage) -> np.ndarray:
        new = unseen.teacher[0 if it is checked else 1].copy()
        new[new == 0] = 1
        if it is other:
            new[new == 3] = 1  # the crack vanishes on the image nobody checked only
        return new

    change = unseen.change(predict, NAMES)
    assert change["unchecked_images"]["images"] == 1
    assert change["unchecked_images"]["class_changed"]["crack"] == pytest.approx(1.0)
    assert 0 < change["class_changed"]["crack"] < 1  # pooled with the checked image, where it stays
