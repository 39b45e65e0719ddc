"""Dataclass fields that forms can offer: the help text and the limits, written once.

Job and settings dataclasses (``TrainConfig``, ``PretrainConfig``, ``Settings``) declare the
fields the GUI shows with :func:`option`; ``napari_csunet._qt.config_form`` builds magicgui forms
from them. GUI-free: the command line validates with the same dataclasses.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["option"]


def option(default: Any, help: str, **widget: Any) -> Any:
    """A dataclass field with a tooltip (``help``) and form limits: ``min``, ``max``, ``step``,
    ``decimals``, ``choices`` (a drop-down), ``label`` (default: the name with spaces)."""
    return field(default=default, metadata={"help": help, "widget": widget})
