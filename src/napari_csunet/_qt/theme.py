"""Colours that stay readable on napari's dark and light themes.

A class colour can be anything a model file says (the EBC starter's background is #404040, all
but invisible on the dark theme), so palette swatches are drawn with an outline in the theme's
text colour; the selected row of a list uses the theme's "current" colour behind its text colour,
focused or not (Qt's unfocused selection is nearly the row's background on the dark theme).
"""

from __future__ import annotations

from collections.abc import Callable

import napari
from qtpy.QtCore import QRectF, Qt
from qtpy.QtGui import QColor, QIcon, QPainter, QPen, QPixmap

__all__ = ["theme_color", "swatch_icon", "selection_style", "contrast_ratio", "follow_theme"]


def theme_color(viewer: napari.Viewer, key: str) -> str:
    """A colour of the viewer's current napari theme as #rrggbb (``text``, ``current``, ``background`` …)."""
    from napari.utils.theme import get_theme

    return getattr(get_theme(viewer.theme), key).as_hex(format="long")


def swatch_icon(color: str, outline: str, size: int = 14) -> QIcon:
    """A square of ``color`` with a 1.5 px ``outline``; "transparent" gives an outlined empty square
    with a diagonal (the eraser)."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    box = QRectF(1, 1, size - 2, size - 2)
    if color != "transparent":
        p.fillRect(box, QColor(color))
    p.setPen(QPen(QColor(outline), 1.5))
    p.drawRect(box)
    if color == "transparent":
        p.drawLine(box.bottomLeft(), box.topRight())
    p.end()
    return QIcon(pixmap)


def selection_style(viewer: napari.Viewer, widget_type: str = "QListWidget") -> str:
    """A style sheet that draws the selected item in the theme's text colour on its "current" colour."""
    text, current = theme_color(viewer, "text"), theme_color(viewer, "current")
    return (f"{widget_type}::item:selected, {widget_type}::item:selected:!active "
            f"{{ background-color: {current}; color: {text}; }}")


def _luminance(color: str) -> float:
    channels = []
    for value in QColor(color).getRgbF()[:3]:
        channels.append(value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4)
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def contrast_ratio(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours (1 to 21; 4.5 is the least for body text)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def follow_theme(viewer: napari.Viewer, apply: Callable[[], None]) -> None:
    """Call ``apply`` now and whenever the user switches napari's theme."""
    apply()
    viewer.events.theme.connect(lambda _event: apply())
