"""Judging a fine-tune like a careful colleague: scores on the fair held-out pixels, their noise,
and the decision whether the new model may replace the current one.

Validation predicts only windows around the held-out blocks (with the whole image's intensity
statistics, as the GUI's predictor uses), so an evaluation costs a fraction of a whole-image
prediction and can run often on a CPU. Every score keeps its per-block confusion matrices: the
noise of a before/after change is a paired block bootstrap (pixels of one block are not
independent; blocks nearly are), and the decision compares the change with that noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_csunet.measure.metrics import metrics_from_confusion

from .data import MIN_VAL_PIXELS
from .fair import BLOCK, FairSplit, missing_classes_text

__all__ = ["FairValidation", "block_miou", "class_ious", "class_iou", "paired_change", "decide", "changes_too_much",
           "unverified_classes", "unverified_text", "unchecked_change_text", "GROUPS"]

GROUPS = ("new", "earlier")
#: context around the held-out blocks that a window predicts (the network's receptive field matters)
MARGIN = 64
#: a model is not "worse on earlier rounds' images" for a change smaller than this, whatever the noise
EARLIER_TOLERANCE = 0.005
#: a gain counts only beyond this many standard errors of the paired block bootstrap
SIGNIFICANT = 2.0
#: a better model that changes more than this share of the pixels it did not train on (held out of
#: the distillation, away from the corrections and on the unlabelled images: nobody checked them),
#: or more than CLASS_CHANGE_LIMIT of a class there on average (1 - IoU of the old and new answers,
#: so a rare phase counts as much as the matrix), is offered, not made current
ELSEWHERE_LIMIT = 0.03
CLASS_CHANGE_LIMIT = 0.05
BOOTSTRAP = 400


def class_ious(cms: np.ndarray) -> np.ndarray:
    """Per-class IoU (..., K) of (..., K, K) confusion matrices; nan where neither target nor
    prediction holds the class."""
    cms = np.asarray(cms, np.float64)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    union = cms.sum(-1) + cms.sum(-2) - tp
    return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def block_miou(cms: np.ndarray) -> np.ndarray:
    """mIoU of (..., K, K) confusion matrices, over classes present in target or prediction
    (as :func:`~napari_csunet.measure.metrics.metrics_from_confusion`); nan without pixels."""
    iou = class_ious(cms)
    present = ~np.isnan(iou)
    n = present.sum(-1)
    return np.where(n > 0, np.where(present, iou, 0.0).sum(-1) / np.maximum(n, 1), np.nan)


def class_iou(cms: np.ndarray, c: int) -> np.ndarray:
    """IoU of class ``c`` (0-based) of (..., K, K) confusion matrices (nan where it is absent)."""
    return class_ious(cms)[..., c]


def paired_change(before: np.ndarray, after: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0,
                  score: Callable[[np.ndarray], np.ndarray] = block_miou) -> tuple[float, float]:
    """(score after - score before, its standard error) from per-block confusion matrices (B, K, K);
    the score is mIoU unless ``score`` says otherwise (e.g. one class's IoU).

    The blocks are resampled together for both models, stratified by the rarest class each block
    holds, so every resample keeps every class (a rare phase in a few blocks would otherwise drop
    in and out of the mean and swamp the estimate).
    """
    change = float(score(after.sum(0)) - score(before.sum(0)))
    b = before.shape[0]
    if b < 2:
        return change, float("inf")
    truth = before.sum(-1)  # (B, K): target pixels per class in each block
    rank = np.argsort(np.argsort(truth.sum(0)))  # 0 = the rarest class overall
    strata = np.where(truth > 0, rank, rank.size).min(axis=1)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, b))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        weights[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    diffs = score(np.einsum("nb,bij->nij", weights, after)) - score(np.einsum("nb,bij->nij", weights, before))
    return change, float(np.nanstd(diffs))


@dataclass
class _Window:
    image: np.ndarray  # the crop (with margin) of the image
    labels: np.ndarray  # held-out labels in the crop (0 elsewhere)
    blocks: np.ndarray  # block index of each held-out pixel in the crop (-1 elsewhere)
    stats: tuple[float, float]
    group: int


@dataclass
class FairValidation:
    """The held-out reviewed blocks of a :class:`~csunet_train.fair.FairSplit`, ready to score a model."""

    split: FairSplit
    class_names: list[str]
    in_chans: int
    windows: list[_Window] = field(default_factory=list)
    n_blocks: int = 0
    block_group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    first: np.ndarray | None = None  # per-block confusion matrices of the starting model
    latest: np.ndarray | None = None

    def __post_init__(self) -> None:
        from napari_csunet.engine.lazy import lazy_stats

        groups: list[int] = []
        for item, group in zip(self.split.val, self.split.groups, strict=True):
            stats = lazy_stats(item.image, self.in_chans)
            held = item.labels > 0
            h, w = held.shape
            ids = np.full(held.shape, -1, np.int64)
            rows, cols = np.nonzero(held)
            key = (rows // BLOCK) * (-(-w // BLOCK)) + cols // BLOCK
            uniq, inv = np.unique(key, return_inverse=True)
            ids[rows, cols] = inv + self.n_blocks
            self.n_blocks += len(uniq)
            groups += [GROUPS.index(group)] * len(uniq)
            for r0, c0, r1, c1 in _windows(held):
                r0, c0 = max(0, r0 - MARGIN), max(0, c0 - MARGIN)
                r1, c1 = min(h, r1 + MARGIN), min(w, c1 + MARGIN)
                self.windows.append(_Window(item.image[r0:r1, c0:c1], item.labels[r0:r1, c0:c1],
                                            ids[r0:r1, c0:c1], stats, GROUPS.index(group)))
        self.block_group = np.asarray(groups, np.int64)

    def block_confusion(self, model, device, dtype, dist=None) -> np.ndarray:
        """(blocks, K, K) confusion matrices of ``model`` on the held-out blocks (summed over ranks)."""
        import torch

        from .dist import all_reduce_sum
        from .loop import validation_segmenter

        k = len(self.class_names)
        cms = np.zeros((self.n_blocks, k, k), np.int64)
        was_training = model.training
        segmenter = validation_segmenter(model, self.class_names, self.in_chans, device, dtype)
        rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
        for win in self.windows[rank::world]:
            pred = np.empty(win.labels.shape, np.uint8)
            segmenter.predict_to(win.image, pred, stats=win.stats)
            keep = win.blocks >= 0
            flat = (win.blocks[keep] * k + (win.labels[keep].astype(np.int64) - 1)) * k + (pred[keep].astype(np.int64) - 1)
            cms += np.bincount(flat, minlength=self.n_blocks * k * k).reshape(self.n_blocks, k, k)
        model.train(was_training)
        if dist is not None and dist.distributed:
            cms = all_reduce_sum(torch.from_numpy(cms).to(dist.device)).cpu().numpy()
        return cms

    def metrics(self, cms: np.ndarray) -> dict[str, Any] | None:
        """The eval event's metrics: this round's held-out blocks, and each group's under ``groups``."""
        out: dict[str, Any] = {}
        for g, name in enumerate(GROUPS):
            part = cms[self.block_group == g]
            if part.size:
                out[name] = metrics_from_confusion(part.sum(0), self.class_names)
        if "new" not in out:
            return None if not out else {"miou": None, "pixels": 0, "groups": out}
        return out["new"] | {"groups": out, "held_out": "reviewed"}

    def __call__(self, model, device, dtype, dist=None) -> dict[str, Any] | None:
        """Score ``model`` (the loop's validator); the first call scores the starting model."""
        cms = self.block_confusion(model, device, dtype, dist)
        if self.first is None:
            self.first = cms
        self.latest = cms
        return self.metrics(cms)

    def change(self, before: np.ndarray, after: np.ndarray, group: str) -> dict[str, Any] | None:
        """Before/after metrics on one group, the mIoU change and its noise (None without such blocks)."""
        sel = self.block_group == GROUPS.index(group)
        if not sel.any():
            return None
        delta, noise = paired_change(before[sel], after[sel])
        return {"pixels": int(before[sel].sum()), "per_class_pixels": self.split.per_class.get(group, {}),
                "before": metrics_from_confusion(before[sel].sum(0), self.class_names),
                "after": metrics_from_confusion(after[sel].sum(0), self.class_names),
                "change": delta, "noise": noise}

    def class_change(self, before: np.ndarray, after: np.ndarray, c: int, group: str = "new") -> dict[str, Any]:
        """One class's IoU before/after on a group's held-out blocks, the change and its noise (the
        scores are None where the blocks hold no pixel of it, in target or prediction)."""
        sel = self.block_group == GROUPS.index(group)
        name = self.class_names[c]
        b, a = float(class_iou(before[sel].sum(0), c)), float(class_iou(after[sel].sum(0), c))
        pixels = int(before[sel][:, c, :].sum())
        if not pixels or np.isnan(b) or np.isnan(a):
            return {"class": name, "pixels": pixels, "before": None, "after": None, "change": None, "noise": None}
        delta, noise = paired_change(before[sel], after[sel], score=lambda cms: class_iou(cms, c))
        return {"class": name, "pixels": pixels, "before": b, "after": a, "change": delta, "noise": noise}


def _windows(held: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (pixels) of groups of held-out blocks, neighbours (a block apart) merged."""
    from scipy import ndimage

    h, w = held.shape
    hb, wb = -(-h // BLOCK), -(-w // BLOCK)
    grid = np.zeros((hb * BLOCK, wb * BLOCK), bool)
    grid[:h, :w] = held
    coarse = grid.reshape(hb, BLOCK, wb, BLOCK).any(axis=(1, 3))
    parts, _ = ndimage.label(ndimage.binary_dilation(coarse, np.ones((3, 3), bool)))
    boxes = []
    for sl in ndimage.find_objects(parts):
        if sl is None or not coarse[sl].any():
            continue
        rows, cols = np.nonzero(coarse[sl])
        r0, r1 = (sl[0].start + rows.min()) * BLOCK, (sl[0].start + rows.max() + 1) * BLOCK
        c0, c1 = (sl[1].start + cols.min()) * BLOCK, (sl[1].start + cols.max() + 1) * BLOCK
        boxes.append((int(r0), int(c0), int(min(r1, h)), int(min(c1, w))))
    return boxes


def changes_too_much(elsewhere: dict[str, Any], limits: tuple[float, float] = (ELSEWHERE_LIMIT, CLASS_CHANGE_LIMIT)
                     ) -> bool:
    """Whether a fine-tune changes too much where nobody checked: (share of pixels, mean per-class
    change) above ``limits`` (see ``ELSEWHERE_LIMIT``)."""
    return elsewhere["changed"] > limits[0] or elsewhere.get("mean_class_changed", 0.0) > limits[1]


def unverified_classes(validation: FairValidation, before: np.ndarray, after: np.ndarray, elsewhere: dict[str, Any],
                       limit: float = CLASS_CHANGE_LIMIT) -> list[dict[str, Any]]:
    """The classes a fine-tune moves by more than ``limit`` where nobody checked (1 - IoU of the old
    and new answers) without a check that vouches for it: on the images that hold no checked area
    (``where`` "images": nothing there can show whether the move is right), or anywhere when this
    round's checked areas do not show that class better (``where`` "checks": its IoU gain on the
    held-out reviewed blocks at most ``SIGNIFICANT`` x its noise, or none held out).

    A mean over classes lets one phase move a lot while the others hold still (Super1: the tertiary
    moved 10 % on the material's other images, the mean 4 %; the checks on the corrected image showed
    tertiary better, and the other images lost 0.005 mIoU, their tertiary 0.003-0.026 IoU).
    """
    out: list[dict[str, Any]] = []
    other = elsewhere.get("unchecked_images") or {}
    for name, moved in sorted((other.get("class_changed") or {}).items(), key=lambda kv: -kv[1]):
        if moved > limit:
            out.append({"class": name, "unchecked": moved, "where": "images", "images": other.get("images", 0)})
    for name, moved in sorted((elsewhere.get("class_changed") or {}).items(), key=lambda kv: -kv[1]):
        if moved <= limit or name not in validation.class_names or any(u["class"] == name for u in out):
            continue
        check = validation.class_change(before, after, validation.class_names.index(name))
        if check["change"] is None or not check["change"] > SIGNIFICANT * check["noise"]:  # nan noise vouches for nothing
            out.append(check | {"unchecked": moved, "where": "checks"})
    return out


def unverified_text(unverified: Sequence[dict[str, Any]]) -> str:
    """Why each class's move is not vouched for, in a scientist's words."""
    parts = []
    for u in unverified:
        moved = f"it moves {u['class']} by {u['unchecked']:.0%} (1 − IoU with the current model's answer)"
        if u["where"] == "images":
            parts.append(f"{moved} on the {u['images']} image(s) that hold no checked area, where nothing can show "
                         "whether that is right")
        elif u["change"] is None:
            parts.append(f"{moved} where nobody checked, and no checked {u['class']} pixels were held out")
        else:
            parts.append(f"{moved} where nobody checked, and the checked areas do not show {u['class']} better "
                         f"(IoU {u['before']:.3f} → {u['after']:.3f} on {u['pixels']:,} checked px, noise ± "
                         f"{u['noise']:.3f})")
    return "; ".join(parts)


def unchecked_change_text(elsewhere: dict[str, Any]) -> str:
    """'3.1% of the pixels it did not train on (away from the corrections and on 3 other image(s);
    by class: crack 12%, oxide 4%)'."""
    where = "away from the corrections" + (f" and on {elsewhere['images']} other image(s)"
                                           if elsewhere.get("images") else "")
    classes = sorted((elsewhere.get("class_changed") or {}).items(), key=lambda kv: -kv[1])
    per_class = ", ".join(f"{name} {share:.0%}" for name, share in classes if share >= 0.005)
    return (f"{elsewhere['changed']:.1%} of the pixels it did not train on ({where}"
            + (f"; by class: {per_class}" if per_class else "") + ")")


def decide(validation: FairValidation | None, best: np.ndarray | None, trained_steps: int, best_step: int | None,
           class_names: Sequence[str], painted_only: bool = False,
           elsewhere: dict[str, Any] | None = None,
           limits: tuple[float, float] = (ELSEWHERE_LIMIT, CLASS_CHANGE_LIMIT),
           name: str = "fine-tuned model") -> dict[str, Any]:
    """Whether the fine-tuned model (``name``: what the reason calls it) may replace the current
    one, and why, in a scientist's words.

    Kept only when it is better on this round's held-out reviewed pixels (by more than
    ``SIGNIFICANT`` x the noise; a smaller gain is offered, not made current), not worse (beyond the
    noise, and at least ``EARLIER_TOLERANCE``) on earlier rounds' images, and does not change too much
    where it did not train (``elsewhere``, :meth:`csunet_train.unseen.UnseenPixels.change`), where
    nothing can tell whether a change is right: not too many pixels, not too much of each class on
    average, and not much of a class the checks do not show improving (:func:`unverified_classes`).
    Without fair pixels the new model is offered, never made current silently.
    """
    missing = list(validation.split.missing) if validation is not None else []
    note = missing_classes_text(missing)
    base = {"keep": False, "fair": False, "new": None, "earlier": None, "missing_classes": missing,
            "trained_steps": trained_steps, "best_step": best_step, "elsewhere": elsewhere}
    if validation is None or validation.first is None or not validation.split.fair:
        n = validation.split.held_out("new") if validation is not None else 0
        why = ("the corrections are painted pixels only: they were chosen because the model was wrong there, so "
               "they cannot show whether it got better" if painted_only or n == 0 else
               f"only {n:,} reviewed pixels were held out (at least {MIN_VAL_PIXELS:,} are needed to tell better "
               "from worse)")
        return base | {"verdict": "unjudged", "reason": f"Nothing fair to check the new model on: {why}. It is "
                       "offered, not made current: look at it, then keep it or revert. To have it checked, mark the "
                       "areas you corrected as reviewed (a rectangle around each)." + (f" Also {note}." if note else "")}
    after = validation.first if best is None or best_step == 0 else best
    new = validation.change(validation.first, after, "new")
    earlier = validation.change(validation.first, after, "earlier")
    out = base | {"fair": True, "new": new, "earlier": earlier}
    n = new["pixels"]
    before_s, after_s = new["before"]["miou"], new["after"]["miou"]
    scores = f"mIoU {before_s:.3f} → {after_s:.3f} on {n:,} held-out reviewed pixels (noise ± {new['noise']:.3f})"
    if best_step == 0 or new["change"] <= 0:
        verdict = {"verdict": "not_better", "reason": f"Kept the current model: the {name} was not better on "
                   f"the checked areas it did not train on ({scores})."}
    elif earlier is not None and earlier["change"] < -max(2 * earlier["noise"], EARLIER_TOLERANCE):
        verdict = {"verdict": "worse_earlier", "reason": (
            f"Kept the current model: the {name} is better on this round's checked areas ({scores}) but "
            f"worse on the images corrected in earlier rounds (mIoU {earlier['before']['miou']:.3f} → "
            f"{earlier['after']['miou']:.3f} on {earlier['pixels']:,} px, more than the noise ± "
            f"{earlier['noise']:.3f}): it forgot what it had learned there.")}
    elif new["change"] <= SIGNIFICANT * new["noise"]:
        verdict = {"verdict": "within_noise", "reason": (
            f"The {name} scores higher on the checked areas it did not train on ({scores}), but by less "
            f"than twice the noise of so few pixels: it may not be better. It is offered, not made current; "
            "review more areas (more checked pixels make the noise smaller), or look at it and decide.")}
    elif elsewhere is not None and changes_too_much(elsewhere, limits):
        verdict = {"verdict": "unverified_elsewhere", "reason": (
            f"The {name} is better on the checked areas it did not train on ({scores}), but it changes "
            f"{unchecked_change_text(elsewhere)}, which nobody checked. It is offered, not made current: look at "
            "those areas with it, then keep it or revert.")}
    elif elsewhere is not None and (unverified := unverified_classes(validation, validation.first, after, elsewhere,
                                                                    limits[1])):
        verdict = {"verdict": "unverified_elsewhere", "unverified_classes": unverified, "reason": (
            f"The {name} is better on the checked areas it did not train on ({scores}), but "
            f"{unverified_text(unverified)}. It is offered, not made current: look at those areas with it, then "
            "keep it or revert.")}
    else:
        verdict = {"keep": True, "verdict": "better", "reason": (
            f"The new model is current: it is better on the checked areas it did not train on ({scores})"
            + (f" and not worse on earlier rounds' images (mIoU {earlier['before']['miou']:.3f} → "
               f"{earlier['after']['miou']:.3f})" if earlier is not None else "")
            + (f"; it changes {unchecked_change_text(elsewhere)}" if elsewhere is not None else "") + ".")}
    if note:
        verdict["reason"] += f" Note: {note}."
    return out | verdict
