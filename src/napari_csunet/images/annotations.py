"""The annotation set: corrected images saved on disk the moment the user adds them.

A folder with ``images/``, ``labels/``, ``masks/`` and ``index.json``. Label TIFFs hold the labels
layer as the user left it (0 = unlabelled, classes 1..K); the mask says which of those pixels the
user vouched for: 2 = painted (differs from the model's prediction), 1 = accepted as predicted
(inside a rectangle the user marked, or the whole image), 0 = an uncorrected prediction that does
not train. Without a mask (older sets, label maps made elsewhere) every labelled pixel counts.
Every file is written atomically and the index last, so napari dying mid-way never loses or
corrupts what was already added. ``CSUNET_ANNOTATIONS_DIR`` overrides the platform data dir.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..colors import ColorError, check_colors
from ..safetext import file_stem

__all__ = ["AnnotationError", "Annotation", "AnnotationStore", "default_annotations_dir", "class_counts",
           "correction_mask", "reviewed_area", "PAINTED", "ACCEPTED"]

INDEX = "index.json"
#: the index is read, changed and written back: one writer at a time (the GUI saves on a worker thread)
_INDEX_LOCK = threading.RLock()
#: mask values: a pixel the user painted, a pixel the user accepted as the model predicted it
PAINTED, ACCEPTED = 2, 1


class AnnotationError(ValueError):
    """An annotation cannot be added (wrong shape, no labelled pixels, other classes)."""


def default_annotations_dir() -> Path:
    """``CSUNET_ANNOTATIONS_DIR``, else ``annotations`` in the platform's data folder."""
    from ..settings import user_folder

    return user_folder("data", "CSUNET_ANNOTATIONS_DIR", "annotations")


def class_counts(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """Labelled pixels per class (0 = unlabelled is not counted)."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(class_names) + 1)
    return {name: int(counts[i + 1]) for i, name in enumerate(class_names)}


@dataclass
class Annotation:
    """One image/labels pair of the set (paths relative to the store's root)."""

    id: str
    name: str
    image: str
    labels: str
    shape: list[int]
    counts: dict[str, int]
    created: float = field(default_factory=time.time)
    region: list[int] | None = None  # older sets: [row0, col0, row1, col1], labels zeroed outside it
    mask: str | None = None  # corrected/accepted pixels (PAINTED, ACCEPTED, 0); None: every label counts
    regions: list[list[int]] | None = None  # rectangles accepted as predicted
    whole_image: bool = False  # every labelled pixel accepted
    painted: int | None = None  # pixels the user painted, among those that count

    @property
    def labelled(self) -> int:
        """Pixels that train (corrected or accepted)."""
        return sum(self.counts.values())


def correction_mask(labels: np.ndarray, prediction: np.ndarray | None = None,
                    regions: Sequence[Sequence[int]] = (), whole_image: bool = False) -> np.ndarray:
    """Which labelled pixels the user vouched for (uint8: PAINTED, ACCEPTED, 0).

    Painted = differs from ``prediction``; accepted = inside one of ``regions`` ([row0, col0,
    row1, col1]) or anywhere with ``whole_image``. Without a prediction nothing tells a
    correction from the model's output, so every labelled pixel counts as painted.
    """
    labels = np.asarray(labels)
    labelled = labels > 0
    if prediction is None or np.shape(prediction) != labels.shape:
        return (labelled * PAINTED).astype(np.uint8)
    # uint8 throughout: the Correct tab's preview runs this on the GUI thread after each segmentation
    accepted = reviewed_area(labels.shape, regions, whole_image).astype(np.uint8) * np.uint8(ACCEPTED)
    mask = np.where(labels != np.asarray(prediction), np.uint8(PAINTED), accepted)
    mask *= labelled
    return mask


class AnnotationStore:
    """Add, list and remove corrected images; hand their paths to a training job."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_annotations_dir()

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def _read_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"class_names": [], "class_colors": [], "entries": []}
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise AnnotationError(f"{self.index_path}: unreadable annotation index ({str(exc)[:200]})") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list)
                                                 for k in ("class_names", "class_colors", "entries")):
            raise AnnotationError(f"{self.index_path}: not an annotation index (expected an object with lists "
                                  "class_names, class_colors and entries)")
        data.setdefault("class_names", [])
        data.setdefault("class_colors", [])
        data.setdefault("entries", [])
        return data

    def _write_index(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.index_path, json.dumps(data, indent=2))

    @property
    def class_names(self) -> list[str]:
        return list(self._read_index()["class_names"])

    @property
    def class_colors(self) -> list[str]:
        return list(self._read_index()["class_colors"])

    def entries(self) -> list[Annotation]:
        """The saved annotations, skipping (with a warning) any whose files went missing."""
        out = []
        for raw in self._read_index()["entries"]:
            entry = Annotation(**raw)
            files = (entry.image, entry.labels, entry.mask) if entry.mask else (entry.image, entry.labels)
            if all((self.root / rel).exists() for rel in files):
                out.append(entry)
            else:
                warnings.warn(f"annotation {entry.id!r}: files missing under {self.root}; skipped", stacklevel=2)
        return out

    def __len__(self) -> int:
        return len(self.entries())

    def add(self, image: np.ndarray, labels: np.ndarray, *, name: str, class_names: Sequence[str],
            class_colors: Sequence[str] = (), prediction: np.ndarray | None = None,
            regions: Sequence[Sequence[int]] = (), whole_image: bool = False, merge: bool = False) -> Annotation:
        """Save ``image``, ``labels`` (0 = unlabelled) and what the user vouched for, now.

        Only pixels the user painted (label != ``prediction``), pixels inside ``regions`` and,
        with ``whole_image``, every labelled pixel will train (see :func:`correction_mask`).
        Re-adding a name replaces it; with ``merge`` it adds to it instead: the earlier entry's
        rectangles stay accepted, and the pixels it vouched for stay vouched where their label is
        unchanged (a new prediction may since agree with a painted pixel: it stays a correction).
        """
        try:  # a bad colour is refused here, not in every later segmentation
            class_colors = check_colors(class_colors, "class_colors")
        except ColorError as exc:
            raise AnnotationError(str(exc)) from None
        with _INDEX_LOCK:
            return self._add(image, labels, name, class_names, class_colors, prediction, regions, whole_image, merge)

    def _add(self, image: np.ndarray, labels: np.ndarray, name: str, class_names: Sequence[str],
             class_colors: Sequence[str], prediction: np.ndarray | None, regions: Sequence[Sequence[int]],
             whole_image: bool, merge: bool) -> Annotation:
        image = np.asarray(image)
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise AnnotationError(f"{name}: labels must be one 2D plane, got shape {labels.shape}")
        if image.shape[:2] != labels.shape:
            raise AnnotationError(f"{name}: image is {image.shape[:2]} but labels are {labels.shape}")
        if labels.dtype.kind not in "ui" or (labels.size and labels.min() < 0):
            raise AnnotationError(f"{name}: labels must be non-negative integers, got {labels.dtype}")
        k = len(class_names)
        if labels.size and int(labels.max()) > k:
            raise AnnotationError(f"{name}: label {int(labels.max())} but the model has only {k} classes "
                                  f"({', '.join(class_names)}); repaint those pixels or erase them (0)")
        data = self._read_index()
        earlier = next((e for e in data["entries"] if e["name"] == name), None) if merge else None
        kept = None
        if earlier is not None:
            regions, kept = self._carried(Annotation(**earlier), labels, regions)
        mask = correction_mask(labels, prediction, regions, whole_image)
        if kept is not None:
            np.maximum(mask, kept, out=mask)
        counts = class_counts(np.where(mask > 0, labels, 0), class_names)
        if not any(counts.values()):
            raise AnnotationError(f"{name}: no corrected or accepted pixels: paint corrections, mark checked "
                                  "areas with rectangles (Shapes layer), or accept the whole image")
        if data["entries"] and list(data["class_names"]) != list(class_names):
            raise AnnotationError(
                f"the annotation set in {self.root} has classes {data['class_names']} but these labels "
                f"have {list(class_names)}; remove its entries or choose another annotation folder")
        entries = [e for e in data["entries"] if e["name"] != name]
        entry_id = file_stem(name, "image")
        entry = Annotation(id=entry_id, name=name, image=f"images/{entry_id}.tif", labels=f"labels/{entry_id}.tif",
                           shape=list(labels.shape), counts=counts, mask=f"masks/{entry_id}.tif",
                           regions=[[int(v) for v in r] for r in regions] or None, whole_image=bool(whole_image),
                           painted=int(np.count_nonzero(mask == PAINTED)))
        _write_tiff(self.root / entry.image, image)
        _write_tiff(self.root / entry.labels, labels.astype(np.uint8 if k < 256 else np.uint16))
        _write_tiff(self.root / entry.mask, mask)
        data.update(class_names=list(class_names), class_colors=list(class_colors) or data["class_colors"],
                    entries=[*entries, asdict(entry)])
        self._write_index(data)
        return entry

    def _carried(self, entry: Annotation, labels: np.ndarray, regions: Sequence[Sequence[int]]
                 ) -> tuple[list[list[int]], np.ndarray | None]:
        """(``regions`` plus the earlier entry's, the earlier mask where the labels are unchanged)."""
        import tifffile

        boxes = [[int(v) for v in r] for r in entry.regions or []]
        boxes += [b for b in ([int(v) for v in r] for r in regions) if b not in boxes]
        if entry.mask is None or list(entry.shape) != list(labels.shape):
            return boxes, None
        try:
            old_labels, old_mask = tifffile.imread(self.root / entry.labels), tifffile.imread(self.root / entry.mask)
        except (OSError, ValueError):  # files gone or damaged: the rectangles still say what was accepted
            return boxes, None
        return boxes, np.where((old_labels == labels) & (labels > 0), old_mask, 0).astype(np.uint8)

    def training_labels(self, entry: Annotation) -> np.ndarray:
        """The labels that train: corrected/accepted pixels, 0 elsewhere."""
        import tifffile

        labels = tifffile.imread(self.root / entry.labels)
        if entry.mask is None:
            return labels
        return np.where(tifffile.imread(self.root / entry.mask) > 0, labels, 0).astype(labels.dtype)

    def remove(self, entry_id: str) -> None:
        """Drop an annotation from the index, then delete its files."""
        with _INDEX_LOCK:
            self._remove(entry_id)

    def _remove(self, entry_id: str) -> None:
        data = self._read_index()
        keep = [e for e in data["entries"] if e["id"] != entry_id]
        if len(keep) == len(data["entries"]):
            raise AnnotationError(f"no annotation {entry_id!r} in {self.root}")
        gone = next(e for e in data["entries"] if e["id"] == entry_id)
        data["entries"] = keep
        self._write_index(data)
        for rel in (gone["image"], gone["labels"], gone.get("mask")):
            if rel:
                (self.root / rel).unlink(missing_ok=True)

    def named(self, name: str | None) -> Annotation | None:
        """The entry saved for the image called ``name``, if any."""
        return next((e for e in self.entries() if e.name == name), None)

    def vouched(self, name: str | None) -> np.ndarray | None:
        """Where the entry for ``name`` has corrected/accepted labels (bool), None without one."""
        entry = self.named(name)
        return self.training_labels(entry) > 0 if entry is not None else None

    def score(self, name: str | None, prediction: np.ndarray | None) -> dict[str, Any] | None:
        """Metrics of ``prediction`` on the corrected/accepted pixels of the entry called ``name``
        (None when there is no such entry or the shapes differ): how well a model agrees with the user."""
        from ..measure.metrics import segmentation_metrics

        entry = self.named(name)
        if entry is None or prediction is None:
            return None
        truth = self.training_labels(entry)
        if np.shape(prediction) != truth.shape:
            return None
        return segmentation_metrics(np.asarray(prediction), truth, self.class_names)

    def pairs(self, ids: Sequence[str] | None = None) -> list[dict[str, str]]:
        """``[{"image", "labels"[, "mask", "regions", "whole_image"]}]`` (absolute paths): the training
        job's format; the checked areas say which labels may judge a fine-tune."""
        return [{"image": str(self.root / e.image), "labels": str(self.root / e.labels)}
                | ({"mask": str(self.root / e.mask), "regions": e.regions or [], "whole_image": e.whole_image}
                   if e.mask else {})
                for e in self.entries() if ids is None or e.id in ids]


def reviewed_area(shape: tuple[int, ...], regions: Sequence[Sequence[int]] | None = (),
                  whole_image: bool = False) -> np.ndarray:
    """Bool (H, W): inside any of ``regions`` ([row0, col0, row1, col1], clipped), or everywhere
    with ``whole_image``: the areas a user checked as a whole (which may judge a fine-tune)."""
    out = np.full(tuple(shape[:2]), bool(whole_image))
    for region in regions or ():
        r0, c0, r1, c1 = (int(round(v)) for v in region)
        r0, r1 = sorted((max(r0, 0), min(r1, shape[0])))
        c0, c1 = sorted((max(c0, 0), min(c1, shape[1])))
        out[r0:r1, c0:c1] = True
    return out


def _write_tiff(path: Path, data: np.ndarray) -> None:
    import tifffile

    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, data, compression="zlib")
