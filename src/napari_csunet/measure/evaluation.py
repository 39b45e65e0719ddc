"""How good a model is on labelled images: the numbers ``csunet evaluate`` and the benchmarks print.

Labels are 1..K with 0 = unlabelled (ignored); the metrics come from :mod:`napari_csunet.measure.metrics`
(every number says which it is: :data:`METRIC_NOTES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..images.datasets import MaskError
from ..images.reading import ImageError
from .metrics import confusion_matrix, metrics_from_confusion

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.predictor import Segmenter
    from ..images.datasets import Sample

__all__ = ["evaluate_samples", "METRIC_NOTES"]


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


def _evaluate_one(segmenter: Segmenter, sample: Sample, k: int, tta: bool) -> np.ndarray:
    if sample.mask is None:
        raise MaskError(f"{sample.image}: no mask found next to it (annotation folder, same file name)")
    image, target = sample.load()
    top = int(target.max())
    if top > k:
        raise MaskError(f"{sample.mask}: label {top} is above the model's {k} classes; evaluate with a model "
                        f"trained for {top} classes (csunet train --data ... makes one), or fix the mask")
    pred = segmenter.predict(image, name=str(sample.image), tta=tta).labels
    return confusion_matrix(pred, target, k)


def evaluate_samples(segmenter: Segmenter, samples: Sequence[Sample], *, skip_bad: bool = False,
                     progress: Callable[[int, int], None] | None = None, tta: bool = False) -> dict[str, Any]:
    """Segment each sample and score it against its mask (see :data:`METRIC_NOTES`); ``tta``
    averages each prediction over flips, as the Segment tab's option does.

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
            cm = _evaluate_one(segmenter, sample, k, tta)
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
            "confusion_matrix": total.tolist(), "class_names": names, "tta": tta, "note": dict(METRIC_NOTES)}
