"""Adapt a pretrained model to the user's own micrographs, before or between fine-tunes.

"Adapt" is a short self-supervised pretraining job (``mode: pretrain``, see
``csunet_train.pretrain``) that continues from a pretrained model on images the user has but has
not labelled. The GUI runs it in the training child like a fine-tune
(``csunet_train.pretrain_config.adaptation_job`` builds the job); this module writes the open
images to disk for it. No Qt, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..safetext import file_stem

__all__ = ["AdaptationError", "write_images"]


class AdaptationError(ValueError):
    """Nothing to adapt on, or an image that cannot be used; the message says what to do."""


def write_images(images: Sequence[tuple[str, np.ndarray]], folder: str | Path) -> list[Path]:
    """Save 2D grey or RGB(A) arrays as TIFF files in ``folder`` (atomically); others are refused."""
    import tifffile

    from ..atomic import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, (name, data) in enumerate(images):
        array = np.asarray(data)
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
            raise AdaptationError(f"{name}: shape {array.shape} is not one 2D grey or colour image; adapt on a "
                                  "folder of images instead, or open one plane")
        if min(array.shape[:2]) < 16:
            raise AdaptationError(f"{name}: {array.shape[0]}x{array.shape[1]} pixels is too small to learn from")
        path = folder / f"{i:03d}-{file_stem(name, 'image')}.tif"
        with atomic_path(path, suffix=".tif") as tmp:
            tifffile.imwrite(tmp, array, compression="zlib")
        written.append(path)
    if not written:
        raise AdaptationError("no image to adapt on: open micrographs in napari or choose a folder")
    return written
