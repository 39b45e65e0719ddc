"""The other open images a fine-tune keeps as they are (``unlabelled`` in the training job).

A fine-tune on one corrected image drifts on the rest of the material unless it is also taught to
keep the starting model's answers on images nobody corrected. The micrographs the user has open
in napari but did not correct are exactly those: they are written to TIFF files the training
child predicts once with the starting model and distils to. Only what is cheap and safe to write
is taken: in-memory 2D grey or RGB(A) images (never a lazy dask/zarr array or a pyramid, reading
one is a long wait), not one of the plugin's probability/uncertainty layers, at most
:data:`MAX_OTHERS` of them, the most recently added first, none larger than :data:`MAX_SIDE`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import napari
import numpy as np
from napari.layers import Image

from ..loop.training_job import jobs_dir
from .common import is_input_image

__all__ = ["KEEP_OTHERS", "MAX_OTHERS", "MAX_SIDE", "other_open_images", "unlabelled_dir", "write_unlabelled"]

#: the key of ``settings.finetune`` that remembers the check box
KEEP_OTHERS = "keep_other_images"
#: how many other open images a fine-tune keeps (each one is predicted once by the child)
MAX_OTHERS = 4
#: the largest side of an image kept (larger ones cost the child more than they are worth)
MAX_SIDE = 4096
#: smaller than this, an image holds no crop worth learning from (as adaptation refuses)
MIN_SIDE = 16


def _keepable(layer: Image, max_side: int) -> bool:
    """An in-memory 2D grey or RGB(A) plane of finite pixels, between MIN_SIDE and ``max_side``."""
    data = layer.data
    if layer.multiscale or not isinstance(data, np.ndarray):  # dask, zarr: loading them is the user's wait
        return False
    plane = data.ndim == 2 or (data.ndim == 3 and layer.rgb and data.shape[-1] in (3, 4))
    if not plane or not MIN_SIDE <= min(data.shape[:2]) or max(data.shape[:2]) > max_side:
        return False
    if data.dtype.kind == "f":  # the child refuses NaN pixels: one such image would fail the fine-tune
        return bool(np.isfinite(data).all())
    return data.dtype.kind in "ui"


def other_open_images(viewer: napari.Viewer, exclude: Collection[str], limit: int = MAX_OTHERS,
                      max_side: int = MAX_SIDE) -> list[Image]:
    """The open images not named in ``exclude`` (the corrected ones) a fine-tune can keep, newest first."""
    out: list[Image] = []
    for layer in reversed(viewer.layers):  # the top of napari's layer list: the most recently added
        if len(out) == limit:
            break
        if (isinstance(layer, Image) and is_input_image(layer) and layer.name not in exclude
                and _keepable(layer, max_side)):
            out.append(layer)
    return out


def unlabelled_dir() -> Path:
    """One folder, reused: each fine-tune replaces the previous one's files."""
    return jobs_dir() / "unlabelled"


def write_unlabelled(images: Sequence[tuple[str, np.ndarray]], folder: Path | None = None) -> list[str]:
    """Remove the previous fine-tune's TIFFs from ``folder``, write ``(name, pixels)`` there (atomically,
    named after the layer); the paths in order."""
    from ..images.adaptation_images import write_images

    folder = folder or unlabelled_dir()
    for old in folder.glob("*.tif"):
        old.unlink(missing_ok=True)
    return [str(path) for path in write_images(images, folder)] if images else []
