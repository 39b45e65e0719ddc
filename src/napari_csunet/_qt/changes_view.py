"""The Fine-tune tab's *Show what it changes*: a layer per open image that marks the pixels whose
class a fine-tuned model changes, drawn in the class it changes them to.

An offered model comes with "look at those areas with it, then keep it or revert"; these layers
are those areas. They are outputs (``OUTPUT`` metadata): not images to segment, not labels to
correct. Asking again replaces them.
"""

from __future__ import annotations

from collections.abc import Sequence

import napari
from napari.layers import Image, Labels

from ..loop.compare import Comparison
from ..plugin.layerdata import labels_kwargs
from .common import OUTPUT

__all__ = ["changes_layer_name", "show_changes"]


def changes_layer_name(image_name: str) -> str:
    return f"{image_name} changes"


def show_changes(viewer: napari.Viewer, images: Sequence[Image], comparison: Comparison) -> list[Labels]:
    """Add or update one changes layer per image still open (in the order of ``images``)."""
    layers = []
    for image, change in zip(images, comparison.changes, strict=True):
        if image not in viewer.layers:  # closed while the models were segmenting it
            continue
        name = changes_layer_name(image.name)
        existing = viewer.layers[name] if name in viewer.layers else None
        if isinstance(existing, Labels) and existing.data.shape == change.changed.shape:
            existing.data = change.changed
            layers.append(existing)
            continue
        if existing is not None:
            viewer.layers.remove(existing)
        kwargs = labels_kwargs(comparison.class_names, comparison.class_colors, name)
        kwargs["metadata"] = {**kwargs["metadata"], OUTPUT: True}
        ndim = change.changed.ndim
        layers.append(viewer.add_labels(change.changed, scale=image.scale[-ndim:], translate=image.translate[-ndim:],
                                        **(kwargs | {"opacity": 0.7})))
    return layers
