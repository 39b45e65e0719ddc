"""How large a tile and a tile batch a device takes: default tiling from the image and the device.

Why: a tile costs a fixed overhead and every seam costs overlap, so the fewest, largest tiles that
fit in memory run closest to the bare forward pass. Memory is measured, not guessed, where it can
be: on CUDA a probe forward's peak allocation per pixel; on the CPU (no allocator statistics) the
sum of the network's layer outputs per pixel times a factor calibrated here: with glibc's heap
reuse (:mod:`.allocator`) csunet-small fp32 grew the peak RSS by 730 bytes/px vs 4094 bytes/px of layer
outputs, csunet-tiny 679 vs 2598 (without it: 592 and 433; a 2048² tile, 2026-11-27).
torch is imported inside the functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .allocator import heap_reuse_available, kept_heap_bytes
from .tiling import choose_tile

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Budget", "device_budget", "bytes_per_pixel", "engine_bytes_per_pixel", "available_ram"]

#: measured peak growth / summed layer outputs on this project's CPU, rounded up: with heap reuse
#: 0.178 and 0.261 (csunet-small, csunet-tiny), without it 0.145 and 0.167
_CPU_LIVE_SHARE = {True: 0.3, False: 0.2}
_CPU_MAX_BYTES = 6 * 2**30  # activations: more buys no speed on a CPU
#: largest tile (pixels): a CPU runs a 2048^2 tile in tens of seconds already (progress, cancel)
_MAX_AREA = {"cpu": 2048**2, "mps": 4096**2, "cuda": 8192**2}
_MAX_BAND_BYTES = {"cpu": 384 * 2**20, "mps": 512 * 2**20}  # the accumulation band of wide mosaics
_MAX_BATCH = {"cpu": 4, "mps": 8, "cuda": 32}
#: a CPU gains nothing from batching large tiles, and a batch is what cancel waits for
_MAX_BATCH_PIXELS = {"cpu": 2**20}


def engine_bytes_per_pixel(in_chans: int, num_classes: int) -> int:
    """What the engine adds per tile pixel: the input (and its device copy), logits, probabilities
    and their weighted sum in float32."""
    return 8 * in_chans + 12 * num_classes


def available_ram() -> tuple[int, int]:
    """(total, available) bytes of RAM (psutil, else /proc/meminfo, else 8 GiB each)."""
    try:
        import psutil

        mem = psutil.virtual_memory()
        return int(mem.total), int(mem.available)
    except ImportError:  # pragma: no cover - psutil comes with napari; headless installs may lack it
        info = {}
        try:
            with open("/proc/meminfo") as f:
                info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        except (OSError, ValueError, IndexError):
            pass
        return info.get("MemTotal", 8 * 2**30), info.get("MemAvailable", 8 * 2**30)


def bytes_per_pixel(model: torch.nn.Module, in_chans: int, side: int, device: torch.device,
                    amp_dtype: torch.dtype | None, channels_last: bool) -> float:
    """Peak activation bytes per input pixel of one forward pass (see the module docstring)."""
    import contextlib

    import torch

    x = torch.zeros(1, in_chans, side, side, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode(), amp:
            model(x)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / side**2
    total = 0

    def count(_mod: torch.nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    try:
        with torch.inference_mode(), amp:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return _CPU_LIVE_SHARE[heap_reuse_available()] * total / side**2


def device_budget(device: torch.device) -> int:
    """Bytes a prediction may use for activations and its band on ``device``."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(0.6 * free)
    total, available = available_ram()
    available = min(total, available + kept_heap_bytes())  # freed and kept for the next prediction
    return int(min(0.3 * total, 0.6 * available, _CPU_MAX_BYTES))


@dataclass(frozen=True)
class Budget:
    """Memory facts of one model on one device; :meth:`plan` turns them into a tile and a batch."""

    device_type: str
    bytes: int
    bytes_per_px: float
    multiple: int
    num_classes: int

    def plan(self, shape: tuple[int, int], overlap_px: int, tile: int | None = None,
             batch: int | None = None) -> tuple[tuple[int, int], int]:
        """((tile rows, tile columns), tiles per batch) for an (H, W) image; given values are kept."""
        act = 0.9 * self.bytes
        if tile is None:
            band = min(self.bytes // 4, _MAX_BAND_BYTES.get(self.device_type, self.bytes))
            area = min(int(act / max(self.bytes_per_px, 1e-3)), _MAX_AREA.get(self.device_type, 2048**2))
            hw = choose_tile(shape, self.multiple, overlap_px, area,
                             row_bytes=4 * self.num_classes * max(int(shape[1]), 1), max_band_bytes=band)
        else:
            m = self.multiple
            hw = (min(tile, -(-int(shape[0]) // m) * m), min(tile, -(-int(shape[1]) // m) * m))
        if batch is None:
            fit = int(act // max(hw[0] * hw[1] * self.bytes_per_px, 1.0))
            most = min(_MAX_BATCH.get(self.device_type, 4), _MAX_BATCH_PIXELS.get(self.device_type, 2**40) // (hw[0] * hw[1]))
            batch = max(1, min(fit, most))
        return hw, int(batch)

