"""Forms generated from a job dataclass's fields (magicgui), so the GUI never restates a limit.

A field declared with :func:`napari_csunet.form_fields.option` carries its help text and the form's
limits; :func:`config_form` turns the named fields into a magicgui ``Container`` whose values
are read back with :func:`form_values`, ready for the job (``TrainConfig.from_dict`` checks them),
and whose widgets :func:`form_rows` lays out in a panel's form.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from magicgui.widgets import ComboBox, Container, create_widget
from magicgui.widgets.bases import ButtonWidget

__all__ = ["config_form", "form_rows", "form_values"]


def _widget_for(name: str, annotation: type, value: Any, meta: Mapping[str, Any]):
    limits = dict(meta.get("widget", {}))
    label = limits.pop("label", name.replace("_", " "))
    decimals = limits.pop("decimals", None)
    choices = limits.pop("choices", None)
    if choices is not None:  # a fixed list (e.g. crop sizes): a drop-down, the value among them
        widget = ComboBox(name=name, label=label, choices=list(choices), value=value if value in choices
                          else choices[0])
    else:
        widget = create_widget(value=value, annotation=annotation, name=name, label=label, options=limits)
        if decimals is not None:  # Qt rounds to its decimals: small rates (3e-4) need more than the step's
            widget.native.setDecimals(decimals)
            widget.value = value
    widget.tooltip = meta.get("help")
    return widget


def config_form(config_type: type, names: Sequence[str], values: Mapping[str, Any] | None = None) -> Container:
    """A form of ``config_type``'s fields ``names`` (in that order), filled with ``values`` or the defaults."""
    values = values or {}
    hints = typing.get_type_hints(config_type)
    by_name = {f.name: f for f in fields(config_type)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"{config_type.__name__} has no field(s) {unknown}")
    widgets = []
    for name in names:
        field = by_name[name]
        default = field.default if field.default is not MISSING else None
        widgets.append(_widget_for(name, hints[name], values.get(name, default), field.metadata))
    return Container(widgets=widgets, labels=False)


def form_rows(form: Container) -> list:
    """``form_group`` rows for the form's widgets: ``(label, widget)``, check boxes alone (they carry
    their own text). Qt's form layout lines the labels up in napari's own font."""
    return [w.native if isinstance(w, ButtonWidget) else (w.label, w.native) for w in form]


def form_values(form: Container) -> dict[str, Any]:
    """The form's values by field name (floats rounded as the spin boxes show them)."""
    out = {}
    for widget in form:
        value = widget.value
        out[widget.name] = round(value, 8) if isinstance(value, float) else value
    return out
