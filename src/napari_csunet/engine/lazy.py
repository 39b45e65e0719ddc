"""Images larger than memory: array-likes (zarr, OME-Zarr, dask, big tiled TIFFs) read lazily.

Why: stitched SEM maps of 20k-50k pixels a side live in chunked files; the inference engine reads
them tile by tile (:meth:`napari_csunet.engine.predictor.Segmenter.predict_to`) and writes chunked zarr,
so memory never grows with the image. This module opens such files without reading their pixels,
takes normalisation statistics band by band, and checks blocks as they are read. zarr is imported
inside the functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..images.reading import ImageError, to_model_channels

__all__ = ["checked_pixels", "lazy_stats", "open_lazy", "is_lazy_input", "STATS_PIXELS"]

STATS_PIXELS = 4 * 2**20  # normalisation statistics use at most about this many pixels
#: TIFFs with more pixels than this are read lazily through tifffile's zarr store
LAZY_TIFF_PIXELS = 64 * 2**20


def checked_pixels(block: Any, name: str) -> np.ndarray:
    """Raw pixels of a block read from an array-like: (H, W) or (H, W, C<=3), checked."""
    arr = np.asarray(block)
    if arr.dtype.kind not in "uifb":
        raise ImageError(f"{name}: unsupported pixel type {arr.dtype}; use 8/16-bit integers or floats")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError(f"{name}: contains NaN or infinite pixels; replace them (e.g. np.nan_to_num) first")
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[-1] in (1, 2) else arr[..., :3]
    return arr


def lazy_stats(source: Any, in_chans: int, rows: int = 1024, name: str = "image") -> tuple[float, float]:
    """Mean and (floored) std of an (H, W[, C]) array-like read band by band, never whole: exact up
    to ``STATS_PIXELS``, beyond that from a regular grid of about that many pixels."""
    h, w = int(source.shape[0]), int(source.shape[1])
    step = max(1, int(np.ceil(np.sqrt(h * w / STATS_PIXELS))))
    rows = max(step, rows // step * step)
    total, total_sq, n = 0.0, 0.0, 0
    parts = []
    for r in range(0, h, rows):
        x = to_model_channels(checked_pixels(source[r:r + rows], name)[::step, ::step], in_chans).astype(np.float64)
        total, n = total + float(x.sum()), n + x.size
        parts.append(x)
    mean = total / n
    for x in parts:
        total_sq += float(np.square(x - mean).sum())
    std = (total_sq / n) ** 0.5
    return mean, max(std, 1e-6 * max(1.0, abs(mean)), 1e-8)


def is_lazy_input(path: str | Path) -> bool:
    """True for zarr/OME-Zarr folders and TIFFs above ``LAZY_TIFF_PIXELS`` (checked from the header)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr" or (path.is_dir() and any((path / f).exists() for f in
                                                                  ("zarr.json", ".zarray", ".zgroup"))):
        return True
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
        except Exception:  # damaged files are reported by the normal reader
            return False
        return int(np.prod(shape[-3:] if len(shape) > 2 and shape[-1] <= 4 else shape[-2:])) > LAZY_TIFF_PIXELS
    return False


def open_lazy(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(the full-resolution 2D array-like (H, W[, C]), facts: ``kind`` zarr/ome-zarr/tiff and, for
    OME-Zarr, ``axes``). An OME-Zarr image gives its level 0 with leading axes (t, c, z) of size 1
    dropped; a TIFF is opened through tifffile's zarr store (tiles read on demand)."""
    import zarr

    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        store = tifffile.imread(path, aszarr=True)
        node = zarr.open(store, mode="r")
        arr = node if hasattr(node, "shape") else node["0"]
        return _squeeze(arr, path), {"kind": "tiff"}
    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return _squeeze(node, path), {"kind": "zarr"}
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise ImageError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata; pass the array's path")
    level0 = node[multiscales[0]["datasets"][0]["path"]]
    axes = [a["name"] if isinstance(a, dict) else a for a in multiscales[0].get("axes", [])]
    return _squeeze(level0, path), {"kind": "ome-zarr", "axes": axes}


class _Squeezed:
    """An array-like view of ``arr`` with leading length-1 axes dropped (slicing stays lazy)."""

    def __init__(self, arr: Any, drop: int) -> None:
        self.arr, self.drop = arr, drop
        self.shape = tuple(arr.shape[drop:])
        self.dtype = arr.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.arr[(0,) * self.drop + key])


def _squeeze(arr: Any, path: Path) -> Any:
    drop = 0
    while len(arr.shape) - drop > 2 and arr.shape[drop] == 1 and not (len(arr.shape) - drop == 3 and arr.shape[-1] <= 4):
        drop += 1
    shape = arr.shape[drop:]
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] > 4):
        raise ImageError(f"{path}: array of shape {tuple(arr.shape)} is not one 2D grey or colour image; "
                         "stacks and channels-first mosaics are not read lazily yet")
    return arr if drop == 0 else _Squeezed(arr, drop)
