"""What a materials scientist reads off a segmentation: phase area fractions and particle sizes.

Labels are 1..K with 0 = unlabelled (ignored). Particles are 8-connected regions of one class
(scikit-image ``label`` + ``regionprops``); stacks are measured slice by slice and pooled, since
the slices of a micrograph stack are usually separate sections. Sizes are in pixels: the equivalent
diameter is that of the disc with the particle's area. The segmentation metrics live in
:mod:`napari_csunet.metrics` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import confusion_matrix, metrics_from_confusion, segmentation_metrics

__all__ = [
    "area_fractions", "particle_sizes", "class_statistics", "STAT_FIELDS",
    "confusion_matrix", "metrics_from_confusion", "segmentation_metrics",
]

#: the keys of each :func:`class_statistics` row, in CSV column order
STAT_FIELDS = ("class", "label", "pixels", "area_fraction", "particles", "mean_area_px",
               "mean_diameter_px", "median_diameter_px")


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" or labels.ndim not in (2, 3):
        raise ValueError(f"labels must be a 2D or 3D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f"labels must be 0..{num_classes} (0 = unlabelled), found {labels.min()}..{labels.max()}")
    return labels


def area_fractions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) fraction of the labelled pixels in each class 1..K; all zero when nothing is labelled."""
    labels = _check_labels(labels, num_classes)
    counts = np.bincount(labels.ravel(), minlength=num_classes + 1)[1:].astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def particle_sizes(mask: np.ndarray, min_area: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(areas, equivalent diameters) in pixels of the 8-connected particles of a boolean mask.

    A 3D mask is taken as a stack of 2D slices; particles of at least ``min_area`` pixels count.
    """
    from skimage.measure import label, regionprops_table

    areas, diameters = [], []
    for plane in np.asarray(mask, dtype=bool).reshape((-1,) + mask.shape[-2:]):
        if not plane.any():
            continue
        table = regionprops_table(label(plane, connectivity=2), properties=("area", "equivalent_diameter_area"))
        keep = table["area"] >= min_area
        areas.append(table["area"][keep])
        diameters.append(table["equivalent_diameter_area"][keep])
    if not areas:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(areas).astype(np.float64), np.concatenate(diameters).astype(np.float64)


def _mean(values: np.ndarray, fn=np.mean) -> float | None:
    return float(fn(values)) if values.size else None


def class_statistics(labels: np.ndarray, class_names: Sequence[str], min_area: int = 1) -> list[dict[str, Any]]:
    """One row per class (keys :data:`STAT_FIELDS`): pixels, area fraction, particle count and sizes."""
    labels = _check_labels(labels, len(class_names))
    fractions = area_fractions(labels, len(class_names))
    counts = np.bincount(labels.ravel(), minlength=len(class_names) + 1)[1:]
    rows = []
    for i, name in enumerate(class_names):
        areas, diameters = particle_sizes(labels == i + 1, min_area) if counts[i] else (np.zeros(0), np.zeros(0))
        rows.append({
            "class": name, "label": i + 1, "pixels": int(counts[i]), "area_fraction": float(fractions[i]),
            "particles": int(areas.size), "mean_area_px": _mean(areas),
            "mean_diameter_px": _mean(diameters), "median_diameter_px": _mean(diameters, np.median),
        })
    return rows
