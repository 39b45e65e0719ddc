"""napari reader for segmentation masks: NASA colour overlays and label TIFFs.

Claims only mask-like names (``*_labels.tif``, ``*_mask.tif`` ...; see napari.yaml) so napari's
own reader keeps opening micrographs without asking. Colour overlays decode with NASA's Super
colours; label TIFFs written by this plugin carry their class names and colours.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..colors import ColorError, check_colors
from ..images.datasets import SUPER_CLASSES, MaskError, decode_color_mask
from ..images.pixelsize import read_pixel_size
from ..images.reading import read_image
from ..models.modelfile import default_class_colors, numbered_class_names
from .layerdata import labels_layer_data

__all__ = ["napari_get_reader", "read_labels", "classes_from_tiff"]

_SUFFIXES = (".tif", ".tiff", ".png")


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return the reader when ``path`` is one mask file (or a list of them)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(Path(p).suffix.lower() in _SUFFIXES and Path(p).is_file() for p in paths):
        return None
    return read_labels


def classes_from_tiff(path: Path) -> tuple[list[str], list[str]] | None:
    """Class names/colours this plugin's writer stored in the TIFF description, if any."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = json.loads(tif.pages[0].description or "{}")
    except (ValueError, OSError, RecursionError, tifffile.TiffFileError):
        return None
    if isinstance(meta, dict) and isinstance(meta.get("class_names"), list) and meta["class_names"]:
        names = [str(n) for n in meta["class_names"]]
        try:  # colours from a file: bad or missing ones get the default palette, not an error later
            colors = check_colors(meta.get("class_colors") or [], "class_colors")
        except ColorError:
            colors = []
        return names, colors if len(colors) == len(names) else default_class_colors(len(names))
    return None


def read_labels(path: str | list[str]) -> list[tuple]:
    """One Labels layer per file, classes 1..K (0 = unlabelled)."""
    out = []
    for p in [path] if isinstance(path, str) else path:
        p = Path(p)
        raw = read_image(p)
        if raw.ndim == 3 and raw.shape[-1] in (3, 4):
            labels, names, colors = decode_color_mask(raw, SUPER_CLASSES, name=str(p)), SUPER_CLASSES.names, SUPER_CLASSES.colors
        elif raw.ndim == 2 and raw.dtype.kind in "ui":
            labels = raw
            stored = classes_from_tiff(p)
            k = max(int(labels.max()), 1)
            names, colors = stored or (numbered_class_names(k), default_class_colors(k))
        else:
            raise MaskError(f"{p}: {raw.dtype} {raw.shape} is neither a label map nor an RGB colour overlay")
        data, kwargs, kind = labels_layer_data(np.asarray(labels), names, colors, p.stem)
        size = read_pixel_size(p)
        if size is not None:  # labels measured in µm when reopened (the writer keeps the pixel size)
            kwargs.update(scale=(size.y_um, size.x_um), units=("um", "um"))
        out.append((data, kwargs, kind))
    return out

