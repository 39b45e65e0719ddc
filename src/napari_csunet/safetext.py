"""Names from files reach terminals, spreadsheets and file names: escape what each would act on."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["shown", "csv_cell", "csv_row", "file_stem"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: a spreadsheet reads a cell starting with these as a formula (OWASP's CSV injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def shown(text: object) -> str:
    """``text`` for a terminal: control characters (ESC, CR, ...) as ``\\x1b``-style escapes."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading ``'``; numbers stay."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: csv_cell(v) for k, v in row.items()}


def file_stem(name: str, fallback: str) -> str:
    """``name`` safe in a file name on every platform (letters, digits, ``._-``); ``fallback`` if none is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or fallback
