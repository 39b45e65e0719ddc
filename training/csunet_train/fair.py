"""Fair validation of a fine-tune on corrections: which pixels may judge, and how they are held out.

A pixel the user painted was chosen *because* the model was wrong there: before training it is
wrong by construction, so a before/after score on painted pixels alone cannot fail. Only
*reviewed* pixels judge: those inside areas the user checked as a whole (rectangles of a Shapes
layer, correction-queue regions accepted or painted in, the whole image), painted or not. Of
those, a lattice of ``BLOCK``-pixel squares is held out of training, fixed by position so a block
held out in one round stays unseen in the next, and topped up so every corrected class that has
reviewed pixels is represented. No torch here: the Correct tab counts what validation will have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .data import MIN_VAL_PIXELS, LabelledImage

__all__ = ["BLOCK", "HOLDOUT_EVERY", "FairSplit", "fair_split", "held_out_blocks", "annotation_digest",
           "reviewed_counts", "missing_classes_text"]

#: side of the held-out squares: small enough that every reviewed area is sampled, large enough
#: that a held-out pixel's neighbours are mostly held out too (it is not judged on its own training)
BLOCK = 32
#: one block in this many is held out (staggered from row to row)
HOLDOUT_EVERY = 4


def annotation_digest(item: LabelledImage) -> str:
    """sha256 of an image and its labels: the same corrections of the same image give the same
    digest (how a later round recognises the images an earlier round trained on)."""
    h = hashlib.sha256()
    for a in (item.image, item.labels):
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def held_out_blocks(shape: Sequence[int], block: int = BLOCK, every: int = HOLDOUT_EVERY) -> np.ndarray:
    """Bool (H, W): the lattice squares held out, a function of position only (stable across rounds)."""
    rows, cols = np.indices(tuple(shape[:2]), sparse=True)
    return ((rows // block + 2 * (cols // block)) % every) == 0


@dataclass
class FairSplit:
    """Training items (held-out reviewed pixels removed) and the held-out ones, by group."""

    train: list[LabelledImage]
    val: list[LabelledImage]
    groups: list[str]  # per val item: "new" (corrected this round) or "earlier" (a previous round's)
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> class -> held-out px
    missing: list[str] = field(default_factory=list)  # corrected classes that no reviewed pixel can check
    reviewed_pixels: int = 0

    def held_out(self, group: str = "new") -> int:
        """Held-out reviewed pixels of one group."""
        return sum(self.per_class.get(group, {}).values())

    @property
    def fair(self) -> bool:
        """Enough held-out reviewed pixels of this round's corrections to judge a new model by."""
        return self.held_out("new") >= MIN_VAL_PIXELS


def reviewed_counts(items: Sequence[LabelledImage], class_names: Sequence[str]) -> dict[str, int]:
    """Reviewed labelled pixels per class over ``items`` (what could judge, before the split)."""
    k = len(class_names)
    counts = np.zeros(k + 1, np.int64)
    for it in items:
        if it.reviewed is not None:
            counts += np.bincount(it.labels[it.reviewed & (it.labels > 0)], minlength=k + 1)[: k + 1]
    return {name: int(counts[i + 1]) for i, name in enumerate(class_names)}


def missing_classes_text(missing: Sequence[str]) -> str:
    """'no reviewed crack pixels: the crack class cannot be checked' (empty when nothing is missing)."""
    if not missing:
        return ""
    names = " or ".join(missing)
    return (f"no reviewed {names} pixels: the {names} class{'es' if len(missing) > 1 else ''} cannot be checked; "
            "mark an area holding some as reviewed")


def _top_up(labels: np.ndarray, reviewed: np.ndarray, held: np.ndarray, c: int, block: int) -> np.ndarray:
    """Add to ``held`` the reviewed block holding most pixels of class ``c``; when that block holds
    most of the class, only its part below the class's median row, so some of the class still trains."""
    where = reviewed & (labels == c) & ~held
    total = int(np.count_nonzero(where))
    if total == 0:
        return held
    h, w = labels.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((hb * block, wb * block), np.int64)
    padded[:h, :w] = where
    per_block = padded.reshape(hb, block, wb, block).sum(axis=(1, 3))
    r, col = np.unravel_index(int(per_block.argmax()), per_block.shape)
    rows = slice(r * block, (r + 1) * block)
    cols = slice(col * block, (col + 1) * block)
    if per_block[r, col] * 2 > total:  # most of the class is in this block: it must also train
        class_rows = np.nonzero(where[rows, cols])[0] + r * block
        rows = slice(int(np.median(class_rows)) + 1, (r + 1) * block)
    held = held.copy()
    held[rows, cols] |= reviewed[rows, cols]
    return held


def fair_split(items: Sequence[LabelledImage], class_names: Sequence[str], earlier: Sequence[str] = (),
               block: int = BLOCK, every: int = HOLDOUT_EVERY) -> FairSplit:
    """Hold out lattice blocks of the reviewed pixels of ``items`` (those with a ``reviewed`` mask).

    ``earlier``: digests (:func:`annotation_digest`) of the images the starting model was trained
    on; their held-out blocks check that a new model is not worse there. Items without a reviewed
    mask (label files made elsewhere) train whole and judge nothing here.
    """
    k = len(class_names)
    earlier_set = set(earlier)
    train: list[LabelledImage] = []
    helds: list[np.ndarray | None] = []
    for it in items:
        if it.reviewed is None or not it.reviewed.any():
            helds.append(None)
            continue
        helds.append(held_out_blocks(it.labels.shape, block, every) & it.reviewed & (it.labels > 0))
    # stratify: every class corrected in an image with reviewed pixels of it is held out somewhere
    corrected = set()
    for it in items:
        corrected |= set(np.unique(it.labels).tolist()) - {0}
    held_counts = np.zeros(k + 1, np.int64)
    for it, held in zip(items, helds, strict=True):
        if held is not None:
            held_counts += np.bincount(it.labels[held], minlength=k + 1)[: k + 1]
    missing = []
    for c in sorted(corrected):
        if c > k or held_counts[c]:
            continue
        owners = [i for i, it in enumerate(items) if it.reviewed is not None and np.any(it.reviewed & (it.labels == c))]
        if not owners:
            missing.append(class_names[c - 1])
            continue
        i = max(owners, key=lambda j: int(np.count_nonzero(items[j].reviewed & (items[j].labels == c))))
        base = helds[i] if helds[i] is not None else np.zeros(items[i].labels.shape, bool)
        helds[i] = _top_up(items[i].labels, items[i].reviewed & (items[i].labels > 0), base, c, block)
    val, groups = [], []
    per_class: dict[str, dict[str, int]] = {}
    for it, held in zip(items, helds, strict=True):
        if held is None or not held.any():
            train.append(it)
            continue
        group = "earlier" if annotation_digest(it) in earlier_set else "new"
        val_labels = np.where(held, it.labels, 0).astype(it.labels.dtype)
        val.append(replace(it, labels=val_labels, name=f"{it.name} (held-out reviewed blocks)", pseudo=None,
                           reviewed=held))
        groups.append(group)
        counts = np.bincount(val_labels.ravel(), minlength=k + 1)[1: k + 1]
        acc = per_class.setdefault(group, {n: 0 for n in class_names})
        for name, n in zip(class_names, counts, strict=True):
            acc[name] += int(n)
        train.append(replace(it, labels=np.where(held, 0, it.labels).astype(it.labels.dtype)))
    reviewed = sum(int(np.count_nonzero(it.reviewed & (it.labels > 0))) for it in items if it.reviewed is not None)
    return FairSplit(train, val, groups, per_class, missing, reviewed)


def summary(split: FairSplit) -> dict[str, Any]:
    """What the events and the model file record about the held-out set."""
    return {"what": "reviewed pixels held out of training (lattice blocks of checked areas)",
            "per_class": split.per_class, "missing": split.missing, "fair": split.fair,
            "pixels": {g: split.held_out(g) for g in split.per_class}}
