"""Class colours: checked where they enter (dataset.json, model headers, the GUI), so a bad one
fails there with its name instead of in every later segmentation."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ColorError", "normalise_color", "check_colors", "hex_rgb"]

_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


class ColorError(ValueError):
    """A colour that is not ``#rrggbb`` (or ``#rgb``)."""


def normalise_color(color: object, what: str = "colour") -> str:
    """``#rrggbb`` (lower case) from ``#rrggbb``, ``rrggbb`` or ``#rgb``; ColorError otherwise."""
    match = _HEX.fullmatch(color) if isinstance(color, str) else None
    if match is None:
        shown = repr(color)[:40]
        raise ColorError(f"{what}: {shown} is not a colour; write it as '#rrggbb' (e.g. '#ff0000')")
    digits = match.group(1).lower()
    return "#" + (digits if len(digits) == 6 else "".join(c * 2 for c in digits))


def check_colors(colors: object, what: str = "colors") -> list[str]:
    """A list of normalised colours, or ColorError naming the first bad entry."""
    if not isinstance(colors, Sequence) or isinstance(colors, str):
        raise ColorError(f"{what}: expected a list of '#rrggbb' colours, got {type(colors).__name__}")
    return [normalise_color(c, f"{what}[{i}]") for i, c in enumerate(colors)]


def hex_rgb(color: str) -> tuple[int, int, int]:
    """(r, g, b) 0..255 of a colour :func:`normalise_color` accepts."""
    c = normalise_color(color)
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)
