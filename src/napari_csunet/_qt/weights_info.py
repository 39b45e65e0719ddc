"""What the model panel says about a preset's weight sources: cached, downloadable, or where to
drop the file when offline. Reads the weights module's listing; never downloads."""

from __future__ import annotations

__all__ = ["source_status"]


def source_status(preset: str, cnn: str | None, swin: str | None) -> list[str]:
    """One line per chosen source."""
    lines = []
    for part, source in (("CNN", cnn), ("Swin", swin)):
        if source:
            lines.append(f"{part}: {source}")
    return lines
