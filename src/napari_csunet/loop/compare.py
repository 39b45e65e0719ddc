"""Where a fine-tuned model answers differently from the model before it, on the user's images.

A fine-tune that changes pixels nobody checked is offered, not made current, with the advice
"look at those areas with it, then keep it or revert" (``csunet_train.judge``). This module makes
that advice something to look at: both models segment the open images, and each image gets a map
of the pixels whose class changes (the new model's class there, 0 elsewhere) and, per class, how
much of it changes (1 - IoU between the two answers, as the judge counts it where nobody checked).
Pure NumPy and the engine's predictor: no Qt, no napari.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..images.databar import DataBar
from ..measure.metrics import label_change

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.predictor import Segmenter

__all__ = ["ModelChange", "Comparison", "model_change", "compare_models", "changes_text"]


@dataclass
class ModelChange:
    """One image: the pixels whose class changes and how much of each class."""

    name: str
    changed: np.ndarray  # the new model's class (1..K) where it differs from the old one's, else 0
    share: float  # of the analysed pixels (the data bar left out) whose class changes
    class_changed: dict[str, float]  # per class, 1 - IoU(old answer, new answer)


@dataclass
class Comparison:
    """Every image's change, and the classes (names, colours) the labels mean."""

    changes: list[ModelChange]
    class_names: list[str]
    class_colors: list[str]


def model_change(name: str, old: np.ndarray, new: np.ndarray, class_names: Sequence[str]) -> ModelChange:
    """Compare two label maps (1..K) of one image; they must have the same shape."""
    if old.shape != new.shape:
        raise ValueError(f"{name}: the two answers differ in shape: {old.shape} vs {new.shape}")
    differs = old != new
    changed = np.where(differs, new, 0).astype(new.dtype, copy=False)
    share, per_class = label_change(old, new, len(class_names))
    return ModelChange(name, changed, share, {n: per_class[c] for c, n in enumerate(class_names) if c in per_class})


def compare_models(old_file: str | Path | Segmenter, new_file: str | Path,
                   images: Sequence[tuple[str, np.ndarray, DataBar | None]],
                   segmenter_kwargs: dict[str, Any] | None = None,
                   cancel: Callable[[], bool] | None = None) -> Comparison:
    """Segment each ``(name, pixels, data bar)`` with both model files (their classes must match) and
    compare; the SEM data bar never reaches the models (0 in both answers), as in the Segment tab.
    The old model may be given loaded (the current one: not read and built a second time).

    Runs off the GUI thread: two predictions per image; ``cancel()`` returning True stops it
    (:class:`~napari_csunet.engine.predictor.Cancelled`) before the next batch.
    """
    from ..engine.predictor import Segmenter
    from ..images.databar import predict_outside

    kwargs = segmenter_kwargs or {}
    old = old_file if isinstance(old_file, Segmenter) else Segmenter.from_file(old_file, **kwargs)
    new = Segmenter.from_file(new_file, **kwargs)
    names = list(new.info.class_names)
    if list(old.info.class_names) != names:
        raise ValueError(f"the models have different classes ({list(old.info.class_names)} vs {names}): "
                         "their answers cannot be compared pixel by pixel")

    def answer(seg: Segmenter, name: str, pixels: np.ndarray, bar: DataBar | None) -> np.ndarray:
        return predict_outside(lambda im: seg.predict(im, name=name, cancel=cancel), pixels, bar).labels

    out = [model_change(name, answer(old, name, pixels, bar), answer(new, name, pixels, bar), names)
           for name, pixels, bar in images]
    return Comparison(out, names, list(new.info.class_colors))


def changes_text(changes: Sequence[ModelChange], limit: float = 0.005) -> str:
    """'image A: 0.6% of the pixels change (tertiary 10%, matrix 1%); image B: nothing changes'."""
    parts = []
    for change in changes:
        if not change.share:
            parts.append(f"{change.name}: nothing changes")
            continue
        classes = sorted(change.class_changed.items(), key=lambda kv: -kv[1])
        named = ", ".join(f"{n} {v:.0%}" for n, v in classes if v >= limit)
        parts.append(f"{change.name}: {change.share:.1%} of the pixels change" + (f" ({named})" if named else ""))
    return "; ".join(parts)
