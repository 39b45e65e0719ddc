"""Tiled sliding-window prediction of micrographs of any size, 2D or stacks, on CPU, CUDA or MPS.

Why it is built this way:

- Networks take sides that are multiples of ``model.size_multiple`` (256 for CS-UNet); images are
  reflect-padded (only where a side is shorter than a tile) and cut into overlapping tiles. By
  default the tile and the batch are chosen per image from the device's memory
  (:mod:`napari_csunet.engine.memory_plan`): the fewest, largest tiles, overlapping by the network's context
  in pixels (``tiling.CONTEXT_PX``), so tiling costs little more than the bare forward pass.
- Tile probabilities are blended with a smooth window (:mod:`napari_csunet.engine.tiling`), so there are
  no seams. They are accumulated on the model's device in a band of one tile's height that slides
  down the image: finished rows are turned into labels and leave the band at once. Memory is the
  tile batch plus the outputs, never all tiles (a 16,384^2 image needs a ~26 MB band for 3 classes
  at tile 512, plus its 268 MB of labels).
- Each image is normalised by its own statistics (``{"mode": "image"}``) and every tile by the
  whole image's, as in training; stacks are normalised and predicted slice by slice.
- The model stays on its device between calls (the GUI keeps one Segmenter warm).
- The next batch is read and normalised on a helper thread while the network runs (reading a
  zarr mosaic and the host-side copies leave the critical path); :meth:`Segmenter.predict_to`
  reads any array-like (zarr, dask) tile by tile and writes labels band by band into array-likes
  (zarr), so an image larger than memory never has to be loaded.
- ``cancel`` is also polled between the network's stages, so a large tile stops within a stage.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..images.reading import ImageError, split_planes, to_model_channels
from ..models.modelfile import ModelInfo, numbered_class_names
from .accumulator import Band
from .allocator import heap_reuse
from .device import amp_dtype, is_out_of_memory, pick_device, prefers_channels_last
from .lazy import checked_pixels, lazy_stats
from .memory_plan import Budget, bytes_per_pixel, device_budget, engine_bytes_per_pixel
from .tiling import CONTEXT_PX, TileLayout, check_tile

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["pick_device", "Cancelled", "InferenceMemoryError", "Prediction", "Segmenter", "split_planes"]

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))
Tile = tuple[int, int, int, int]  # tile row, tile column, padded y, padded x
Reader = Callable[[int, int, int, int], np.ndarray]  # (y, x, rows, columns) -> raw pixels


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


class Segmenter:
    """A model kept warm on its device, and how to tile images for it."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo, device: str | torch.device = "auto",
                 tile: int | None = None, overlap: float | None = None, batch_size: int | None = None,
                 amp: bool = True, channels_last: bool | None = None, overlap_px: int = CONTEXT_PX) -> None:
        """``tile``/``batch_size`` None: chosen per image from the device's memory; ``overlap`` (a
        fraction of the tile) None: ``overlap_px`` pixels. ``channels_last`` None: NHWC where
        :func:`~napari_csunet.engine.device.prefers_channels_last` says it is faster (CUDA, CPUs)."""
        import torch

        self.multiple = int(getattr(model, "size_multiple", 1))
        if tile is not None or overlap is not None:
            check_tile(self.multiple if tile is None else tile, self.multiple, 0.0 if overlap is None else overlap)
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(overlap_px) < 0:
            raise ValueError(f"overlap_px must be at least 0, got {overlap_px}")
        if not 1 <= info.num_classes <= 255:
            raise ValueError(f"labels are stored as uint8: at most 255 classes, the model has {info.num_classes}")
        if info.is_pretraining_only:
            raise ValueError(f"{info.name or 'this model'} is a self-supervised pretrained model: it reconstructs "
                             "pixels and knows no classes. Fine-tune it on a few labelled images first (the GUI's "
                             f"Fine-tune tab, or csunet finetune --model {info.name or 'FILE'} --data DIR)")
        self.info = info
        self.device = pick_device(device)
        self.tile = None if tile is None else int(tile)
        self.overlap = None if overlap is None else float(overlap)
        self.overlap_px = int(overlap_px)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.amp_dtype = amp_dtype(self.device, amp)
        self.channels_last = prefers_channels_last(self.device) if channels_last is None else bool(channels_last)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.in_chans = int(info.config.in_chans)
        self._bytes_per_px: float | None = None  # the network's, measured once
        self._budgets: dict[bool, Budget] = {}  # keyed by the per-call options that change memory (TTA)

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> Segmenter:
        """Load a model file (see :mod:`napari_csunet.models.modelfile`)."""
        from ..models.modelfile import load_model_file

        model, info = load_model_file(path, device="cpu")
        return cls(model, info, **kw)

    @classmethod
    def from_spec(cls, spec: str, **kw: Any) -> Segmenter:
        """A model file path, a starter/user model name, or a preset (random weights: warns)."""
        from ..models.catalog import resolve_model

        kind, path = resolve_model(spec)
        if kind == "file":
            return cls.from_file(path, **kw)
        from ..models import build_model
        from ..models.registry import get_preset

        config = get_preset(spec).config
        warnings.warn(f"{spec!r} is a preset with random weights: its labels mean nothing until it is trained "
                      "or fine-tuned; pass a model file for real segmentations", UserWarning, stacklevel=2)
        info = ModelInfo(config, numbered_class_names(config.num_classes), preset=spec, name=spec,
                         description="untrained preset (random weights)")
        return cls(build_model(config), info, **kw)

    @property
    def name(self) -> str:
        return self.info.name or self.info.preset or "model"

    def budget(self, tta: bool = False) -> Budget:
        """The device's memory facts for this model, per call option: the network's bytes per pixel
        are measured once, on first use; flip TTA keeps a second copy of the probabilities alive."""
        if tta not in self._budgets:
            if self._bytes_per_px is None:
                import torch

                with torch.inference_mode():
                    self._bytes_per_px = bytes_per_pixel(self.model, self.in_chans, self.multiple, self.device,
                                                         self.amp_dtype, self.channels_last)
            bpp = self._bytes_per_px * (2 if tta else 1) + engine_bytes_per_pixel(self.in_chans, self.info.num_classes)
            self._budgets[tta] = Budget(self.device.type, device_budget(self.device), bpp, self.multiple,
                                        self.info.num_classes)
        return self._budgets[tta]

    def plan(self, shape: Sequence[int], tta: bool = False) -> tuple[TileLayout, int]:
        """(the tile layout, tiles per batch) for one (H, W) plane, with the automatic choices made."""
        hw = (int(shape[0]), int(shape[1]))
        if self.tile is not None and self.batch_size is not None:
            tile: int | tuple[int, int] = self.tile
            batch = self.batch_size
        else:
            tile, batch = self.budget(tta).plan(hw, self.overlap_px, self.tile, self.batch_size)
        return TileLayout.plan(hw, tile, self.overlap, self.multiple, self.overlap_px), batch

    def num_tiles(self, shape: Sequence[int], tta: bool = False) -> int:
        """Tiles one (H, W) plane needs, e.g. for an estimate before predicting."""
        return self.plan(shape, tta)[0].num_tiles

    def predict(self, image: np.ndarray, *, want_probs: bool = False, want_uncertainty: bool = False,
                tta: bool = False, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                name: str = "image") -> Prediction:
        """Segment a 2D image (H, W[, C]) or a stack (Z, H, W[, C]) slice by slice.

        ``tta``: average over flips (4x the work; the tiles are planned for its memory).
        ``progress(done, total)`` counts tiles; ``cancel()`` returning True raises :class:`Cancelled`
        before the next batch or network stage. ``name`` is used in error messages (e.g. the file path).
        """
        planes, stack = split_planes(image, name)
        plans = [self.plan(p.shape[:2], tta) for p in planes]
        tick = _ticker(sum(lay.num_tiles for lay, _ in plans), progress)
        (h, w), k, z = plans[0][0].shape, self.info.num_classes, len(planes)
        out = Prediction(np.empty((z, h, w), np.uint8), np.empty((z, k, h, w), np.float16) if want_probs else None,
                         np.empty((z, h, w), np.float32) if want_uncertainty else None)
        for i, (plane, (layout, batch)) in enumerate(zip(planes, plans, strict=True)):
            view = Prediction(*(None if a is None else a[i] for a in (out.labels, out.probs, out.uncertainty)))
            label = f"{name}[{i}]" if stack else name
            self._check_channels(plane, label)
            padded = layout.pad_image(plane)
            self._predict_plane(lambda y, x, th, tw, a=padded: a[y:y + th, x:x + tw], self._stats(plane), layout,
                                batch, view, tick, cancel, label, tta)
        if not stack:
            out = Prediction(*(None if a is None else a[0] for a in (out.labels, out.probs, out.uncertainty)))
        return out

    def predict_to(self, source: Any, labels: Any, *, probs: Any = None, stats: tuple[float, float] | None = None,
                   tta: bool = False, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                   name: str = "image") -> None:
        """Segment one 2D array-like ``source`` (H, W[, C]) (zarr, dask, numpy) read tile by tile into
        array-likes ``labels`` (H, W) uint8 and optionally ``probs`` (K, H, W), written band by band.

        ``stats`` (mean, std) skips the pass over the image that :func:`lazy_stats` makes.
        """
        shape = tuple(int(s) for s in source.shape)
        if len(shape) not in (2, 3) or (len(shape) == 3 and not 1 <= shape[2] <= 4):
            raise ImageError(f"{name}: shape {shape} is not a 2D grey or colour (H, W, C<=4) image")
        self._check_channels(np.empty((1, 1) + shape[2:]), name)
        layout, batch = self.plan(shape[:2], tta)
        stats = self._stats(source) if stats is None else stats
        if layout.padded != layout.shape:  # a side shorter than a tile: small along it, so load it
            padded = layout.pad_image(checked_pixels(source[:], name))
            reader: Reader = lambda y, x, th, tw: padded[y:y + th, x:x + tw]  # noqa: E731
        else:
            reader = lambda y, x, th, tw: checked_pixels(source[y:y + th, x:x + tw], name)  # noqa: E731
        self._predict_plane(reader, stats, layout, batch, Prediction(labels, probs), _ticker(layout.num_tiles, progress),
                            cancel, name, tta)

    # -- one plane -------------------------------------------------------------------------------

    def _mode(self) -> str:
        return (self.info.normalization or {"mode": "image"}).get("mode", "image")

    def _stats(self, plane: Any) -> tuple[float, float]:
        norm, mode = self.info.normalization or {"mode": "image"}, self._mode()
        if mode == "image":  # the whole image's statistics for every tile, as in training
            return lazy_stats(plane, self.in_chans)
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

    def _predict_plane(self, read: Reader, stats: tuple[float, float], layout: TileLayout, batch_size: int,
                       out: Prediction, tick: Callable[[int], None], cancel: CancelFn | None, name: str,
                       tta: bool) -> None:
        """Fill ``out`` (views of the caller's arrays, or array-likes) with one plane's prediction."""
        import torch

        th, tw = layout.tile
        band = Band(layout, self.info.num_classes, self.device, out)
        tiles = [(i, j, y, x) for i, y in enumerate(layout.ys) for j, x in enumerate(layout.xs)]
        batches = [tiles[b:b + batch_size] for b in range(0, len(tiles), batch_size)]
        with torch.inference_mode(), heap_reuse(self.device.type == "cpu"), self._stage_cancel(cancel, name), \
                ThreadPoolExecutor(1) as pool:
            for batch, x in zip(batches, self._prefetch(pool, read, batches, (th, tw), stats), strict=True):
                if cancel is not None and cancel():
                    raise Cancelled(f"{name}: segmentation cancelled")
                probs = self._forward(x.to(self.device, non_blocking=True), (th, tw), tta)
                for tile, p in zip(batch, probs, strict=True):
                    band.add(*tile, p)
                tick(len(batch))

    def _prefetch(self, pool: ThreadPoolExecutor, read: Reader, batches: list[list[Tile]], size: tuple[int, int],
                  stats: tuple[float, float]) -> Iterator[torch.Tensor]:
        """The input batches, each read and normalised on ``pool`` while the previous one runs."""
        pending = pool.submit(self._batch, read, batches[0], size, stats) if batches else None
        for b in range(len(batches)):
            assert pending is not None
            x = pending.result()
            pending = pool.submit(self._batch, read, batches[b + 1], size, stats) if b + 1 < len(batches) else None
            yield x

    def _batch(self, read: Reader, batch: list[Tile], size: tuple[int, int], stats: tuple[float, float]) -> torch.Tensor:
        """One normalised float32 input batch, written straight into its (pinned, on CUDA) tensor."""
        import torch

        th, tw = size
        mean, std = np.float32(stats[0]), np.float32(stats[1])
        x = torch.empty((len(batch), self.in_chans, th, tw), dtype=torch.float32, pin_memory=self.device.type == "cuda")
        buf = x.numpy()
        for n, (*_, y, x0) in enumerate(batch):
            tile = read(y, x0, th, tw)
            if tile.ndim == 2:  # grey: one pass from the stored dtype, no float copy of the tile
                np.subtract(tile, mean, out=buf[n, 0], dtype=np.float32)
                buf[n, 1:] = buf[n, :1]
            else:
                np.subtract(to_model_channels(tile, self.in_chans), mean, out=buf[n])
            np.divide(buf[n], std, out=buf[n])
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @contextlib.contextmanager
    def _stage_cancel(self, cancel: CancelFn | None, name: str) -> Iterator[None]:
        """Poll ``cancel`` before each top-level stage of the network (large tiles take seconds)."""
        if cancel is None:
            yield
            return

        def check(*_: object) -> None:
            if cancel():
                raise Cancelled(f"{name}: segmentation cancelled")

        hooks = [m.register_forward_pre_hook(check) for n, m in self.model.named_modules() if n and n.count(".") <= 1]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    def _forward(self, x: torch.Tensor, size: tuple[int, int], tta: bool) -> torch.Tensor:
        """Softmax probabilities (B, K, th, tw) in float32, flip-averaged with TTA."""
        import torch

        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        try:
            with amp:
                probs = self._probs(x)
                if tta:
                    for dims in _FLIPS:
                        probs = probs + self._probs(x.flip(dims)).flip(dims)
                    probs = probs / (1 + len(_FLIPS))
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            from ..models.shift_masks import clear_shift_masks

            clear_shift_masks()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = max(self.multiple, max(size) // 2 // self.multiple * self.multiple)
            raise InferenceMemoryError(
                f"out of memory on {self.device} with {size[0]}x{size[1]} tiles in batches of {len(x)}"
                f"{' with flip TTA' if tta else ''}: use a smaller batch (batch_size/--batch 1) or tile "
                f"(tile/--tile {smaller})") from None
        return probs

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        k = self.info.num_classes
        if logits.ndim != 4 or logits.shape[1] != k or logits.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"model {self.name!r} returned shape {tuple(logits.shape)} for input {tuple(x.shape)}; "
                             f"expected (batch, {k} classes, {x.shape[-2]}, {x.shape[-1]})")
        return logits.float().softmax(1)


def _ticker(total: int, progress: ProgressFn | None) -> Callable[[int], None]:
    """``tick(n)``: n more tiles done, reported as ``progress(done, total)`` (starting with 0)."""
    done = 0
    if progress is not None:
        progress(0, total)

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return tick
