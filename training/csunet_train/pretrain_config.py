"""The pretraining job description (``mode: pretrain`` in JOB.json, ``csunet pretrain`` flags).

Importable without torch, like :mod:`csunet_train.config` (which reads either kind from a job file).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_csunet.form_fields import option
from napari_csunet.models.config import TILE_MULTIPLE

from .validation import config_from_dict, need

__all__ = ["PretrainConfig", "PRETRAIN_MODE", "adaptation_job"]

PRETRAIN_MODE = "pretrain"


@dataclass
class PretrainConfig:
    """Self-supervised masked-image-modelling pretraining of a whole network (see docs/pretraining.md)."""

    out: str
    images: list[str] = field(default_factory=list)  # folders (searched recursively) or image files
    exclude: list[str] = field(default_factory=list)  # glob patterns on file name, stem or relative path
    mode: str = PRETRAIN_MODE
    preset: str = "csunet-tiny"
    model: str | None = None  # ``--from``: a model file (segmentation or pretrained) to continue from
    resume: bool = False  # continue the run saved at ``out`` (its steps count toward ``steps``)
    in_chans: int = 1
    steps: int = option(2000, "pretraining steps (a CPU does about one step of 8 crops a second)",
                        min=1, max=1_000_000)
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_steps: int | None = None  # default: 5% of the steps, at most 500
    crop: int = 256
    batch_size: int = 16
    mask_ratio: float = 0.6
    mask_patch: int = 32
    aug_strength: float = 0.5
    val_images: int = 8  # images held out to report reconstruction error (0: fixed crops of training images)
    eval_every: int = 200
    max_side: int | None = 4096  # larger images are strided down to this side so one mosaic cannot fill memory
    grad_clip: float = 1.0
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    num_workers: int = 0
    stop_file: str | None = None
    time_budget_s: float | None = None
    half: bool = False
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        need(bool(self.out), "out: a path for the pretrained model file is required")
        need(self.mode == PRETRAIN_MODE, f"mode: {self.mode!r} must be {PRETRAIN_MODE!r} for a pretraining job")
        need(bool(self.images), "images: give at least one folder or file of unlabelled micrographs")
        need(isinstance(self.steps, int) and self.steps >= 0, f"steps: {self.steps!r} must be an integer >= 0")
        need(isinstance(self.crop, int) and self.crop > 0 and self.crop % TILE_MULTIPLE == 0,
             f"crop: {self.crop!r} must be a positive multiple of {TILE_MULTIPLE}")
        need(isinstance(self.mask_patch, int) and self.mask_patch > 0 and self.crop % self.mask_patch == 0,
             f"mask_patch: {self.mask_patch!r} must divide the crop ({self.crop})")
        need(0.0 < float(self.mask_ratio) < 1.0, f"mask_ratio: {self.mask_ratio} must be in (0, 1)")
        need(self.in_chans in (1, 3), f"in_chans: {self.in_chans} must be 1 (grey) or 3 (colour)")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be an integer >= 1")
        need(float(self.lr) > 0, f"lr: {self.lr} must be > 0")
        need(isinstance(self.eval_every, int) and self.eval_every >= 1, "eval_every must be an integer >= 1")
        need(0.0 <= float(self.aug_strength) <= 1.0, f"aug_strength: {self.aug_strength} must be in 0..1")
        need(self.val_images >= 0 and self.num_workers >= 0, "val_images and num_workers must be >= 0")
        need(self.time_budget_s is None or float(self.time_budget_s) > 0, "time_budget_s must be null or > 0")
        need(not (self.resume and self.model), "resume continues 'out'; it cannot be combined with 'model' (--from)")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(500, self.steps // 20)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        data = dict(data)
        for key in ("images", "exclude"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        return config_from_dict(cls, data, "pretraining job")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adaptation_job(start: str | Path, sources: Sequence[str | Path], out: str | Path, steps: int,
                   device: str = "auto", amp: bool = True) -> PretrainConfig:
    """The job that adapts a pretrained model to the user's unlabelled images (the GUI's "Adapt").

    A short continuation of pretraining (lower rate, small batch, no held-out images); checked here
    so a bad job is refused with the key named, before any child starts.
    """
    stem = Path(str(start)).stem
    spec = {"mode": PRETRAIN_MODE, "model": str(start), "images": [str(s) for s in sources], "out": str(out),
            "steps": int(steps), "batch_size": 8, "lr": 5e-4, "eval_every": max(1, int(steps) // 5),
            "val_images": 0, "device": device, "amp": bool(amp), "name": f"{stem}-adapted-{time.strftime('%Y%m%d-%H%M%S')}",
            "description": f"{stem} adapted by masked image modelling on the user's own micrographs "
                           f"({len(sources)} source(s)); fine-tune it before use"}
    return PretrainConfig.from_dict(spec)
