"""Cross-entropy + soft Dice over labelled pixels only (label 0 = unlabelled is ignored;
negative labels are low-weight pseudo-labels, see :func:`segmentation_loss`).

Dice counters the class imbalance of micrographs (tertiary gamma-prime or cracks cover ~1% of the
pixels); cross-entropy keeps the gradients well behaved early on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["segmentation_loss", "dice_loss"]


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
                      pseudo_weight: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels + ``dice_weight`` x Dice loss; 0 if nothing is labelled.

    Negative labels ``-c`` are pseudo-labels (the model's own uncorrected prediction of class c):
    their cross-entropy counts ``pseudo_weight`` times a corrected pixel's (ignored at 0), and
    Dice sees corrected pixels only.
    """
    pseudo = labels < 0
    if pseudo_weight <= 0 or not bool(pseudo.any()):
        labels = labels.clamp(min=0)
        if not bool((labels > 0).any()):
            return logits.sum() * 0.0
        ce = F.cross_entropy(logits.float(), labels - 1, ignore_index=-1)
        return ce + dice_weight * dice_loss(logits, labels)
    weight = (labels > 0).float() + pseudo_weight * pseudo.float()
    per_pixel = F.cross_entropy(logits.float(), (labels.abs() - 1).clamp(min=0), reduction="none")
    ce = (per_pixel * weight).sum() / weight.sum()
    return ce + dice_weight * dice_loss(logits, labels.clamp(min=0))
