"""What the Fine-tune and Model tabs say: durations, and scores only where they could have failed.

A score on pixels the user painted cannot fail (the model was wrong there by construction), so
these texts show before/after numbers only of *held-out reviewed* pixels (or, for models trained
on a labelled data set, of its separate validation images), always with the pixel count.
"""

from __future__ import annotations

from typing import Any

__all__ = ["duration", "held_out_score", "per_class_change", "decision_text", "model_score", "NOT_CHECKED",
           "other_images_use", "other_images_label", "other_images_note"]

#: the Model tab's word for a model no fair pixel ever judged
NOT_CHECKED = "not checked"


def other_images_use(new_head: bool, semi_weight: float) -> str | None:
    """What a fine-tune does with the other open images: ``"keep"`` a trained model's answers
    there (distillation), ``"learn"`` a mean teacher's confident answers (semi-supervised, for a
    model whose output layer is new, when ``semi_weight`` > 0), or None: a new model has no answers
    worth keeping, and semi-supervised training is off by default (measured: it slowed few-shot
    learning at a CPU's budget, docs/training.md)."""
    if not new_head:
        return "keep"
    return "learn" if semi_weight > 0 else None


def other_images_label(use: str | None) -> str:
    """The check box's words for :func:`other_images_use`."""
    return {"keep": "Keep the other open images as they are",
            "learn": "Learn from the other open images too (no labels needed)"}.get(
        use, "Other open images: not used (a new model has no answers to keep there yet)")


def other_images_note(count: int, use: str | None) -> str:
    """'and 2 other open images kept as they are' for the status line; '' for none."""
    if not count or use is None:
        return ""
    what = "learned from without labels" if use == "learn" else "kept as they are"
    return f" and {count} other open image{'s' if count != 1 else ''} {what}"


def duration(seconds: float | None) -> str:
    """m:ss, or h:mm:ss past an hour (an ETA the user reads at a glance)."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def _iou(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def held_out_score(metrics: dict[str, Any] | None) -> str:
    """'mIoU 0.712 on 5,120 held-out reviewed px' of an eval event; '' when the metrics are not of
    reviewed pixels (painted ones cannot judge)."""
    if not metrics or metrics.get("held_out") != "reviewed" or metrics.get("miou") is None:
        return ""
    return f"mIoU {metrics['miou']:.3f} on {metrics.get('pixels', 0):,} held-out reviewed px"


def per_class_change(group: dict[str, Any] | None) -> str:
    """'background 0.70→0.92 (14,149 px) · crack –→0.31 (212 px)' of a decision's ``new``/``earlier``."""
    if not group:
        return ""
    before = group["before"].get("iou_per_class") or {}
    after = group["after"].get("iou_per_class") or {}
    pixels = group.get("per_class_pixels") or {}
    parts = [f"{name} {_iou(before.get(name))}→{_iou(after.get(name))} ({pixels.get(name, 0):,} px)"
             for name in after if pixels.get(name, 0) or before.get(name) is not None or after.get(name) is not None]
    return " · ".join(parts)


def decision_text(decision: dict[str, Any], how: str) -> str:
    """The training child's verdict (its reason, already in a scientist's words), then the
    per-class before/after on the held-out reviewed pixels of this round and earlier rounds."""
    lines = [decision.get("reason") or "the training job did not judge the new model", f"({how})"]
    for key, what in (("new", "held-out reviewed pixels of this round"), ("earlier", "earlier rounds' images")):
        text = per_class_change(decision.get(key))
        if text:
            lines.append(f"IoU per class on the {what}: {text}")
    return "\n".join(lines)


def model_score(provenance: dict[str, Any]) -> str:
    """A model's score for the Model tab, only where it could have failed; :data:`NOT_CHECKED` for a
    fine-tune that nothing fair judged; '' for models without a segmentation score (pretrained).

    Fair: held-out reviewed pixels (``metrics["held_out"] == "reviewed"``), or validation images
    separate from the training images (a labelled data set's val split: the starter models).
    Not: a fine-tune on corrections without fair validation, or one validated on a part of its own
    training images (the strips/blocks of painted pixels that older versions held out).
    """
    metrics = provenance.get("metrics") or {}
    miou, pixels = metrics.get("miou"), metrics.get("pixels", 0)
    if metrics.get("held_out") == "reviewed" and isinstance(miou, float):
        return f"held-out reviewed mIoU {miou:.3f} ({pixels:,} px)"
    val = [str(name) for name in provenance.get("val_images") or []]
    train = set(provenance.get("train_images") or [])
    separate = val and "validation" not in provenance and not any("(held-out" in n or n in train for n in val)
    if separate and isinstance(miou, float):
        return f"val mIoU {miou:.3f}" + (f" ({pixels:,} px)" if pixels else "")
    if "validation" in provenance or provenance.get("mode") == "finetune" or isinstance(miou, float):
        return NOT_CHECKED
    return ""
