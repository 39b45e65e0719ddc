"""Semi-supervised training on the pixels nobody labelled: a mean teacher's confident answers.

A few-shot user has, besides the labels, the unlabelled pixels of the labelled images and usually
more images of the same material. The teacher is an exponential moving average of the student's
weights (Tarvainen & Valpola 2017); it labels a mildly augmented view of each crop, and where it
is confident (top probability >= ``threshold``, FixMatch's rule, Sohn et al. 2020) the student
learns that answer on the strongly augmented view. Early in training the teacher is unsure (a new
output layer starts near uniform), so few pixels pass the threshold: the term ramps itself up.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MeanTeacher", "pseudo_label_loss", "SemiLoss", "SemiTarget"]

#: the batch target with a weak view: (labels (B, H, W), weakly augmented images (B, C, H, W))
SemiTarget = tuple[torch.Tensor, torch.Tensor]


class MeanTeacher:
    """An exponential moving average of a network's weights, used only to label images."""

    def __init__(self, student: nn.Module, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(student).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """teacher = decay x teacher + (1 - decay) x student; buffers (BatchNorm statistics) are
        copied. The decay warms up as (1 + n) / (10 + n) so the first steps are not forgotten slowly."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        teacher = dict(self.model.named_parameters())
        for name, p in student.named_parameters():
            teacher[name].lerp_(p.detach().to(teacher[name].dtype), 1.0 - decay)
        buffers = dict(self.model.named_buffers())
        for name, b in student.named_buffers():
            buffers[name].copy_(b)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Class probabilities (B, K, H, W) of the teacher, in float32."""
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = self.model(x)
        return logits.float().softmax(dim=1)


def pseudo_label_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, where: torch.Tensor,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the student on the teacher's answer at the pixels ``where`` the teacher is
    at least ``threshold`` confident, averaged over all ``where`` pixels (so few confident pixels
    weigh little). Returns (loss, share of ``where`` pixels that passed)."""
    confidence, answer = teacher_probs.max(dim=1)
    keep = (where & (confidence >= threshold)).float()
    n_where = where.sum().clamp(min=1)  # tensors throughout: no GPU synchronisation per step
    per_pixel = F.cross_entropy(logits.float(), answer, reduction="none")
    passed = (keep.sum() / n_where).detach()
    return (per_pixel * keep).sum() / n_where, passed


class SemiLoss:
    """``supervised(logits, labels) + weight x pseudo_label_loss`` on the unlabelled pixels (label 0):
    the loss of a batch whose target carries a weak view (``CropDataset(weak_view=True)``)."""

    def __init__(self, supervised: Any, teacher: MeanTeacher, weight: float, threshold: float,
                 dtype: torch.dtype | None = None) -> None:
        self.supervised, self.teacher, self.weight, self.threshold, self.dtype = (
            supervised, teacher, float(weight), float(threshold), dtype)
        self.passed = torch.zeros(())  # share of unlabelled pixels the teacher labelled in the last batch

    def __call__(self, logits: torch.Tensor, target: SemiTarget) -> torch.Tensor:
        labels, weak = target
        loss = self.supervised(logits, labels)
        where = labels == 0
        if self.weight > 0 and bool(where.any()):  # one check per step spares a needless teacher pass
            probs = self.teacher.predict(weak, self.dtype)
            term, self.passed = pseudo_label_loss(logits, probs, where, self.threshold)
            loss = loss + self.weight * term
        return loss
