"""Cross-entropy + soft Dice over labelled pixels only (label 0 = unlabelled is ignored;
negative labels are low-weight pseudo-labels, see :func:`segmentation_loss`), and for fine-tuning
on corrections (:func:`correction_loss`) class-balanced cross-entropy plus distillation to the
starting model's soft predictions on every unlabelled pixel.

Dice counters the class imbalance of micrographs (tertiary gamma-prime or cracks cover ~1% of the
pixels); cross-entropy keeps the gradients well behaved early on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["segmentation_loss", "dice_loss", "balanced_cross_entropy", "distillation_loss", "correction_loss"]


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over the classes present in the labelled pixels of the batch.

    ``labels`` hold 0 (ignored) and 1..K; logits are (B, K, H, W).
    """
    k = logits.shape[1]
    valid = (labels > 0).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    target = F.one_hot((labels - 1).clamp(min=0), k).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    present = target.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    return (1 - dice)[present].mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0,
                      pseudo_weight: float = 0.0, balanced: bool = False) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels + ``dice_weight`` x Dice loss; 0 if nothing is labelled.

    ``balanced``: the cross-entropy is averaged per class first (:func:`balanced_cross_entropy`).
    Negative labels ``-c`` are pseudo-labels (the model's own uncorrected prediction of class c):
    their cross-entropy counts ``pseudo_weight`` times a corrected pixel's (ignored at 0), and
    Dice sees corrected pixels only.
    """
    pseudo = labels < 0
    if pseudo_weight <= 0 or not bool(pseudo.any()):
        labels = labels.clamp(min=0)
        if not bool((labels > 0).any()):
            return logits.sum() * 0.0
        ce = (balanced_cross_entropy(logits, labels) if balanced
              else F.cross_entropy(logits.float(), labels - 1, ignore_index=-1))
        return ce + dice_weight * dice_loss(logits, labels)
    weight = (labels > 0).float() + pseudo_weight * pseudo.float()
    per_pixel = F.cross_entropy(logits.float(), (labels.abs() - 1).clamp(min=0), reduction="none")
    ce = (per_pixel * weight).sum() / weight.sum()
    return ce + dice_weight * dice_loss(logits, labels.clamp(min=0))


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged per class, then over the classes present among the labelled pixels.

    A correction that is 98 % background counts as much for the other classes as for background,
    so it cannot teach "everything dark is background" by sheer number.
    """
    valid = labels > 0
    per_pixel = F.cross_entropy(logits.float(), (labels - 1).clamp(min=0), reduction="none")[valid]
    return _mean_per_class(per_pixel, (labels[valid] - 1).long(), logits.shape[1])


def _mean_per_class(values: torch.Tensor, classes: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of ``values`` within each of the ``k`` classes present in ``classes`` (0..k-1), then
    over those classes: every class weighs alike, however many pixels it has."""
    sums = torch.zeros(k, device=values.device).index_add_(0, classes, values)
    counts = torch.bincount(classes, minlength=k).float()
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, where: torch.Tensor,
                      temperature: float = 2.0, balanced: bool = False) -> torch.Tensor:
    """KL(teacher || student) at ``temperature`` (x T², Hinton et al.) over the pixels ``where``.

    ``teacher`` holds the starting model's probabilities (B, K, H, W); softening them by T is
    ``p^(1/T)`` renormalised. Learning without Forgetting (Li & Hoiem 2016): what the model got
    right away from the corrections stays right. ``balanced``: the KL is averaged per class of the
    teacher's answer, then over those classes, so a phase on 1 % of the pixels (EBC's cracks) is
    kept as firmly as the matrix; a plain mean lets a fine-tune move it freely (docs/training.md).
    """
    if not bool(where.any()):
        return logits.sum() * 0.0
    t = teacher.float().clamp(min=1e-6) ** (1.0 / temperature)
    t = t / t.sum(dim=1, keepdim=True)
    log_q = F.log_softmax(logits.float() / temperature, dim=1)
    kl = (t * (t.log() - log_q)).sum(dim=1)
    if not balanced:
        return kl[where].mean() * temperature**2
    return _mean_per_class(kl[where], teacher.argmax(dim=1)[where], teacher.shape[1]) * temperature**2


def correction_loss(logits: torch.Tensor, target: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                    distill_weight: float = 1.0, temperature: float = 2.0, dice_weight: float = 1.0,
                    balanced: bool = False, balanced_distill: bool = False) -> torch.Tensor:
    """Fine-tuning on corrections: cross-entropy (``balanced``: per class, see
    :func:`balanced_cross_entropy`) + Dice on the corrected/accepted labels, plus
    ``distill_weight`` x distillation to the starting model on every other pixel.

    ``target`` is the labels (B, H, W) or (labels, teacher probabilities (B, K, H, W)); pixels whose
    teacher probabilities are all 0 are not distilled (held out to measure the change there). Plain
    cross-entropy is the default: measured on EBC2, the balanced one made a rare phase (crack)
    over-predicted on the images that were not corrected (docs/training.md).
    """
    labels, teacher = target if isinstance(target, tuple | list) else (target, None)
    labels = labels.clamp(min=0)
    loss = logits.sum() * 0.0
    if bool((labels > 0).any()):
        ce = (balanced_cross_entropy(logits, labels) if balanced
              else F.cross_entropy(logits.float(), labels - 1, ignore_index=-1))
        loss = ce + dice_weight * dice_loss(logits, labels)
    if teacher is not None and distill_weight > 0:
        # soft targets of 0 mark pixels kept out of the distillation (csunet_train.unseen)
        where = (labels == 0) & (teacher.float().sum(dim=1) > 0.5)
        loss = loss + distill_weight * distillation_loss(logits, teacher, where, temperature, balanced_distill)
    return loss
