"""napari writer: a Labels layer to a compressed label TIFF that remembers its classes.

The class names and colours go into the TIFF description (JSON), so this plugin's reader and the
fine-tune panel get them back; other tools see a plain uint8/uint16 label image. A known pixel size
(``meta["pixel_size_um"]``, or a layer scale in µm) is kept as the TIFF resolution (pixels per
centimetre), which :func:`napari_csunet.images.pixelsize.read_pixel_size` and ImageJ read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from .layerdata import class_names_from_features

__all__ = ["write_labels"]


def _colors_from(meta: dict[str, Any], k: int) -> list[str] | None:
    stored = (meta.get("metadata") or {}).get("class_colors")
    if stored and len(stored) == k:
        return list(stored)
    return None


def _pixel_size_um(meta: dict[str, Any]) -> tuple[float, float] | None:
    """(y, x) µm per pixel from ``pixel_size_um`` or from a napari layer's scale in micrometres."""
    if meta.get("pixel_size_um"):
        return float(meta["pixel_size_um"]), float(meta["pixel_size_um"])
    units, scale = meta.get("units"), meta.get("scale")
    if units is not None and scale is not None and len(units) >= 2 and \
            all(str(u) in ("micrometer", "um", "µm") for u in list(units)[-2:]):
        return float(scale[-2]), float(scale[-1])
    return None


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write ``data`` (labels, 0 = unlabelled) atomically; return the written path."""
    import tifffile

    labels = np.asarray(data)
    if labels.dtype.kind not in "uib":
        raise ValueError(f"{path}: labels must be integers, got {labels.dtype}")
    top = int(labels.max()) if labels.size else 0
    labels = labels.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)
    names = class_names_from_features(meta.get("features"), meta.get("metadata"))
    description = {"shape": list(labels.shape)}
    if names:
        description["class_names"] = names
        description["class_colors"] = _colors_from(meta, len(names))
    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        target = target.with_suffix(".tif")
    size = _pixel_size_um(meta)
    extra = {"resolution": (1e4 / size[1], 1e4 / size[0]), "resolutionunit": "CENTIMETER"} if size else {}
    with atomic_path(target, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, labels, compression="zlib", description=json.dumps(description), metadata=None,
                         **extra)
    return [str(target)]
