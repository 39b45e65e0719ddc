"""Device rules shared by inference and training: which device, which mixed precision, what is an
out-of-memory error. One place, so the GUI, ``csunet segment`` and a training child agree (a Mac
fine-tunes on MPS like it segments there). torch is imported inside the functions only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["pick_device", "launch_ranks", "rank_device", "amp_dtype", "cpu_has_native_bf16", "prefers_channels_last", "in_device_layout",
           "is_out_of_memory", "DEVICE_HELP"]

DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(name: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must exist (else ValueError).

    ``local_rank`` (under torchrun) makes ``auto``/``cuda`` take that rank's own GPU.
    """
    import torch

    key = str(name).strip().lower()
    if key == "auto":
        key = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        device = torch.device(key)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here; use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank % count)
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: there are only {count} CUDA GPU(s)")
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {name!r} asked for, but Apple MPS is not available here; use cpu or auto")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r} is not supported; use {DEVICE_HELP}")
    return device


def launch_ranks() -> tuple[int, int, int]:
    """(world size, rank, local rank) as torchrun sets them; (1, 0, 0) in a plain process."""
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(name: str | torch.device = "auto") -> torch.device:
    """This process's device: under torchrun each local rank takes its own GPU (``csunet segment``
    and training share this rule)."""
    return pick_device(name, launch_ranks()[2])


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16 or AMX: recent Xeon and EPYC), where
    oneDNN runs bf16 matrix products at 2-2.5x the float32 rate."""
    import torch

    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype: bf16 on GPUs that have it, else fp16 (training adds a grad scaler);
    bf16 on CPUs with native bf16 (measured on this project's EPYC, 2 cores: csunet-small inference
    1.45x, a csunet-tiny training step 1.65x as fast; the starter models' labels agree with float32
    on 99.9 % of the pixels); None (float32) on other CPUs, where bf16 is emulated and slower,
    and on MPS. ``enabled=False`` (``--no-amp``) is float32 everywhere."""
    import torch

    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def prefers_channels_last(device: torch.device) -> bool:
    """NHWC tensors where the convolution libraries run them faster: cuDNN under AMP, and oneDNN on
    CPUs, whose convolutions and pooling otherwise reorder NCHW at every layer (measured on this
    project's EPYC, bf16: a csunet-small 2048² prediction 2.8 vs 3.2 s, a csunet-tiny training
    step 0.31 vs 0.36 s). Not on MPS, where it was never measured."""
    return device.type in ("cuda", "cpu")


def in_device_layout(obj: Any, device: torch.device) -> Any:
    """A module or a 4-D batch on ``device`` in the layout :func:`prefers_channels_last` picks there,
    so a model and the batches fed to it always agree."""
    import torch

    return obj.to(memory_format=torch.channels_last) if prefers_channels_last(device) else obj


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocator failure on any device (CUDA, MPS or a CPU's ``can't allocate memory``)."""
    import torch

    types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                  if t)
    if isinstance(exc, types):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | MemoryError) and ("out of memory" in text or "can't allocate memory" in text)
