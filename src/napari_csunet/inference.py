"""Tiled sliding-window prediction of micrographs of any size, 2D or stacks, on CPU, CUDA or MPS.

Why it is built this way:

- Networks take sides that are multiples of ``model.size_multiple`` (256 for CS-UNet); images are
  reflect-padded (only where a side is shorter than a tile) and cut into overlapping tiles.
- Tile probabilities are blended with a smooth window (:mod:`napari_csunet.tiling`), so there are
  no seams. They are accumulated on the model's device in a band of one tile's height that slides
  down the image: finished rows are turned into labels and leave the band at once. Memory is the
  tile batch plus the outputs, never all tiles (a 16,384^2 image needs a ~26 MB band for 3 classes
  at tile 512, plus its 268 MB of labels).
- Each image is normalised by its own statistics (``{"mode": "image"}``) and every tile by the
  whole image's, as in training; stacks are normalised and predicted slice by slice.
- The model stays on its device between calls (the GUI keeps one Segmenter warm).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .device import amp_dtype, is_out_of_memory, pick_device
from .io import ImageError, as_channels_last, image_stats, standardize, to_model_channels
from .modelfile import ModelInfo, numbered_class_names
from .tiling import TileLayout, check_tile

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["pick_device", "Cancelled", "InferenceMemoryError", "Prediction", "Segmenter", "split_planes"]

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))
_CHUNK = 4096  # columns handled at once when a band of finished rows leaves the accumulator
_STATS_PIXELS = 4 * 2**20  # normalisation statistics use at most about this many pixels


class Cancelled(Exception):
    """The ``cancel`` callback asked prediction to stop; nothing partial is returned."""


class InferenceMemoryError(MemoryError):
    """The device ran out of memory; the message says which smaller tile/batch to try."""


@dataclass
class Prediction:
    """Labels 1..K (never 0), and on request probabilities and 1 - max probability."""

    labels: np.ndarray
    probs: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


def split_planes(image: np.ndarray, name: str = "image") -> tuple[list[np.ndarray], bool]:
    """(the 2D planes (H, W[, C<=3]), whether the input was a stack).

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


class Segmenter:
    """A model kept warm on its device, and how to tile images for it."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo, device: str | torch.device = "auto", tile: int = 512,
                 overlap: float = 0.25, batch_size: int = 4, amp: bool = True, tta: bool = False,
                 channels_last: bool | None = None) -> None:
        """``channels_last`` None: NHWC on CUDA (faster under AMP); training validation passes False
        to leave the memory layout of the model it trains alone."""
        import torch

        self.multiple = int(getattr(model, "size_multiple", 1))
        check_tile(tile, self.multiple, overlap)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= info.num_classes <= 255:
            raise ValueError(f"labels are stored as uint8: at most 255 classes, the model has {info.num_classes}")
        if info.is_pretraining_only:
            raise ValueError(f"{info.name or 'this model'} is a self-supervised pretrained model: it reconstructs "
                             "pixels and knows no classes. Fine-tune it on a few labelled images first (the GUI's "
                             f"Fine-tune tab, or csunet finetune --model {info.name or 'FILE'} --data DIR)")
        self.info = info
        self.device = pick_device(device)
        self.tile, self.overlap, self.batch_size, self.tta = int(tile), float(overlap), int(batch_size), bool(tta)
        self.amp_dtype = amp_dtype(self.device, amp)
        self.channels_last = self.device.type == "cuda" if channels_last is None else bool(channels_last)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.in_chans = int(info.config.in_chans)

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> Segmenter:
        """Load a model file (see :mod:`napari_csunet.modelfile`)."""
        from .modelfile import load_model_file

        model, info = load_model_file(path, device="cpu")
        return cls(model, info, **kw)

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Segmenter:
        """A model file path, a starter/user model name, or a preset (random weights: warns)."""
        from .model_catalog import resolve_model

        kind, path = resolve_model(spec)
        if kind == "file":
            return cls.from_file(path, **kw)
        from .models import build_model
        from .models.registry import get_preset

        config = get_preset(spec).config
        warnings.warn(f"{spec!r} is a preset with random weights: its labels mean nothing until it is trained "
                      "or fine-tuned; pass a model file for real segmentations", UserWarning, stacklevel=2)
        info = ModelInfo(config, numbered_class_names(config.num_classes), preset=spec, name=spec,
                         description="untrained preset (random weights)")
        return cls(build_model(config), info, **kw)

    @property
    def name(self) -> str:
        return self.info.name or self.info.preset or "model"

    def num_tiles(self, shape: Sequence[int]) -> int:
        """Tiles one (H, W) plane needs (without TTA), e.g. for an estimate before predicting."""
        return TileLayout.plan((shape[0], shape[1]), self.tile, self.overlap, self.multiple).num_tiles

    def predict(self, image: np.ndarray, *, want_probs: bool = False, want_uncertainty: bool = False,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                name: str = "image") -> Prediction:
        """Segment a 2D image (H, W[, C]) or a stack (Z, H, W[, C]) slice by slice.

        ``progress(done, total)`` counts tiles; ``cancel()`` returning True raises :class:`Cancelled`
        before the next batch. ``name`` is used in error messages (e.g. the file path).
        """
        import torch

        planes, stack = split_planes(image, name)
        layouts = [TileLayout.plan(p.shape[:2], self.tile, self.overlap, self.multiple) for p in planes]
        total, done = sum(lay.num_tiles for lay in layouts), 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        if progress is not None:
            progress(0, total)
        (h, w), k, z = layouts[0].shape, self.info.num_classes, len(planes)
        out = Prediction(np.empty((z, h, w), np.uint8), np.empty((z, k, h, w), np.float16) if want_probs else None,
                         np.empty((z, h, w), np.float32) if want_uncertainty else None)
        with torch.inference_mode():
            for i, (plane, layout) in enumerate(zip(planes, layouts, strict=True)):
                view = Prediction(*(None if a is None else a[i] for a in (out.labels, out.probs, out.uncertainty)))
                self._predict_plane(plane, layout, view, tick, cancel, f"{name}[{i}]" if stack else name)
        if not stack:
            out = Prediction(*(None if a is None else a[0] for a in (out.labels, out.probs, out.uncertainty)))
        return out

    # -- one plane -------------------------------------------------------------------------------

    def _stats(self, plane: np.ndarray) -> tuple[float, float]:
        norm = self.info.normalization or {"mode": "image"}
        mode = norm.get("mode", "image")
        if mode == "image":
            # exact up to 4 Mpx (as in training); a regular grid of ~4M pixels on huge mosaics
            step = max(1, int(np.ceil(np.sqrt(plane.shape[0] * plane.shape[1] / _STATS_PIXELS))))
            return image_stats(to_model_channels(plane[::step, ::step], self.in_chans))
        if mode == "fixed":
            return float(norm["mean"]), float(norm["std"])
        if mode == "none":
            return 0.0, 1.0
        raise ValueError(f"model {self.name!r}: unknown normalization mode {mode!r}; known: image, fixed, none")

    def _check_channels(self, plane: np.ndarray, name: str) -> None:
        c = 1 if plane.ndim == 2 else plane.shape[-1]
        if not (self.in_chans == 1 or c == 1 or c == self.in_chans):
            raise ImageError(f"{name}: image has {c} channels but model {self.name!r} expects {self.in_chans}; "
                             "convert the image or use a model trained on such images")

    def _predict_plane(self, plane: np.ndarray, layout: TileLayout, out: Prediction,
                       tick: Callable[[int], None], cancel: CancelFn | None, name: str) -> None:
        """Fill ``out`` (views of the caller's arrays) with one plane's prediction."""
        import torch

        self._check_channels(plane, name)
        stats = self._stats(plane)
        padded = layout.pad_image(plane)
        k, dev = self.info.num_classes, self.device
        (th, tw), hp = layout.tile, layout.padded[0]
        wy, wx = (torch.from_numpy(w).to(dev) for w in layout.windows())
        sy, sx = (torch.from_numpy(s).to(dev) for s in layout.weight_sums())
        acc = torch.zeros((k, th, layout.padded[1]), dtype=torch.float32, device=dev)
        tiles = [(i, j, y, x) for i, y in enumerate(layout.ys) for j, x in enumerate(layout.xs)]
        base = 0  # padded row held by acc[:, 0]
        for b in range(0, len(tiles), self.batch_size):
            if cancel is not None and cancel():
                raise Cancelled(f"{name}: segmentation cancelled")
            batch = tiles[b:b + self.batch_size]
            probs = self._forward(self._batch(padded, batch, (th, tw), stats), (th, tw))
            for (i, j, y, x), p in zip(batch, probs, strict=True):
                acc[:, y - base:y - base + th, x:x + tw].addcmul_(p, wy[i, :, None] * wx[j])
                if j == len(layout.xs) - 1:  # row of tiles i is complete: rows above the next one are final
                    nxt = layout.ys[i + 1] if i + 1 < len(layout.ys) else hp
                    self._emit(acc, sy, sx, layout, base, nxt, out)
                    d = nxt - base
                    for c in range(0, acc.shape[2], _CHUNK):  # column chunks keep temporaries small
                        acc[:, :th - d, c:c + _CHUNK] = acc[:, d:, c:c + _CHUNK].clone()
                    acc[:, th - d:] = 0
                    base = nxt
            tick(len(batch))

    def _batch(self, padded: np.ndarray, batch: list[tuple[int, int, int, int]], size: tuple[int, int],
               stats: tuple[float, float]) -> torch.Tensor:
        import torch

        th, tw = size
        arrays = [standardize(to_model_channels(padded[y:y + th, x:x + tw], self.in_chans), stats) for *_, y, x in batch]
        x = torch.from_numpy(np.stack(arrays)).to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Softmax probabilities (B, K, th, tw) in float32, flip-averaged with TTA."""
        import torch

        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        try:
            with amp:
                probs = self._probs(x)
                if self.tta:
                    for dims in _FLIPS:
                        probs = probs + self._probs(x.flip(dims)).flip(dims)
                    probs = probs / (1 + len(_FLIPS))
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = max(self.multiple, self.tile // 2)
            raise InferenceMemoryError(
                f"out of memory on {self.device} with {size[0]}x{size[1]} tiles in batches of {len(x)}"
                f"{' with flip TTA' if self.tta else ''}: use a smaller batch (batch_size/--batch 1) or tile "
                f"(tile/--tile {smaller})") from None
        return probs

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        k = self.info.num_classes
        if logits.ndim != 4 or logits.shape[1] != k or logits.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"model {self.name!r} returned shape {tuple(logits.shape)} for input {tuple(x.shape)}; "
                             f"expected (batch, {k} classes, {x.shape[-2]}, {x.shape[-1]})")
        return logits.float().softmax(1)

    @staticmethod
    def _emit(acc: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor, layout: TileLayout, r0: int, r1: int,
              out: Prediction) -> None:
        """Write the finished padded rows [r0, r1) (held from ``acc[:, 0]`` on) into ``out``."""
        import torch

        src, dst = layout.row_slice(r0, r1)
        if src.stop == src.start:
            return  # padding rows only
        left, width = layout.pad[1], layout.shape[1]
        wy = sy[r0 + src.start:r0 + src.stop, None]
        for c in range(0, width, _CHUNK):  # column chunks keep temporaries small on wide mosaics
            c1 = min(c + _CHUNK, width)
            band = acc[:, src, left + c:left + c1] / (wy * sx[None, left + c:left + c1])
            top, idx = band.max(0)
            out.labels[dst, c:c1] = (idx + 1).to(torch.uint8).cpu().numpy()
            if out.probs is not None:
                out.probs[:, dst, c:c1] = band.half().cpu().numpy()
            if out.uncertainty is not None:
                out.uncertainty[dst, c:c1] = (1.0 - top).cpu().numpy()
