"""What the Fine-tune tab says: durations, IoU and before/after scores in the same units."""

from __future__ import annotations

import re

__all__ = ["duration", "iou", "before_after", "held_out", "stem"]


def duration(seconds: float | None) -> str:
    """m:ss, or h:mm:ss past an hour (an ETA the user reads at a glance)."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def iou(metrics: dict | None) -> str:
    """'mIoU x, accuracy y' of an eval event's metrics, 'n/a' without validation."""
    if not metrics or metrics.get("miou") is None:
        return "n/a"
    acc = metrics.get("pixel_accuracy")
    return f"mIoU {metrics['miou']:.3f}" + (f", accuracy {acc:.1%}" if acc is not None else "")


def before_after(before: dict | None, after: dict | None) -> str:
    """'mIoU a → b, accuracy c → d': both scores in the same units."""
    if not before or not after or before.get("miou") is None or after.get("miou") is None:
        return f"{iou(before)} → {iou(after)}"
    return (f"mIoU {before['miou']:.3f} → {after['miou']:.3f}, accuracy {before['pixel_accuracy']:.1%} → "
            f"{after['pixel_accuracy']:.1%}")


def held_out(metrics: dict) -> str:
    """Names what the validation scores are measured on, with the pixel count."""
    return f"held-out corrected pixels ({metrics.get('pixels', 0):,} px):"


def stem(name: str) -> str:
    """A model name safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
