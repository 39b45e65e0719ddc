"""Segmentation metrics from a confusion matrix (numpy only).

Labels are 1..K with 0 = unlabelled: pixels whose target is 0 are ignored. Three IoUs are reported
and must always be named:

- ``iou_per_class`` / ``miou``: the usual per-class IoU and its mean over classes present in the
  target or the prediction;
- ``iou_paper``: the metric of the NASA and CS-UNet papers, segmentation_models_pytorch's
  ``IoU(threshold=0.5)`` over one-hot channels, i.e. micro-averaged over classes. For argmax
  predictions it equals ``accuracy / (2 - accuracy)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["confusion_matrix", "metrics_from_confusion", "segmentation_metrics", "change_from_confusion", "label_change"]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = target class, columns = predicted class; target 0 is ignored."""
    pred = np.asarray(pred).ravel()
    target = np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels but the target has {target.size}")
    keep = target > 0
    t = target[keep].astype(np.int64) - 1
    p = pred[keep].astype(np.int64) - 1
    if t.size and t.max() >= num_classes:
        raise ValueError(f"target holds label {t.max() + 1} but there are only {num_classes} classes")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"prediction labels must be 1..{num_classes}")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class IoU, mean IoU, pixel accuracy and the paper's (micro-averaged) IoU."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i + 1}" for i in range(k)]
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    union = tp + fp + fn
    total = cm.sum()
    per_class = {n: (float(tp[i] / union[i]) if union[i] > 0 else None) for i, n in enumerate(names)}
    present = [v for v in per_class.values() if v is not None]
    tp_all, fp_all, fn_all = tp.sum(), fp.sum(), fn.sum()
    return {
        "miou": float(np.mean(present)) if present else None,
        "iou_paper": float(tp_all / (tp_all + fp_all + fn_all)) if total > 0 else None,
        "pixel_accuracy": float(tp_all / total) if total > 0 else None,
        "iou_per_class": per_class,
        "pixels": int(total),
    }


def segmentation_metrics(pred: np.ndarray, target: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """All metrics for one prediction (labels 1..K) against a target (0 = ignore)."""
    return metrics_from_confusion(confusion_matrix(pred, target, len(class_names)), class_names)


def change_from_confusion(cm: np.ndarray) -> tuple[float, dict[int, float]]:
    """How much one answer differs from another, from their (K, K) confusion matrix (rows: the
    old answer): the share of pixels whose class changes, and per class index present in either,
    1 - IoU(old, new) (roughly what that class's IoU against any truth can move by)."""
    metrics = metrics_from_confusion(cm)
    per_class = {c: round(1 - iou, 4) for c, iou in enumerate(metrics["iou_per_class"].values()) if iou is not None}
    accuracy = metrics["pixel_accuracy"]
    return (1 - accuracy if accuracy is not None else 0.0), per_class


def label_change(old: np.ndarray, new: np.ndarray, num_classes: int) -> tuple[float, dict[int, float]]:
    """:func:`change_from_confusion` of two label maps (1..K) of the same pixels."""
    return change_from_confusion(confusion_matrix(new, old, num_classes))
