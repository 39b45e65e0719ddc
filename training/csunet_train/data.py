"""Training data: labelled images from arrays, pair files or folders; checks; the validation split.

Labels are 1..K with 0 = unlabelled (ignored), so a user may label part of an image. Folders go
through :func:`napari_csunet.images.datasets.find_samples`, which maps NASA's label maps (0 is a class) and
colour overlays to that convention. No torch here.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_csunet.images.annotations import reviewed_area
from napari_csunet.images.datasets import (
    NAMING_HINT,
    MaskError,
    find_samples,
    undeclared_zero_warning,
)
from napari_csunet.images.reading import ImageError, as_channels_last
from napari_csunet.images.reading import (
    read_whole_image as read_image,  # bounded: training holds whole images
)
from napari_csunet.models.modelfile import default_class_colors, numbered_class_names

__all__ = [
    "DataError", "LabelledImage", "TrainingData", "labelled_image", "read_pairs", "read_folder",
    "read_unlabelled", "holdout_region", "holdout_blocks", "HOLDOUTS", "split_validation", "MIN_VAL_PIXELS", "check_classes",
    "fingerprint", "load_data", "rare_class_warnings", "MIN_CLASS_PIXELS",
]


class DataError(ValueError):
    """Training data that cannot be used; the message names the image and what is wrong."""


@dataclass
class LabelledImage:
    """An image as stored, (H, W) or (H, W, C), with labels (H, W) uint8: 0 = unlabelled, 1..K."""

    image: np.ndarray
    labels: np.ndarray
    name: str
    pseudo: np.ndarray | None = None  # the model's uncorrected prediction where ``labels`` is 0 (GUI sets)
    reviewed: np.ndarray | None = None  # bool: labels inside areas the user checked as a whole (may judge)
    soft: np.ndarray | None = None  # (K, H, W) float16: the starting model's probabilities (distillation)

    @property
    def labelled_pixels(self) -> int:
        return int(np.count_nonzero(self.labels))


@dataclass
class TrainingData:
    train: list[LabelledImage]
    val: list[LabelledImage]
    class_names: list[str]
    class_colors: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def in_chans(self) -> int:
        """3 when any image is colour, else 1 (grey, the micrographs' usual case)."""
        return 3 if any(item.image.ndim == 3 for item in self.train + self.val) else 1


def labelled_image(image: np.ndarray, labels: np.ndarray, name: str = "image") -> LabelledImage:
    """Check an (image, labels) pair handed over as arrays (what the GUI does)."""
    try:
        image = as_channels_last(image, name)
    except ImageError as exc:
        raise DataError(str(exc)) from None
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise DataError(f"{name}: labels must be a 2D label map (0 = unlabelled, 1..K), got shape {labels.shape}")
    if labels.dtype.kind not in "uib":
        raise DataError(f"{name}: labels must hold integers (0 = unlabelled, 1..K), got {labels.dtype}")
    if labels.shape != image.shape[:2]:
        raise DataError(f"{name}: labels are {labels.shape[0]}x{labels.shape[1]} but the image is "
                        f"{image.shape[0]}x{image.shape[1]}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name}: negative label {int(labels.min())}; use 0 for unlabelled pixels")
    if labels.size and labels.max() > 255:
        raise DataError(f"{name}: label {int(labels.max())} is above 255")
    return LabelledImage(image, labels.astype(np.uint8), name)


def read_pairs(entries: Iterable[dict[str, str]]) -> list[LabelledImage]:
    """``[{"image": path, "labels": path[, "mask": path, "regions": [[r0, c0, r1, c1]], "whole_image": bool]}]``
    -> labelled images.

    Label files are label maps 1..K. A ``mask`` (the GUI's corrected/accepted pixels, > 0) keeps
    only those labels; the rest, the model's own uncorrected prediction, becomes ``pseudo``. Its
    ``regions``/``whole_image`` (areas the user checked) say which labels are ``reviewed``.
    """
    out = []
    for entry in entries:
        image_path, label_path = Path(entry["image"]), Path(entry["labels"])
        try:
            image = read_image(image_path)
            labels = read_image(label_path)
            mask = read_image(Path(entry["mask"])) if entry.get("mask") else None
        except ImageError as exc:
            raise DataError(str(exc)) from None
        if labels.ndim == 3 and labels.shape[-1] in (3, 4):
            raise DataError(f"{label_path}: a colour image; pair label files must be label maps "
                            "(0 = unlabelled, 1..K)")
        if mask is not None:
            if mask.shape != labels.shape[:2]:
                raise DataError(f"{entry['mask']}: mask is {mask.shape} but the labels are {labels.shape[:2]}")
            item = labelled_image(image, np.where(mask > 0, labels, 0).astype(labels.dtype), image_path.stem)
            item.pseudo = np.where(mask > 0, 0, labels).astype(np.uint8)
            item.reviewed = reviewed_area(labels.shape[:2], entry.get("regions"), bool(entry.get("whole_image")))
            item.reviewed &= mask > 0
            out.append(item)
            continue
        out.append(labelled_image(image, labels, image_path.stem))
    return out


def read_unlabelled(paths: Sequence[str | Path]) -> list[LabelledImage]:
    """Image files, and the images in folders, as items without a labelled pixel (distillation only)."""
    from napari_csunet.images.datasets import image_files

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += image_files(p)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"unlabelled: {p} is neither an image file nor a folder")
    out = []
    for f in files:
        try:
            image = as_channels_last(read_image(f), str(f))
        except ImageError as exc:
            raise DataError(str(exc)) from None
        out.append(LabelledImage(image, np.zeros(image.shape[:2], np.uint8), f"{f.stem} (unlabelled)"))
    return out


def read_folder(root: str | Path, split: str, names: Sequence[str] | None = None,
                zero_is_class: bool | None = None) -> tuple[list[LabelledImage], list[str], list[str]]:
    """Images + masks of one split of a folder -> (items, class names, class colours).

    An annotation set saved by the GUI (``index.json`` + ``images/`` + ``labels/``) is read too.
    """
    root = Path(root)
    if (root / "index.json").is_file() and (root / "labels").is_dir():
        return _read_annotation_set(root, names)
    try:
        samples = find_samples(root, split, zero_is_class=zero_is_class, names=names)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    items = []
    for sample in samples:
        if sample.mask is None:
            raise DataError(f"{sample.image}: no mask found next to it (expected in the masks folder)")
        try:
            image, labels = sample.load()
        except (ImageError, MaskError) as exc:
            raise DataError(str(exc)) from None
        items.append(labelled_image(image, labels, sample.image.stem))
    if not samples[0].zero_declared:
        message = undeclared_zero_warning(root, {it.name: 1.0 - it.labelled_pixels / it.labels.size for it in items})
        if message:
            warnings.warn(message, stacklevel=2)
    spec = samples[0].spec
    return items, list(spec.names), list(spec.colors)


def _read_annotation_set(root: Path, names: Sequence[str] | None) -> tuple[list[LabelledImage], list[str], list[str]]:
    from napari_csunet.images.annotations import AnnotationError, AnnotationStore

    store = AnnotationStore(root)
    try:
        pairs, class_names, colors = store.pairs(), store.class_names, store.class_colors
    except AnnotationError as exc:
        raise DataError(str(exc)) from None
    if names is not None:
        pairs = [p for p in pairs if Path(p["image"]).stem in set(names)]
    if not pairs:
        raise DataError(f"{root}: the annotation set holds no images" + (f" named {list(names)}" if names else ""))
    return read_pairs(pairs), class_names, colors or default_class_colors(len(class_names))


#: fewer held-out labelled pixels than this score too noisily to pick a model by
MIN_VAL_PIXELS = 2000


def holdout_region(item: LabelledImage, fraction: float) -> tuple[LabelledImage, LabelledImage] | None:
    """Split one image: the end strip (along its longer side) holding ``fraction`` of the labels.

    The training copy keeps the whole image but loses the strip's labels; None when the strip
    would hold fewer than ``MIN_VAL_PIXELS`` labelled pixels (then train a fixed schedule and
    keep the last model rather than validate on too little).
    """
    axis = 0 if item.labels.shape[0] >= item.labels.shape[1] else 1
    per_line = np.count_nonzero(item.labels, axis=1 - axis)
    total = int(per_line.sum())
    if total * fraction < MIN_VAL_PIXELS:
        return None
    from_end = np.cumsum(per_line[::-1])
    start = len(per_line) - int(np.searchsorted(from_end, fraction * total)) - 1
    if start <= 0 or int(per_line[:start].sum()) == 0:
        return None
    cut = (slice(start, None), slice(None)) if axis == 0 else (slice(None), slice(start, None))
    # validation predicts the whole image (as the GUI does: same normalisation, no strip borders)
    # and scores the strip's labels only
    val_labels = np.zeros_like(item.labels)
    val_labels[cut] = item.labels[cut]
    val = LabelledImage(item.image, val_labels, f"{item.name} (held-out strip)")
    train_labels = item.labels.copy()
    train_labels[cut] = 0
    return replace(item, labels=train_labels), val


def holdout_blocks(item: LabelledImage, fraction: float, block: int = 64) -> tuple[LabelledImage, LabelledImage] | None:
    """Split one image into a lattice of ``block``² squares and hold out every n-th one (n about
    1 / ``fraction``, staggered from row to row), so the held-out labels sample every corrected
    area rather than its end. None when they would hold fewer than ``MIN_VAL_PIXELS`` labelled pixels.

    For a few corrected regions (the live update): one region is often uneven (its end strip may be
    all one phase), and a strip then judges the model on what it was not shown. Neighbouring blocks
    train, so this measures agreement with the user's labels more than transfer to far-away areas.
    """
    n = max(2, int(round(1 / fraction)))
    rows, cols = np.indices(item.labels.shape, sparse=True)
    held = ((rows // block + 2 * (cols // block)) % n == 0) & (item.labels > 0)
    if np.count_nonzero(held) < MIN_VAL_PIXELS or not np.count_nonzero(item.labels[~held]):
        return None
    val = LabelledImage(item.image, np.where(held, item.labels, 0).astype(item.labels.dtype),
                        f"{item.name} (held-out blocks)")
    return replace(item, labels=np.where(held, 0, item.labels).astype(item.labels.dtype)), val


#: how one image is split when there is no validation data: an end strip, or a lattice of blocks
HOLDOUTS = {"strip": holdout_region, "blocks": holdout_blocks}


def split_validation(items: list[LabelledImage], fraction: float, seed: int, holdout: str = "strip"
                     ) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out whole images (a seeded choice), or a part of the image when there is only one
    (``holdout``: see :data:`HOLDOUTS`). ``fraction`` 0 holds out nothing."""
    if fraction <= 0:
        return items, []
    if len(items) == 1:
        parts = HOLDOUTS[holdout](items[0], fraction)
        return ([parts[0]], [parts[1]]) if parts else (items, [])
    n_val = max(1, int(round(fraction * len(items))))
    order = np.random.default_rng(seed).permutation(len(items))
    val_idx = set(order[:n_val].tolist())
    return ([it for i, it in enumerate(items) if i not in val_idx], [it for i, it in enumerate(items) if i in val_idx])


#: a class with fewer labelled training pixels than this is hard to learn: the user is told before training
MIN_CLASS_PIXELS = 1000


def rare_class_warnings(train: Sequence[LabelledImage], class_names: Sequence[str]) -> list[str]:
    """'precipitate: 312 labelled pixels in 1 image: ...' for each class present in the training
    labels with fewer than ``MIN_CLASS_PIXELS`` (a class absent from them is not warned about: a
    fine-tune on corrections keeps it through distillation)."""
    k = len(class_names)
    pixels = np.zeros(k + 1, np.int64)
    images = np.zeros(k + 1, np.int64)
    for item in train:
        counts = np.bincount(item.labels.ravel(), minlength=k + 1)[: k + 1]
        pixels += counts
        images += counts > 0
    return [f"{class_names[c - 1]}: {pixels[c]:,} labelled pixels in {images[c]} image{'s' if images[c] > 1 else ''}: "
            f"too few to learn it reliably; label a few more (at least {MIN_CLASS_PIXELS:,} pixels, ideally in "
            "several images)" for c in range(1, k + 1) if 0 < pixels[c] < MIN_CLASS_PIXELS]


def check_classes(train: list[LabelledImage], val: list[LabelledImage], class_names: Sequence[str]) -> list[str]:
    """Refuse empty label sets and labels above K; return warnings (e.g. a class only in validation)."""
    k = len(class_names)
    for item in train + val:
        top = int(item.labels.max()) if item.labels.size else 0
        if top > k:
            raise DataError(f"{item.name}: label {top} is above the {k} classes {list(class_names)}; {NAMING_HINT}, "
                            "or give class_names (a model file's classes are fixed: train a preset for more)")
    if not train:
        raise DataError("no training images")
    if sum(item.labelled_pixels for item in train) == 0:
        raise DataError("the training labels are empty: label some pixels (1..K) first; 0 means unlabelled")
    warnings = [f"{item.name}: no labelled pixels; it is not used" for item in train + val if item.labelled_pixels == 0]
    warnings += rare_class_warnings(train, class_names)
    seen_train = set(np.unique(np.concatenate([np.unique(it.labels) for it in train])).tolist()) - {0}
    seen_val = set(np.unique(np.concatenate([np.unique(it.labels) for it in val])).tolist()) - {0} if val else set()
    for c in sorted(seen_val - seen_train):
        warnings.append(f"class {class_names[c - 1]!r} appears in validation but not in training: "
                        "the model cannot learn it; label some of it in a training image")
    return warnings


def fingerprint(items: Iterable[LabelledImage]) -> str:
    """sha256 over names, images and labels: the same data gives the same fingerprint."""
    h = hashlib.sha256()
    for item in items:
        for part in (item.name.encode(), str(item.image.shape).encode(), np.ascontiguousarray(item.image).tobytes(),
                     np.ascontiguousarray(item.labels).tobytes()):
            h.update(part)
    return h.hexdigest()


def _refuse_stray_labels(items: Sequence[LabelledImage], top: int, model_classes: int) -> None:
    """Unnamed labels that would make far more classes than occur (one stray pixel of 200 would make
    a 3-class model a 200-class one) are refused, naming the label and where it is."""
    present = set()
    for it in items:
        present |= set(np.unique(it.labels).tolist()) - {0}
    if top <= 2 * max(model_classes, len(present)):
        return
    where = next(it for it in items if it.labels.size and int(it.labels.max()) == top)
    count = int(np.count_nonzero(where.labels == top))
    raise DataError(f"label {top} ({count:,} pixel(s) in {where.name}) would make {top} classes, but only "
                    f"{len(present)} labels occur: a stray label? Fix the label map, or name every class "
                    f"(dataset.json \"classes\", or the job's class_names) to train that many")


def load_data(cfg, model_classes: Sequence[str] | None = None, model_colors: Sequence[str] | None = None,
              train: list[LabelledImage] | None = None, val: list[LabelledImage] | None = None) -> TrainingData:
    """Gather a job's training and validation images (``train``/``val`` add in-memory ones).

    Class names: the job's, else the folder's, else the model file's (unless the labels go above
    its classes), else ``class 1..K`` with K the highest label (a warning says how to name them).
    """
    train_items = list(train or []) + read_pairs(cfg.pairs)
    val_items = list(val or []) + read_pairs(cfg.val_pairs or [])
    folder_names: list[str] | None = None
    folder_colors: list[str] | None = None
    if cfg.data_dir:
        items, folder_names, folder_colors = read_folder(cfg.data_dir, cfg.split, cfg.names, cfg.zero_is_class)
        train_items += items
        if cfg.val_split and cfg.val_split != cfg.split and (Path(cfg.data_dir) / cfg.val_split).is_dir():
            val_items += read_folder(cfg.data_dir, cfg.val_split, None, cfg.zero_is_class)[0]
    if not train_items:
        raise DataError("no training data: give 'pairs' and/or 'data_dir'")
    # the data names its classes (the job, then the folder's dataset.json); a model's classes name
    # only data that does not; other classes than the model's get a new output layer (job._fit_head)
    names = cfg.class_names or folder_names or (list(model_classes) if model_classes else None)
    named_by_data = bool(cfg.class_names or folder_names)
    top = 0 if named_by_data else max(int(it.labels.max()) if it.labels.size else 0 for it in train_items + val_items)
    if not named_by_data:
        _refuse_stray_labels(train_items + val_items, top, len(model_classes or []))
    warnings: list[str] = []
    if names is None or (not named_by_data and top > len(names)):  # labels the model's classes cannot hold
        names = numbered_class_names(max(top, 1))
        warnings.append(f"the labels hold {len(names)} classes, named {names[0]!r}..{names[-1]!r}; {NAMING_HINT}")
    same_classes = model_classes is not None and list(names) == list(model_classes)
    colors = cfg.class_colors or (list(model_colors) if model_colors and same_classes else None)
    if colors is None and folder_names == list(names):
        colors = folder_colors
    fair = any(it.reviewed is not None for it in train_items)  # corrections: job.py holds reviewed blocks out
    if not val_items and not fair:
        train_items, val_items = split_validation(train_items, cfg.val_fraction, cfg.seed,
                                                  cfg.holdout)
        if not val_items and cfg.val_fraction > 0:  # 0 asked for no validation: nothing to warn about
            labelled = sum(it.labelled_pixels for it in train_items)
            warnings.append(f"only {labelled:,} labelled (corrected or accepted) pixels: too few to hold "
                            f"{MIN_VAL_PIXELS:,} out for validation, so no validation: training runs all "
                            "its steps and the last model is kept")
    warnings += check_classes(train_items, val_items, names)
    train_items = [it for it in train_items if it.labelled_pixels]
    val_items = [it for it in val_items if it.labelled_pixels]
    return TrainingData(train_items, val_items, list(names), list(colors or default_class_colors(len(names))), warnings)
