"""napari layer data for labelled micrographs, without importing napari or Qt.

A Labels layer shows a model's classes by name and colour: a direct colormap (label -> colour,
0 transparent) and a features table with an ``index`` column, so napari's status bar reads
"class: tertiary" under the cursor. Shared by the sample data, the reader and the widgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["UNLABELLED", "class_colormap", "class_features", "class_metadata", "labels_kwargs",
           "labels_layer_data", "class_names_from_features"]

UNLABELLED = "unlabelled"


def class_colormap(colors: Sequence[str]) -> dict[Any, str]:
    """Direct colormap for labels 1..K; 0 (unlabelled) and unknown values are transparent."""
    cmap: dict[Any, str] = {None: "transparent", 0: "transparent"}
    cmap.update({i + 1: c for i, c in enumerate(colors)})
    return cmap


def class_features(class_names: Sequence[str]) -> dict[str, list]:
    return {"index": list(range(len(class_names) + 1)), "class": [UNLABELLED, *class_names]}


def class_metadata(class_names: Sequence[str], class_colors: Sequence[str]) -> dict[str, list[str]]:
    """A labels layer's ``metadata`` entries that napari's Save writes into the file (our writer)."""
    return {"class_names": list(class_names), "class_colors": list(class_colors)}


def labels_kwargs(class_names: Sequence[str], class_colors: Sequence[str], name: str) -> dict[str, Any]:
    """Keyword arguments for ``napari.layers.Labels`` / ``viewer.add_labels``."""
    return {
        "name": name,
        "colormap": class_colormap(class_colors),
        "features": class_features(class_names),
        "metadata": class_metadata(class_names, class_colors),
        "opacity": 0.5,
    }


def labels_layer_data(labels: np.ndarray, class_names: Sequence[str], class_colors: Sequence[str],
                      name: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari LayerData tuple for a label image with named classes."""
    return labels, labels_kwargs(class_names, class_colors, name), "labels"


def class_names_from_features(features: Any, metadata: dict | None = None) -> list[str] | None:
    """Class names of labels 1..K from a layer's metadata or features table, if it has them."""
    if metadata and metadata.get("class_names"):
        return list(metadata["class_names"])
    try:
        index = [int(i) for i in features["index"]]
        classes = [str(c) for c in features["class"]]
    except (KeyError, TypeError, ValueError):
        return None
    named = {i: c for i, c in zip(index, classes, strict=False) if i > 0}
    if not named:
        return None
    return [named.get(i, f"class {i}") for i in range(1, max(named) + 1)]
