"""Labelled dataset layouts: NASA's (``<split>/`` + ``<split>_annot/``) and ``images/`` + ``masks/``,
masks as label maps or colour overlays, and the class names that go with them.

Label convention (see docs): 0 = unlabelled, classes are 1..K. NASA label maps use 0 for a real
class, so the NASA-layout reader maps NASA class ``c`` to ``c + 1``; NASA colour-overlay masks
(Super), 8- or 16-bit, are decoded by exact colour to 1..K. Label maps without a ``dataset.json``
naming their classes get ``class 1..K``, K inferred from the labels.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..colors import ColorError, check_colors
from .reading import IMAGE_SUFFIXES, as_channels_last, read_whole_image

__all__ = ["MaskError", "ClassSpec", "SUPER_CLASSES", "EBC_CLASSES", "UNNAMED", "NAMING_HINT", "decode_color_mask",
           "read_mask", "Sample", "find_samples", "image_files",
           "undeclared_zero_warning"]

#: how a user names the classes of a folder (every message about classes says it)
NAMING_HINT = ('name the classes in a dataset.json next to the images/ or <split>/ folder, e.g. '
               '{"classes": ["matrix", "pore", "crack"]} (label 1 is the first name)')


class MaskError(ValueError):
    """A mask cannot be used with its image or dataset."""


@dataclass(frozen=True)
class ClassSpec:
    """Class names/colours of a dataset; ``overlay_colors`` decode colour-overlay masks.

    No names (:data:`UNNAMED`) means the labels say how many classes there are (``class 1..K``).
    """

    names: tuple[str, ...]
    colors: tuple[str, ...] = ()
    #: RGB -> label for colour overlays; pixels of no listed colour get ``overlay_default``
    overlay_colors: dict[tuple[int, int, int], int] = field(default_factory=dict)
    overlay_default: int = 1


SUPER_CLASSES = ClassSpec(
    names=("matrix", "secondary", "tertiary"),
    colors=("#808080", "#0000ff", "#ff0000"),
    overlay_colors={(0, 0, 255): 2, (255, 0, 0): 3},
    overlay_default=1,
)
EBC_CLASSES = ClassSpec(names=("background", "oxide", "crack"), colors=("#404040", "#2ca02c", "#ff00ff"))
#: label maps whose classes no dataset.json names
UNNAMED = ClassSpec(names=())


def _as_8bit(rgb: np.ndarray) -> np.ndarray:
    """16-bit (or 0..1 float) colours scaled to 0..255, so (0, 0, 65535) is pure blue like (0, 0, 255)."""
    if rgb.dtype.kind == "b":
        return rgb.astype(np.uint8) * 255
    if rgb.dtype.kind == "f":
        top = 1.0 if rgb.size and float(rgb.max()) <= 1.0 else 255.0
        return np.clip(np.rint(rgb * (255.0 / top)), 0, 255).astype(np.uint8)
    top = int(rgb.max()) if rgb.size else 0
    if top > 255:  # 16-bit colours (in any integer container), else the container's full range
        full = 65535.0 if top <= 65535 else float(np.iinfo(rgb.dtype).max)
        return np.rint(np.clip(rgb, 0, None) * (255.0 / full)).astype(np.uint8)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def decode_color_mask(mask: np.ndarray, spec: ClassSpec, name: str = "mask") -> np.ndarray:
    """Decode an RGB(A) overlay mask (8- or 16-bit) by exact colour; warn about vivid colours we do not know."""
    rgb = _as_8bit(np.asarray(mask)[..., :3])
    labels = np.full(rgb.shape[:2], spec.overlay_default, dtype=np.uint8)
    known = np.zeros(rgb.shape[:2], dtype=bool)
    for color, label in spec.overlay_colors.items():
        hit = np.all(rgb == np.array(color, dtype=rgb.dtype), axis=-1)
        labels[hit] = label
        known |= hit
    spread = rgb.max(axis=-1).astype(np.int32) - rgb.min(axis=-1)
    odd = ~known & (spread > 200)  # vivid colours that are not the micrograph's grey
    if odd.any():
        colors, counts = np.unique(rgb[odd].reshape(-1, 3), axis=0, return_counts=True)
        top = ", ".join(f"{tuple(int(v) for v in c)} x{n}" for c, n in sorted(zip(colors, counts, strict=True), key=lambda t: -t[1])[:5])
        warnings.warn(f"{name}: {int(odd.sum())} pixels of unknown colours decoded as "
                      f"{spec.names[spec.overlay_default - 1]!r}: {top}", stacklevel=2)
    return labels


def read_mask(path: str | Path, spec: ClassSpec, zero_is_class: bool, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a colour-overlay or label-map mask into labels 1..K (0 = unlabelled)."""
    path = Path(path)
    raw = read_whole_image(path)
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        labels = decode_color_mask(raw, spec, name=str(path))
    elif raw.ndim == 2 or (raw.ndim == 3 and raw.shape[-1] == 1):
        raw = raw.reshape(raw.shape[:2])
        if raw.dtype.kind == "f" or raw.min() < 0:
            raise MaskError(f"{path}: label maps must hold non-negative integers, found {raw.dtype}")
        labels = raw.astype(np.int64) + (1 if zero_is_class else 0)
        top = int(labels.max())
        if spec.names and top > len(spec.names):
            raise MaskError(f"{path}: label {top - (1 if zero_is_class else 0)} is above the "
                            f"{len(spec.names)} classes {list(spec.names)}; {NAMING_HINT}")
        if top > 255:
            raise MaskError(f"{path}: label {top} is above 255; labels are stored as 8-bit (at most 255 classes)")
        labels = labels.astype(np.uint8)
    else:
        raise MaskError(f"{path}: mask of shape {raw.shape} is neither a label map nor an RGB overlay")
    if shape is not None and labels.shape != tuple(shape):
        raise MaskError(f"{path}: mask is {labels.shape[0]}x{labels.shape[1]} but its image is {shape[0]}x{shape[1]}")
    return labels


@dataclass(frozen=True)
class Sample:
    """An image file and its mask file, plus how to decode the mask."""

    image: Path
    mask: Path | None
    spec: ClassSpec
    zero_is_class: bool
    #: whether anything said what label 0 means (NASA's layout, dataset.json or the caller)
    zero_declared: bool = True

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(image (H, W[, C]) as stored, labels uint8 (H, W) in 1..K with 0 = unlabelled)."""
        image = as_channels_last(read_whole_image(self.image), str(self.image))
        labels = None
        if self.mask is not None:
            labels = read_mask(self.mask, self.spec, self.zero_is_class, shape=image.shape[:2])
        return image, labels


def _dataset_json(root: Path) -> tuple[Path, dict] | None:
    """(path, contents) of the ``dataset.json`` next to the split folders (or one level up), if any;
    MaskError naming the file when it is not a JSON object."""
    for candidate in (root / "dataset.json", root.parent / "dataset.json"):
        if candidate.exists():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
                raise MaskError(f"{candidate}: not valid JSON ({str(exc)[:100]}); {DATASET_JSON_FORM}") from None
            if not isinstance(data, dict):
                raise MaskError(f"{candidate}: expected a JSON object, got a {type(data).__name__}; {DATASET_JSON_FORM}")
            return candidate, data
    return None


#: what a dataset.json holds, for its error messages
DATASET_JSON_FORM = 'write it as {"classes": ["matrix", "precipitate"], "colors": ["#808080", "#ff0000"]}'


def _class_spec_for(meta: dict | None, colour_overlay: bool, where: object = "dataset.json") -> ClassSpec:
    """Class names from ``dataset.json`` if present; else NASA's Super classes for colour overlays and
    :data:`UNNAMED` label maps (their classes are counted from the labels)."""
    if meta is not None and "classes" in meta:
        names = meta["classes"]
        if not (isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)):
            raise MaskError(f'{where}: "classes" must be a list of class names, not {names!r:.60}; {DATASET_JSON_FORM}')
        try:
            colors = check_colors(meta.get("colors") or [], f"{where}: colors")
        except ColorError as exc:  # its message says how to write a colour
            raise MaskError(str(exc)) from None
        if colors and len(colors) != len(names):
            raise MaskError(f'{where}: {len(names)} "classes" but {len(colors)} "colors"; give one colour a class')
        from ..models.modelfile import default_class_colors

        return ClassSpec(names=tuple(names), colors=tuple(colors or default_class_colors(len(names))))
    return SUPER_CLASSES if colour_overlay else UNNAMED


def _declared_zero_is_class(found: tuple[Path, dict] | None) -> bool | None:
    """``dataset.json``'s ``"zero_is_class"`` (None when it does not say)."""
    if found is None or "zero_is_class" not in found[1]:
        return None
    value = found[1]["zero_is_class"]
    if not isinstance(value, bool):
        raise MaskError(f'{found[0]}: "zero_is_class" must be true (label 0 is a class, e.g. the matrix) or false '
                        f"(0 = unlabelled), not {value!r}")
    return value


#: a label map whose 0 covers more than this share, with nothing saying what 0 means, gets a warning
ZERO_WARNING_SHARE = 0.25


def undeclared_zero_warning(root: str | Path, zero_shares: dict[str, float]) -> str | None:
    """A warning when label 0 (read as unlabelled) covers much of some label maps and no
    ``dataset.json`` says whether 0 is a class: a phase labelled 0 would silently not be learned."""
    big = {name: share for name, share in zero_shares.items() if share > ZERO_WARNING_SHARE}
    if not big:
        return None
    name, share = max(big.items(), key=lambda kv: kv[1])
    return (f"{root}: label 0 covers {share:.0%} of {name}'s mask ({len(big)} of {len(zero_shares)} masks above "
            f"{ZERO_WARNING_SHARE:.0%}) and is read as unlabelled, so it is not learned. If 0 is a phase (e.g. the "
            'matrix), write "zero_is_class": true in the dataset.json next to images/ (or pass --zero-is-class); '
            'write "zero_is_class": false to silence this')


def _mask_for(image: Path, mask_dir: Path) -> Path | None:
    for stem in (image.stem, f"{image.stem}_mask"):
        for suffix in (image.suffix, *IMAGE_SUFFIXES):
            candidate = mask_dir / f"{stem}{suffix}"
            if candidate.exists():
                return candidate
    return None


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder (sorted; hidden files skipped)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def find_samples(root: str | Path, split: str | None = "test", zero_is_class: bool | None = None,
                 names: Sequence[str] | None = None) -> list[Sample]:
    """Pair images with masks in NASA's layout (``<split>/`` + ``<split>_annot/``) or ``images/`` + ``masks/``.

    NASA's label maps count 0 as a class (so ``zero_is_class`` defaults to True there); the plain
    layout follows our convention (0 = unlabelled) unless ``dataset.json``'s ``"zero_is_class"`` or
    the caller says otherwise (the caller wins). ``names`` picks images
    by stem (the paper's Super2/Super3 subsets).
    """
    root = Path(root)
    if split and (root / split).is_dir():
        image_dir, mask_dir, nasa = root / split, root / f"{split}_annot", True
    elif (root / "images").is_dir():
        image_dir, mask_dir, nasa = root / "images", root / "masks", False
    else:
        raise FileNotFoundError(
            f"{root}: expected NASA's layout ({split}/ and {split}_annot/) or images/ and masks/ folders"
        )
    images = image_files(image_dir)
    if names is not None:
        wanted = set(names)
        images = [p for p in images if p.stem in wanted]
        missing = wanted - {p.stem for p in images}
        if missing:
            raise FileNotFoundError(f"{image_dir}: no images named {sorted(missing)}")
    if not images:
        raise FileNotFoundError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = [_mask_for(p, mask_dir) if mask_dir.is_dir() else None for p in images]
    first = next((m for m in masks if m is not None), None)
    overlay = first is not None and read_whole_image(first).ndim == 3
    found = _dataset_json(root)
    spec = _class_spec_for(found[1] if found else None, overlay, found[0] if found else None)
    declared = zero_is_class if zero_is_class is not None else _declared_zero_is_class(found)
    zic = (nasa and not overlay) if declared is None else declared
    # NASA's label maps are known to count 0 as a class; elsewhere only a declaration says what 0 means
    return [Sample(p, m, spec, zic, zero_declared=declared is not None or nasa or overlay)
            for p, m in zip(images, masks, strict=True)]
