"""Unlabelled micrographs for self-supervised pretraining: folders of any size, 8/16-bit, grey or RGB.

Pretraining reuses the supervised crop sampler (:class:`csunet_train.sampling.CropDataset`): an
unlabelled image becomes a :class:`LabelledImage` whose "labels" are 1 on every real pixel, so the
sampler's padding of small images (label 0) marks exactly the pixels the loss must ignore.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_csunet.images.reading import ImageError, as_channels_last
from napari_csunet.images.reading import (
    read_whole_image as read_image,  # bounded: training holds whole images
)

from .data import DataError, LabelledImage

__all__ = ["IMAGE_SUFFIXES", "find_images", "read_unlabelled", "is_excluded"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
#: folders of a labelled dataset whose images are not pretraining material
_SKIP_PARTS = {"masks", "labels", "annotations"}


def is_excluded(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    """True when a glob pattern matches the file's name, its stem or its path relative to ``root``."""
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    candidates = (path.name, path.stem, rel, f"{root.name}/{rel}")
    return any(fnmatch.fnmatch(c, pat) for pat in patterns for c in candidates)


def _is_label_folder(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts[:-1] if path.is_relative_to(root) else ()
    return any(p.lower() in _SKIP_PARTS or p.lower().endswith("_annot") for p in parts)


def find_images(sources: Sequence[str | Path], exclude: Sequence[str] = ()) -> tuple[list[Path], list[Path]]:
    """Image files under ``sources`` (folders are searched recursively; label folders are skipped).

    Returns (kept, excluded). Raises :class:`DataError` when a source does not exist.
    """
    kept: list[Path] = []
    dropped: list[Path] = []
    for source in sources:
        root = Path(source)
        if root.is_file():
            files, base = [root], root.parent
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not _is_label_folder(p, root))
            base = root
        else:
            raise DataError(f"{root}: no such file or folder of images")
        for path in files:
            (dropped if is_excluded(path, base, exclude) else kept).append(path)
    return kept, dropped


def read_unlabelled(paths: Sequence[Path], max_side: int | None = None) -> tuple[list[LabelledImage], list[str]]:
    """Read every image that can be read; returns (images, warnings about the ones that cannot).

    ``max_side`` (optional) downsamples huge mosaics by striding so one image cannot fill memory.
    Raises :class:`DataError` when no image at all is readable.
    """
    items: list[LabelledImage] = []
    warnings: list[str] = []
    for path in paths:
        try:
            image = as_channels_last(read_image(path), str(path))
        except (ImageError, OSError, ValueError) as exc:
            warnings.append(f"{path}: skipped, cannot be read as an image ({exc})")
            continue
        if max_side and max(image.shape[:2]) > max_side:
            step = int(np.ceil(max(image.shape[:2]) / max_side))
            image = image[::step, ::step]
        if min(image.shape[:2]) < 16:
            warnings.append(f"{path}: skipped, {image.shape[0]}x{image.shape[1]} pixels is too small to learn from")
            continue
        valid = np.ones(image.shape[:2], dtype=np.uint8)
        items.append(LabelledImage(image, valid, path.stem))
    if not items:
        where = ", ".join(sorted({str(p.parent) for p in paths})) or "the given folders"
        raise DataError(f"no readable image in {where}: pretraining needs TIFF, PNG or JPEG micrographs "
                        f"({', '.join(IMAGE_SUFFIXES)}), 8/16-bit, grey or RGB")
    return items, warnings
