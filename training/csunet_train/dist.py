"""torchrun / DistributedDataParallel helpers: one process per device, rank 0 speaks and writes.

Without torchrun's environment everything runs as a world of one and no process group is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as tdist

from napari_csunet.engine.device import launch_ranks, rank_device

__all__ = ["DistInfo", "setup", "cleanup", "all_reduce_sum"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(preference: str = "auto") -> DistInfo:
    """Join torchrun's process group when launched by it: NCCL on GPUs, gloo on CPUs."""
    world, rank, local_rank = launch_ranks()
    device = rank_device(preference)  # the GUI's and csunet segment's rule, per local rank
    if world > 1 and not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def cleanup() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op in a world of one)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t
