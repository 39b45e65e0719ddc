"""Defaults in one place: TrainConfig's. The GUI's jobs (Fine-tune tab, live update) name only where
they deliberately differ, and the values they run with are pinned here, so a change to TrainConfig's
defaults that would move them is caught."""

from __future__ import annotations

import os

import pytest

from csunet_train.config import TrainConfig
from napari_csunet.loop.finetune_job import (
    FINETUNE_OVERRIDES,
    FORM_FIELDS,
    finetune_defaults,
    finetune_job_spec,
)
from napari_csunet.loop.live_update import LIVE_OVERRIDES, live_job_spec

PAIRS = [{"image": "a.tif", "labels": "b.tif"}]

#: the documented differences (loop/finetune_job.py, loop/live_update.py: one line of why each)
DOCUMENTED = {
    "finetune": {"steps": 60, "lr": 3e-4},
    "live": {"steps": 20, "eval_every": 10, "lr": 3e-4, "batch_size": 2, "freeze_cnn": True, "freeze_swin": True,
             "pseudo_weight": 0.0, "holdout": "blocks"},
}

#: what the jobs ran with when the correction loop was measured (docs/training.md, docs/correction_queue.md)
EFFECTIVE = {
    "finetune": {"steps": 60, "lr": 3e-4, "crop": 256, "batch_size": 4, "aug_strength": 0.5, "freeze_cnn": False,
                 "freeze_swin": False, "eval_every": 12, "distill_weight": 1.0, "pseudo_weight": 0.3,
                 "holdout": "strip", "threads": None, "semi_weight": 0.0, "context_crops": 0.3,
                 "unchecked_limit": 0.03, "unchecked_class_limit": 0.05, "val_fraction": 0.2},
    "live": {"steps": 20, "lr": 3e-4, "crop": 256, "batch_size": 2, "aug_strength": 0.5, "freeze_cnn": True,
             "freeze_swin": True, "eval_every": 10, "distill_weight": 1.0, "pseudo_weight": 0.0,
             "holdout": "blocks", "threads": max(1, (os.cpu_count() or 2) - 1), "semi_weight": 0.0,
             "context_crops": 0.3, "unchecked_limit": 0.03, "unchecked_class_limit": 0.05, "val_fraction": 0.2},
}


def _job(kind: str, tmp_path) -> TrainConfig:
    if kind == "finetune":
        return finetune_job_spec(tmp_path / "m.safetensors", PAIRS, ["a", "b"], tmp_path / "o.safetensors")
    return live_job_spec(tmp_path / "m.safetensors", PAIRS, ["a", "b"], tmp_path / "o.safetensors")


@pytest.mark.parametrize("kind, overrides", [("finetune", FINETUNE_OVERRIDES), ("live", LIVE_OVERRIDES)])
def test_the_overrides_are_exactly_the_documented_differences(kind, overrides):
    assert overrides == DOCUMENTED[kind]
    defaults = TrainConfig.defaults()
    same = [k for k, v in overrides.items() if defaults[k] == v]
    assert same == [], f"{kind}: {same} restate TrainConfig's default: drop them from the overrides"


@pytest.mark.parametrize("kind", ["finetune", "live"])
def test_the_gui_s_jobs_run_with_the_pinned_values(kind, tmp_path):
    job = _job(kind, tmp_path)
    assert {k: getattr(job, k) for k in EFFECTIVE[kind]} == EFFECTIVE[kind]
    assert job.mode == "finetune"


def test_the_fine_tune_form_shows_what_the_job_runs_with(tmp_path):
    job = _job("finetune", tmp_path)
    assert {k: finetune_defaults()[k] for k in FORM_FIELDS} == {k: getattr(job, k) for k in FORM_FIELDS}
    assert set(TrainConfig.defaults()) == {f for f in TrainConfig.__dataclass_fields__ if f != "out"}
