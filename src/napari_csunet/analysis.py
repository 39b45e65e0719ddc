"""What a materials scientist reads off a segmentation: phase area fractions and particle sizes.

Labels are 1..K with 0 = unlabelled (ignored). Particles are 8-connected regions of one class
(scikit-image ``label``; areas and equivalent diameters as ``regionprops`` defines them); stacks are measured slice by slice and pooled, since
the slices of a micrograph stack are usually separate sections. Sizes are in pixels: the equivalent
diameter is that of the disc with the particle's area. The segmentation metrics live in
:mod:`napari_csunet.metrics` and are re-exported here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .datasets import MaskError
from .io import ImageError
from .metrics import confusion_matrix, metrics_from_confusion, segmentation_metrics
from .safetext import csv_row

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import Sample
    from .inference import Segmenter

__all__ = [
    "area_fractions", "particle_sizes", "class_statistics", "STAT_FIELDS", "statistics_csv", "evaluate_samples",
    "METRIC_NOTES",
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
    from skimage.measure import label

    areas = []
    for plane in np.asarray(mask, dtype=bool).reshape((-1,) + mask.shape[-2:]):
        if plane.any():
            # region areas by bincount: regionprops' "area", ~20x faster on noisy masks of 10^4+ particles
            counts = np.bincount(label(plane, connectivity=2).ravel())[1:]
            areas.append(counts[counts >= min_area])
    area = np.concatenate(areas).astype(np.float64) if areas else np.zeros(0)
    return area, np.sqrt(4.0 * area / np.pi)  # regionprops' equivalent_diameter_area


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


def statistics_csv(rows: Iterable[dict[str, Any]], leading: Sequence[str] = (),
                   fields: Sequence[str] = STAT_FIELDS) -> str:
    """CSV text of statistics rows, one writer for the CLI's summary and the GUI's export.

    Columns are ``leading`` (e.g. ``("image",)``) then ``fields`` (:data:`STAT_FIELDS`, or
    :data:`napari_csunet.measurements.FIELDS` for the rows in physical units); other keys are left
    out and None is written as an empty cell; text starting with = + - @ gets a leading '.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=(*leading, *fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(map(csv_row, rows))  # names from files must not run as spreadsheet formulas
    return buffer.getvalue()


#: what each reported number is (always printed with the numbers)
METRIC_NOTES = {
    "iou_per_class": "per-class IoU = TP / (TP + FP + FN) over all evaluated pixels",
    "miou": "mean of the per-class IoUs (classes present in the masks or the predictions)",
    "iou_paper": "the NASA / CS-UNet papers' IoU: micro-averaged over one-hot classes "
                 "(segmentation_models_pytorch IoU(threshold=0.5)) = accuracy / (2 - accuracy)",
    "pixel_accuracy": "fraction of labelled pixels predicted correctly",
    "pooling": "overall numbers come from the confusion matrix summed over all images; unlabelled (0) pixels are ignored",
}


def _check_classes(samples: Sequence[Sample], class_names: Sequence[str]) -> None:
    for s in samples:  # unnamed label maps are checked label by label (at most the model's K)
        if s.spec.names and len(s.spec.names) != len(class_names):
            where = s.mask or s.image
            raise MaskError(f"{where}: the data has {len(s.spec.names)} classes {list(s.spec.names)} but the model has "
                            f"{len(class_names)} {list(class_names)}; use a model trained for these classes")


def _evaluate_one(segmenter: Segmenter, sample: Sample, k: int) -> np.ndarray:
    if sample.mask is None:
        raise MaskError(f"{sample.image}: no mask found next to it (annotation folder, same file name)")
    image, target = sample.load()
    top = int(target.max())
    if top > k:
        raise MaskError(f"{sample.mask}: label {top} is above the model's {k} classes; evaluate with a model "
                        f"trained for {top} classes (csunet train --data ... makes one), or fix the mask")
    pred = segmenter.predict(image, name=str(sample.image)).labels
    return confusion_matrix(pred, target, k)


def evaluate_samples(segmenter: Segmenter, samples: Sequence[Sample], *, skip_bad: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Segment each sample and score it against its mask (see :data:`METRIC_NOTES`).

    Returns the overall metrics (from the summed confusion matrix) plus ``per_image``,
    ``confusion_matrix``, ``class_names``, ``failed`` and ``note``. With ``skip_bad`` an unreadable
    image or mask is listed in ``failed`` and the others are still scored; otherwise it raises.
    """
    names = list(segmenter.info.class_names)
    k = len(names)
    _check_classes(samples, names)
    total = np.zeros((k, k), dtype=np.int64)
    per_image: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for i, sample in enumerate(samples):
        try:
            cm = _evaluate_one(segmenter, sample, k)
        except (ImageError, MaskError, ValueError, OSError) as exc:
            if not skip_bad:
                raise
            failed.append({"image": str(sample.image), "error": str(exc)})
        else:
            total += cm
            per_image.append({"image": str(sample.image), "mask": str(sample.mask), **metrics_from_confusion(cm, names)})
        if progress is not None:
            progress(i + 1, len(samples))
    return {**metrics_from_confusion(total, names), "per_image": per_image, "failed": failed,
            "confusion_matrix": total.tolist(), "class_names": names, "note": dict(METRIC_NOTES)}
