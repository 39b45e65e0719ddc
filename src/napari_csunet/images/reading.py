"""Reading micrographs: any file, dtype and channel layout into what a model takes, with errors that
name the file. Dataset layouts and masks live in :mod:`napari_csunet.images.datasets`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["ImageError", "read_image", "read_whole_image", "WHOLE_IMAGE_MAX_PIXELS", "as_channels_last", "split_planes", "to_model_channels", "standardize",
           "image_stats", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_SUPPORTED_KINDS = "uifb"  # unsigned, signed, float, bool


class _NoShapedSeriesNoise(logging.Filter):
    """tifffile logs "shaped series shape does not match page shape" for NASA's masks: harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "shaped series" not in record.getMessage()


logging.getLogger("tifffile").addFilter(_NoShapedSeriesNoise())


class ImageError(ValueError):
    """An image file or array cannot be used; the message names the file and what to do."""


#: whole-image readers (training, evaluation) refuse images whose header claims more pixels than
#: this before reading them; ``csunet segment`` reads larger TIFFs and zarr lazily, tile by tile
WHOLE_IMAGE_MAX_PIXELS = 64 * 2**20


def header_pixels(path: Path) -> tuple[int, str]:
    """(pixels per channel, "H x W") from an image file's header, without reading its pixels."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
    else:
        from PIL import Image

        with Image.open(path) as im:
            shape = (im.height, im.width)
    planes = shape[:-1] if len(shape) >= 3 and shape[-1] <= 4 else shape
    return int(np.prod(planes, dtype=np.int64)), " x ".join(map(str, planes))


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read a TIFF/PNG/JPEG as stored (any dtype), refusing empty or truncated files clearly, and,
    with ``max_pixels``, images whose header claims more pixels (checked before reading them)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    if max_pixels is not None:
        try:
            pixels, shape = header_pixels(path)
        except Exception as exc:  # noqa: BLE001 - a damaged header: the reader below names the problem
            pixels, shape = 0, str(exc)
        if pixels > max_pixels:
            raise ImageError(f"{path}: {shape} pixels ({pixels / 2**20:,.0f} Mpx) is more than whole-image reading "
                             f"takes ({max_pixels / 2**20:,.0f} Mpx); crop it into parts, or segment it with "
                             "`csunet segment`, which reads large TIFFs lazily")
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


def read_whole_image(path: str | Path) -> np.ndarray:
    """:func:`read_image` for readers that hold the whole image (training, evaluation): bounded."""
    return read_image(path, WHOLE_IMAGE_MAX_PIXELS)


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


def split_planes(image: np.ndarray, name: str = "image") -> tuple[list[np.ndarray], bool]:
    """(the 2D planes (H, W[, C<=3]), whether the input was a stack): how the engine reads any image.

    A 3D array whose last side is 1..4 is one colour image, and one whose last side is at most 16
    and the shortest is an image with too many channels (refused); other 3D/4D arrays are
    (Z, H, W[, C]) stacks. Planes are checked (dtype, NaN/inf, channels) and alpha is dropped.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3, 4):
        raise ImageError(f"{name}: shape {arr.shape} is neither a 2D image (H, W[, C]) nor a stack (Z, H, W[, C])")
    channels_last = arr.ndim == 3 and (arr.shape[-1] <= 4 or arr.shape[-1] <= min(16, *arr.shape[:2]))
    stack = arr.ndim == 4 or (arr.ndim == 3 and not channels_last)
    if stack and arr.shape[0] == 0:
        raise ImageError(f"{name}: the stack has no slices")
    planes = [as_channels_last(p, f"{name}[{z}]" if stack else name) for z, p in enumerate(arr if stack else [arr])]
    return planes, stack
