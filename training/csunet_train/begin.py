"""What every job does first, training or pretraining: ranks and device, the clock, the stop control.

Its own module so that :mod:`.job` and :mod:`.pretrain` share it without importing each other.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .events import Emit, StopControl, silent
from .validation import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["begin_job", "device_name", "ignore_sigint"]


def device_name(device: torch.device) -> str:
    """The device as the ``started`` event names it (with the GPU's model)."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def begin_job(cfg: Any, emit: Emit, stop: StopControl | None) -> tuple[float, Any, Any, Emit, StopControl]:
    """(start time, clock, rank/device, emitter, stop control) of a training or pretraining job.

    A time budget counts from here (loading and the first validation included); ranks other than
    0 stay silent.
    """
    from . import dist as distmod
    from .loop import Clock

    t_start = time.perf_counter()
    clock = Clock(cpu=getattr(cfg, "budget_clock", "wall") == "cpu")
    clock.start()
    try:
        dist = distmod.setup(cfg.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return (t_start, clock, dist, emit if dist.is_main else silent,
            stop or StopControl(cfg.stop_file, handle_signals=False))


def ignore_sigint(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which stops cleanly."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
