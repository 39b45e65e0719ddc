"""The Fine-tune tab's job, GUI-free: where it differs from ``TrainConfig``'s defaults and the
``TrainConfig`` it runs (the GUI, the headless correction-loop benchmark and scripts build it here,
once; it becomes JOB.json only at the child's door, :class:`~napari_csunet.loop.training_job.TrainingJob`).

Every default is ``TrainConfig``'s (``csunet_train.config``, the one place they are written); this
job names only where it deliberately differs (:data:`FINETUNE_OVERRIDES`), and the tab's form shows
:func:`finetune_defaults`. Measured in docs/training.md ("A loop that never makes a model worse"):
every pixel the user did not correct is distilled to the starting model (TrainConfig's
``distill_weight``), so what was right stays right.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from csunet_train.config import TrainConfig

    from ..images.annotations import AnnotationStore
    from ..models.modelfile import ModelInfo

__all__ = ["FINETUNE_OVERRIDES", "FORM_FIELDS", "NEW_MODEL_STEPS", "finetune_defaults", "finetune_job_spec",
           "job_classes"]

#: the TrainConfig fields the Fine-tune tab's form offers (the rest: TrainConfig's, or set below)
FORM_FIELDS = ("steps", "lr", "crop", "batch_size", "aug_strength", "freeze_cnn", "freeze_swin")

#: where the Fine-tune tab's job differs from TrainConfig's defaults, and why
FINETUNE_OVERRIDES: dict[str, Any] = {
    "steps": 60,  # with batch 4: Start -> re-segmented under a minute on a 2-core CPU
    "lr": 3e-4,  # a trained model is corrected, not trained from scratch: smaller steps
}

#: the steps the tab proposes for a model whose output layer no step has trained (the Model tab's new
#: model for new classes): it learns from nothing, at the few-shot rates. The few-shot runs of
#: docs/training.md ("A new material in a few labelled images") trained 174-233 steps of batch 4
#: (150 CPU seconds); 60 steps, enough to correct a trained model, leave a new one half-taught.
NEW_MODEL_STEPS = 200


def finetune_defaults() -> dict[str, Any]:
    """What the Fine-tune tab's job runs with unless the form or the caller says otherwise."""
    from csunet_train.config import TrainConfig

    return TrainConfig.defaults() | FINETUNE_OVERRIDES


def job_classes(info: ModelInfo, store: AnnotationStore) -> tuple[list[str], list[str]]:
    """The classes a fine-tune of ``info``'s model on ``store`` trains: the model's names, the
    training set's colours (as the user saw them) else the model's."""
    return list(info.class_names), list(store.class_colors or info.class_colors)


def finetune_job_spec(model: str | Path, pairs: list[dict[str, Any]], class_names: list[str], out: str | Path,
                      class_colors: list[str] | None = None, device: str = "auto", amp: bool = True,
                      name: str | None = None, **params: Any) -> TrainConfig:
    """The training job of one fine-tune on the annotation set, built and checked once (ConfigError
    names a bad key).

    ``params`` override :data:`FINETUNE_OVERRIDES` and TrainConfig's defaults (e.g. the form's
    values); the validation interval follows the steps (five evaluations on the held-out reviewed
    blocks).
    """
    from csunet_train.config import TrainConfig

    values = FINETUNE_OVERRIDES | params
    steps = int(values["steps"])
    spec = {"mode": "finetune", "model": str(model), "pairs": list(pairs),
            "class_names": list(class_names), "class_colors": list(class_colors) if class_colors else None,
            "eval_every": max(1, steps // 5), "device": device, "amp": bool(amp), "out": str(out),
            "name": name or Path(out).stem,
            "description": f"fine-tuned from {Path(model).name} on {len(pairs)} corrected image(s)"} | values
    return TrainConfig.from_dict(spec)
