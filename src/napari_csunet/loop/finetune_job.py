"""The Fine-tune tab's job, GUI-free: its defaults and the ``TrainConfig`` it runs (the GUI, the
headless correction-loop benchmark and scripts build it here, once; it becomes JOB.json only at the
child's door, :class:`~napari_csunet.loop.training_job.TrainingJob`).

Defaults, measured in docs/training.md ("A loop that never makes a model worse"): 60 steps of
batch 4 keep Start -> re-segmented under a minute on a 2-core CPU; every pixel the user did not
correct is distilled to the starting model (``distill_weight``), so what was right stays right.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from csunet_train.config import TrainConfig

__all__ = ["FINETUNE_DEFAULTS", "FORM_FIELDS", "finetune_job_spec"]

#: the TrainConfig fields the Fine-tune tab's form offers (the rest: the job's defaults, or set below)
FORM_FIELDS = ("steps", "lr", "crop", "batch_size", "aug_strength", "freeze_cnn", "freeze_swin")

FINETUNE_DEFAULTS: dict[str, Any] = {"steps": 60, "lr": 3e-4, "crop": 256, "batch_size": 4, "aug_strength": 0.5,
                                     "freeze_cnn": False, "freeze_swin": False, "distill_weight": 1.0}


def finetune_job_spec(model: str | Path, pairs: list[dict[str, Any]], class_names: list[str], out: str | Path,
                      class_colors: list[str] | None = None, device: str = "auto", amp: bool = True,
                      name: str | None = None, **params: Any) -> TrainConfig:
    """The training job of one fine-tune on the annotation set, built and checked once (ConfigError
    names a bad key).

    ``params`` override :data:`FINETUNE_DEFAULTS` (e.g. the form's values); the validation
    interval follows the steps (five evaluations on the held-out reviewed blocks).
    """
    from csunet_train.config import TrainConfig

    values = FINETUNE_DEFAULTS | params
    steps = int(values["steps"])
    spec = {"mode": "finetune", "model": str(model), "pairs": list(pairs), "val_pairs": None,
            "class_names": list(class_names), "class_colors": list(class_colors) if class_colors else None,
            "eval_every": max(1, steps // 5), "device": device, "amp": bool(amp), "out": str(out),
            "name": name or Path(out).stem,
            "description": f"fine-tuned from {Path(model).name} on {len(pairs)} corrected image(s)"} | values
    return TrainConfig.from_dict(spec)
