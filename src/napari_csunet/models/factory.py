"""One way to get a network, as timm's ``create_model``: a preset, a model file, or one for new classes.

Why one place: the Model tab, training jobs and scripts start networks in these few ways, and what a
start did to a network (pretrained encoders loaded, an output layer made anew) belongs in the
model's provenance, written here once. torch is imported inside the functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .modelfile import ModelInfo

__all__ = ["create_model", "fit_head"]

#: the provenance previous models hand on to one made for new classes
_HANDED_ON = ("task", "steps", "metrics", "time", "corpus")


def fit_head(model: torch.nn.Module, class_names: Sequence[str], reason: str,
             always: bool = False) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """``model`` with an output layer for ``class_names`` when its own has another count (or
    ``always``: a pretrained model's outputs are pixels), and the ``head_reinitialised`` record of
    the change for the provenance (None: nothing changed). Every other weight is kept."""
    from . import with_new_head

    had = int(model.config.num_classes)
    if had == len(class_names) and not always:
        return model, None
    return (with_new_head(model, len(class_names), always=always),
            {"from_outputs": had, "to_classes": list(class_names), "reason": reason})


def create_model(spec: str, class_names: Sequence[str] | None = None, *, preset: bool = False,
                 in_chans: int | None = None, cnn: str | None = None, swin: str | None = None,
                 allow_download: bool = False) -> tuple[torch.nn.Module, ModelInfo]:
    """A network and its description (on the CPU).

    ``spec`` is a preset name (``preset=True`` says so when a model file could carry the name too):
    random weights for ``class_names`` plus the pretrained encoder sources ``cnn``/``swin``. Otherwise
    it is a model file path or catalogue name: the model as saved, or, given ``class_names``, a new,
    unsaved model for them whose output layer is made anew (fine-tune it before use).
    Raises KeyError (unknown name), FileNotFoundError, ModelFileError or WeightsError.
    """
    from .catalog import resolve_model
    from .modelfile import ModelInfo, load_model_file
    from .registry import get_preset

    kind, path = ("preset", None) if preset else resolve_model(spec)
    if kind == "preset":
        from ..weights.apply import build_preset_model

        names = list(class_names) if class_names else None
        if names is None:
            from .modelfile import numbered_class_names

            names = numbered_class_names(get_preset(spec).config.num_classes)
        return build_preset_model(spec, names, in_chans=in_chans, cnn=cnn, swin=swin, allow_download=allow_download)
    assert path is not None
    model, info = load_model_file(path, "cpu")
    if class_names is None:
        return model, info
    model, head = fit_head(model, class_names, "new classes", always=True)
    origin = info.name or path.name
    provenance = {"started_from": origin, "head_reinitialised": head,
                  "previous": {k: info.provenance.get(k) for k in _HANDED_ON}}
    return model, ModelInfo(model.config, list(class_names), preset=info.preset, sources=dict(info.sources),
                            provenance=provenance, name=f"{info.name or path.stem}-{'-'.join(class_names)[:40]}"
                            .replace(" ", "_"),
                            description=f"new model for {', '.join(class_names)} from {origin}; its output "
                                        "layer is untrained: fine-tune it on your corrections")
