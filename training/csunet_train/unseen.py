"""What a fine-tune does to the pixels nobody checked, measured where it did not train.

Distillation keeps the starting model's answers on every unlabelled pixel it trains on, so the
change a fine-tune makes *there* says little about images it never saw: it was told not to change
them. A lattice of blocks of those pixels (on the annotated images away from the corrections, and
on the unlabelled images of the material) is therefore kept out of the distillation: the network
still sees them as context, but no loss touches them. After training, how much the new model
changes the starting model's answers on them, class by class, estimates what it will do to the
images the user did not annotate (issue 19: one round of corrections made other images of a
material worse while its own held-out blocks improved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_csunet.measure.metrics import change_from_confusion, confusion_matrix

from .data import LabelledImage

__all__ = ["UNSEEN_BLOCK", "UNSEEN_EVERY", "UnseenPixels", "hold_out_unseen", "unseen_lattice"]

#: side of the lattice's blocks (pixels) and one block in this many is kept out of distillation
UNSEEN_BLOCK = 64
UNSEEN_EVERY = 4


def unseen_lattice(shape: tuple[int, int], block: int = UNSEEN_BLOCK, every: int = UNSEEN_EVERY) -> np.ndarray:
    """A staggered lattice of ``block``² squares, one in ``every`` (offset from the reviewed-pixel
    lattice of :mod:`csunet_train.fair` by its larger blocks and another stagger)."""
    rows, cols = np.indices(shape, sparse=True)
    return ((rows // block + 3 * (cols // block) + 1) % every) == 0


@dataclass
class UnseenPixels:
    """The starting model's answers (1..K, 0 = not held out) on the held-out distillation blocks."""

    items: list[LabelledImage]
    teacher: list[np.ndarray]

    @property
    def pixels(self) -> int:
        return int(sum(np.count_nonzero(t) for t in self.teacher))

    def change(self, predict, class_names: Sequence[str]) -> dict[str, Any]:
        """How the labels ``predict(item)`` returns differ from the starting model's on the held-out
        blocks: the share of pixels whose class changed, and per class 1 - IoU(start, new) (what a
        class's IoU against any truth can move by, roughly), pooled over the images; and the same
        under ``unchecked_images`` for the images that hold no checked area (the unlabelled ones:
        no check of this round can vouch for a change there)."""
        k = len(class_names)
        cm = np.zeros((k, k), np.int64)
        unchecked = np.zeros((k, k), np.int64)  # images that hold no checked area (the unlabelled ones)
        per_image: dict[str, float] = {}
        unchecked_images = 0
        for item, teacher in zip(self.items, self.teacher, strict=True):
            held = teacher > 0
            if not held.any():
                continue
            new = np.clip(predict(item)[held].astype(np.int64), 1, k)  # labels are 1..K; a stray 0 must not break the count
            ref = teacher[held].astype(np.int64)
            per_image[item.name] = round(float(np.mean(new != ref)), 4)
            counts = confusion_matrix(new, ref, k)  # rows: the starting model's answer
            cm += counts
            if item.reviewed is None or not item.reviewed.any():
                unchecked += counts
                unchecked_images += 1
        out = {"pixels": int(cm.sum()), **_class_change(cm, class_names), "per_image": per_image}
        if unchecked_images:
            out["unchecked_images"] = {"images": unchecked_images, "pixels": int(unchecked.sum()),
                                       **_class_change(unchecked, class_names)}
        return out


def _class_change(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The share of pixels whose class changed and, per class, 1 - IoU(old answer, new answer)."""
    changed, by_index = change_from_confusion(cm)
    per_class = {name: by_index[c] for c, name in enumerate(class_names) if c in by_index}
    return {"changed": changed, "class_changed": per_class,
            "mean_class_changed": float(np.mean(list(per_class.values()))) if per_class else 0.0}


def hold_out_unseen(items: Sequence[LabelledImage]) -> UnseenPixels:
    """Keep a lattice of each item's distilled pixels (no label, soft targets set) out of the
    distillation: their soft targets become 0, which the loss skips, and the starting model's
    answers there are kept to compare with after training. The fair held-out reviewed blocks
    are kept out of it too."""
    held_items, teachers = [], []
    for item in items:
        if item.soft is None:
            continue
        held = unseen_lattice(item.labels.shape) & (item.labels == 0)
        if item.reviewed is not None:
            held &= ~item.reviewed
            # reviewed pixels without a label are the fair held-out blocks (csunet_train.fair): the
            # judge scores them, so the loss must not pull them toward the starting model either
            item.soft[:, item.reviewed & (item.labels == 0)] = 0
        teacher = np.zeros(item.labels.shape, np.uint8)
        teacher[held] = item.soft[:, held].argmax(0) + 1
        item.soft[:, held] = 0
        held_items.append(item)
        teachers.append(teacher)
    return UnseenPixels(held_items, teachers)
