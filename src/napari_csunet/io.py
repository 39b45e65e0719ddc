"""Reading micrographs and masks, and the NASA dataset layout, with errors that name the file.

Label convention (see docs): 0 = unlabelled, classes are 1..K. NASA label maps use 0 for a real
class, so the NASA-layout reader maps NASA class ``c`` to ``c + 1``; NASA colour-overlay masks
(Super) are decoded by exact colour to 1..K.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ImageError", "MaskError", "read_image", "as_channels_last", "to_model_channels", "standardize",
    "ClassSpec", "SUPER_CLASSES", "EBC_CLASSES", "decode_color_mask", "read_mask", "Sample",
    "find_samples", "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_SUPPORTED_KINDS = "uifb"  # unsigned, signed, float, bool


class _NoShapedSeriesNoise(logging.Filter):
    """tifffile logs "shaped series shape does not match page shape" for NASA's masks: harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "shaped series" not in record.getMessage()


logging.getLogger("tifffile").addFilter(_NoShapedSeriesNoise())


class ImageError(ValueError):
    """An image file or array cannot be used; the message names the file and what to do."""


class MaskError(ValueError):
    """A mask cannot be used with its image or dataset."""


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF/PNG/JPEG as stored (any dtype), refusing empty or truncated files clearly."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            import skimage.io

            data = skimage.io.imread(path)
    except Exception as exc:  # tifffile/imageio raise many types for damaged files
        raise ImageError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    data = np.asarray(data)
    if data.size == 0:
        raise ImageError(f"{path}: image has no pixels")
    return data


def as_channels_last(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return a (H, W) or (H, W, C<=4) array; accept (C, H, W) with C<=4; drop alpha.

    Grey stored as RGB (all channels equal, like NASA's Super micrographs) becomes (H, W).
    """
    image = np.asarray(image)
    if image.dtype.kind not in _SUPPORTED_KINDS:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}; use 8/16-bit integers or floats")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ImageError(f"{name}: contains NaN or infinite pixels; replace them (e.g. np.nan_to_num) first")
    if image.ndim == 3 and image.shape[0] <= 4 < image.shape[-1]:
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        c = image.shape[-1]
        if c > 4:
            raise ImageError(f"{name}: {c} channels; expected grey, RGB or RGBA (2D images, one plane)")
        if c == 4:
            image = image[..., :3]
        elif c == 2:
            image = image[..., 0]
    if image.ndim == 3 and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
        image = image[..., 0]
    if image.ndim != 2 and image.ndim != 3:
        raise ImageError(f"{name}: shape {image.shape} is not a 2D grey or colour image")
    if min(image.shape[:2]) < 1:
        raise ImageError(f"{name}: image has no pixels")
    return image


def to_model_channels(image: np.ndarray, in_chans: int) -> np.ndarray:
    """(H, W[, C]) -> float32 (C, H, W) with the channel count the model expects.

    Colour into a grey model uses luminance; grey into a colour model is repeated.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    else:
        if in_chans == 1:
            x = (x[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[None]
        else:
            x = np.moveaxis(x, -1, 0)
    if x.shape[0] != in_chans:
        x = np.repeat(x[:1], in_chans, axis=0)
    return np.ascontiguousarray(x)


def standardize(image: np.ndarray, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Per-image standardisation (zero mean, unit std), the model files' ``{"mode": "image"}``.

    Brightness varies strongly between micrographs of one material, so every image is normalised
    by its own statistics; tiles must be passed the whole image's ``stats``.
    """
    x = np.asarray(image, dtype=np.float32)
    mean, std = stats if stats is not None else image_stats(x)
    return (x - mean) / std


def image_stats(image: np.ndarray) -> tuple[float, float]:
    """Mean and (floored) std of all pixels; callers subsample huge images (see Segmenter)."""
    x = np.asarray(image, dtype=np.float64)
    mean = float(x.mean())
    std = float(x.std())
    return mean, max(std, 1e-6 * max(1.0, abs(mean)), 1e-8)


@dataclass(frozen=True)
class ClassSpec:
    """Class names/colours of a dataset; ``overlay_colors`` decode colour-overlay masks."""

    names: tuple[str, ...]
    colors: tuple[str, ...]
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


def decode_color_mask(mask: np.ndarray, spec: ClassSpec, name: str = "mask") -> np.ndarray:
    """Decode an RGB(A) overlay mask by exact colour; warn about saturated colours we do not know."""
    rgb = np.asarray(mask)[..., :3]
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
        top = ", ".join(f"{tuple(int(v) for v in c)} x{n}" for c, n in sorted(zip(colors, counts), key=lambda t: -t[1])[:5])
        warnings.warn(f"{name}: {int(odd.sum())} pixels of unknown colours decoded as "
                      f"{spec.names[spec.overlay_default - 1]!r}: {top}", stacklevel=2)
    return labels


def read_mask(path: str | Path, spec: ClassSpec, zero_is_class: bool, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a colour-overlay or label-map mask into labels 1..K (0 = unlabelled)."""
    path = Path(path)
    raw = read_image(path)
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        labels = decode_color_mask(raw, spec, name=str(path))
    elif raw.ndim == 2 or (raw.ndim == 3 and raw.shape[-1] == 1):
        raw = raw.reshape(raw.shape[:2])
        if raw.dtype.kind == "f" or raw.min() < 0:
            raise MaskError(f"{path}: label maps must hold non-negative integers, found {raw.dtype}")
        labels = raw.astype(np.int64) + (1 if zero_is_class else 0)
        top = int(labels.max())
        if top > len(spec.names):
            raise MaskError(f"{path}: label {top - (1 if zero_is_class else 0)} is above the "
                            f"{len(spec.names)} classes {list(spec.names)}")
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

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(image (H, W[, C]) as stored, labels uint8 (H, W) in 1..K with 0 = unlabelled)."""
        image = as_channels_last(read_image(self.image), str(self.image))
        labels = None
        if self.mask is not None:
            labels = read_mask(self.mask, self.spec, self.zero_is_class, shape=image.shape[:2])
        return image, labels


def _class_spec_for(root: Path, colour_overlay: bool) -> ClassSpec:
    """Class names from ``dataset.json`` if present, else NASA's (Super for overlays, EBC for maps)."""
    for candidate in (root / "dataset.json", root.parent / "dataset.json"):
        if candidate.exists():
            meta = json.loads(candidate.read_text())
            names = tuple(meta["classes"])
            colors = tuple(meta.get("colors") or [])
            from .modelfile import default_class_colors

            return ClassSpec(names=names, colors=colors or tuple(default_class_colors(len(names))))
    return SUPER_CLASSES if colour_overlay else EBC_CLASSES


def _mask_for(image: Path, mask_dir: Path) -> Path | None:
    for stem in (image.stem, f"{image.stem}_mask"):
        for suffix in (image.suffix, *IMAGE_SUFFIXES):
            candidate = mask_dir / f"{stem}{suffix}"
            if candidate.exists():
                return candidate
    return None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def find_samples(root: str | Path, split: str | None = "test", zero_is_class: bool | None = None,
                 names: Sequence[str] | None = None) -> list[Sample]:
    """Pair images with masks in NASA's layout (``<split>/`` + ``<split>_annot/``) or ``images/`` + ``masks/``.

    NASA's label maps count 0 as a class (so ``zero_is_class`` defaults to True there); the plain
    layout follows our convention (0 = unlabelled) unless told otherwise. ``names`` picks images
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
    images = _images_in(image_dir)
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
    overlay = first is not None and read_image(first).ndim == 3
    spec = _class_spec_for(root, overlay)
    zic = (nasa and not overlay) if zero_is_class is None else zero_is_class
    return [Sample(p, m, spec, zic) for p, m in zip(images, masks)]
