"""The Fine-tune tab's *Show what it changes*: a layer per open image that marks the pixels whose
class a fine-tuned model changes, drawn in the class it changes them to.

An offered model comes with "look at those areas with it, then keep it or revert"; these layers
are those areas. They are outputs (``OUTPUT`` metadata): not images to segment, not labels to
correct. Asking again replaces them (and only them: a layer of the user's with the same name stays).
"""

from __future__ import annotations

from collections.abc import Sequence

import napari
import numpy as np
from napari.layers import Image, Labels

from ..loop.compare import Comparison
from ..plugin.layerdata import labels_kwargs
from .common import OUTPUT

__all__ = ["CHANGES", "changes_layer_name", "show_changes"]

#: metadata key of a changes layer (the fine-tuned model's file name): ours to replace
CHANGES = "csunet_changes"


def changes_layer_name(image_name: str) -> str:
    return f"{image_name} changes"


def show_changes(viewer: napari.Viewer, images: Sequence[tuple[Image, np.ndarray]], comparison: Comparison,
                 model: str = "") -> list[Labels]:
    """Replace the changes layers of an earlier comparison by one per image (in the order of
    ``images``: the layer and the pixels that were compared) that is still open with those pixels."""
    for old in [lay for lay in viewer.layers if lay.metadata.get(CHANGES) is not None]:
        viewer.layers.remove(old)  # stale: another model, or an image compared before
    layers = []
    for (image, pixels), change in zip(images, comparison.changes, strict=True):
        if image not in viewer.layers or image.data is not pixels:  # closed, or other pixels, meanwhile
            continue
        kwargs = labels_kwargs(comparison.class_names, comparison.class_colors, changes_layer_name(image.name))
        kwargs["metadata"] = {**kwargs["metadata"], OUTPUT: True, CHANGES: model}
        ndim = change.changed.ndim
        layers.append(viewer.add_labels(change.changed, scale=image.scale[-ndim:], translate=image.translate[-ndim:],
                                        **(kwargs | {"opacity": 0.7})))  # a user's layer of that name stays ("[1]")
    return layers
