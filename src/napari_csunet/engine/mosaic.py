"""Segmenting a mosaic larger than memory into chunked zarr labels (``csunet segment`` and the GUI).

Why: a stitched 32k^2 SEM map is 1 GB of pixels and its probabilities 6 GB; the engine reads the
image tile by tile (:mod:`napari_csunet.engine.lazy`) and writes finished bands of labels straight into a
chunked zarr, so peak memory is the model, one tile batch and one band. The labels are written as
an OME-Zarr labels image (``multiscales`` + ``image-label`` with class colours and names, format
0.4 on zarr v2 storage, readable by napari-ome-zarr and ome-zarr-py) when the input is OME-Zarr,
else as a plain zarr array with the classes in its attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..colors import hex_rgb
from .lazy import open_lazy

if TYPE_CHECKING:  # pragma: no cover
    from ..models.modelfile import ModelInfo
    from .predictor import Segmenter

__all__ = ["segment_mosaic", "create_labels_zarr", "class_counts", "CHUNK"]

CHUNK = 1024  # zarr chunk side of the outputs


def _open_group(path: Path) -> Any:
    import zarr

    try:
        return zarr.open_group(str(path), mode="w", zarr_format=2)
    except TypeError:  # zarr 2 has no zarr_format argument (and writes format 2)
        return zarr.open_group(str(path), mode="w")


def create_labels_zarr(path: str | Path, shape: tuple[int, ...], info: ModelInfo, ome: bool = False,
                       dtype: str = "uint8", name: str = "labels") -> Any:
    """A chunked zarr array for labels (or, with ``dtype`` float16 and shape (K, H, W),
    probabilities) at ``path``; with ``ome`` an OME-Zarr image group holding it as level ``0``."""
    import zarr

    path = Path(path)
    chunks = (1,) * (len(shape) - 2) + (CHUNK, CHUNK)
    classes = {"class_names": list(info.class_names), "class_colors": list(info.class_colors), "content": name}
    if not ome:
        arr = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        arr.attrs.update(classes)
        return arr
    group = _open_group(path)
    axes = [{"name": "c", "type": "channel"}] * (len(shape) - 2) + [{"name": "y", "type": "space"},
                                                                    {"name": "x", "type": "space"}]
    group.attrs.update({
        "multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(shape)}]}]}],
        **({"image-label": {"version": "0.4", "source": {"image": "../../"},
                            "colors": [{"label-value": k + 1, "rgba": [*hex_rgb(c), 255]} for k, c in enumerate(info.class_colors)],
                            "properties": [{"label-value": k + 1, "class": n} for k, n in enumerate(info.class_names)]}}
           if dtype == "uint8" else {}),
        **classes,
    })
    create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3, zarr 2
    return create("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


def class_counts(labels: Any, num_classes: int, rows: int = CHUNK, cols: int = 4 * CHUNK) -> np.ndarray:
    """Pixels of each label 0..K of a (zarr) label image, counted block by block: ``np.bincount``
    makes an int64 copy of what it counts, so whole bands of a wide mosaic (4096 rows of a 32k map:
    1 GB) would cost more than the segmentation itself (measured: the peak of ``--mosaic``)."""
    counts = np.zeros(num_classes + 1, np.int64)
    for r in range(0, int(labels.shape[0]), rows):
        for c in range(0, int(labels.shape[1]), cols):
            block = np.asarray(labels[r:r + rows, c:c + cols]).ravel()
            counts += np.bincount(block, minlength=num_classes + 1)[:num_classes + 1]
    return counts


def segment_mosaic(seg: Segmenter, source: str | Path | Any, out: str | Path, *, probs: bool = False,
                   tta: bool = False, progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
                   name: str | None = None) -> dict[str, Any]:
    """Segment a zarr/OME-Zarr/TIFF file (or an opened 2D array-like) into ``out`` (a ``.zarr``
    path; probabilities, if asked, into ``<out stem>_probs.zarr``). Returns what was written and the
    area fractions of the analysed pixels."""
    facts: dict[str, Any] = {"kind": "array"}
    if isinstance(source, (str, Path)):
        name = name or str(source)
        source, facts = open_lazy(source)
    name = name or "image"
    out = Path(out)
    h, w = int(source.shape[0]), int(source.shape[1])
    ome = facts["kind"] == "ome-zarr"
    labels_store = create_labels_zarr(out, (h, w), seg.info, ome=ome)
    probs_store = None
    if probs:
        probs_path = out.with_name(out.stem + "_probs.zarr")
        probs_store = create_labels_zarr(probs_path, (seg.info.num_classes, h, w), seg.info, ome=ome,
                                         dtype="float16", name="probabilities")
    seg.predict_to(source, labels_store, probs=probs_store, tta=tta, progress=progress, cancel=cancel, name=name)
    counts = class_counts(labels_store, seg.info.num_classes)[1:]
    fractions = counts / max(int(counts.sum()), 1)
    written = {"labels": str(out)} | ({"probs": str(out.with_name(out.stem + "_probs.zarr"))} if probs else {})
    return {"image": name, "shape": [h, w], "input_kind": facts["kind"], "written": written,
            "area_fractions": {n: float(f) for n, f in zip(seg.info.class_names, fractions, strict=True)}}


def mosaic_row(seg: Segmenter, path: Path, out_dir: Path, stem: str, probs: bool, tta: bool = False,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``csunet segment``'s result for one lazily read input: ``<stem>_labels.zarr`` (and
    ``_probs.zarr``) in ``out_dir``; no overlay or particle tables (they would need the whole image)."""
    import time

    start = time.perf_counter()
    summary = segment_mosaic(seg, path, out_dir / f"{stem}_labels.zarr", probs=probs, tta=tta, progress=progress,
                             name=str(path))
    return {"input": str(path), "shape": summary["shape"], "input_kind": summary["input_kind"], **summary["written"],
            "area_fractions": summary["area_fractions"], "seconds": round(time.perf_counter() - start, 3)}
