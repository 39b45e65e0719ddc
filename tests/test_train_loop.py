"""The training loop in-process on real Super1 crops (csunet-tiny, crop 256, a few steps)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from csunet_train import loop, losses
from csunet_train.config import TrainConfig
from csunet_train.data import labelled_image
from csunet_train.job import run_and_report, run_job
from csunet_train.losses import segmentation_loss
from csunet_train.sampling import CropDataset, prepare_image
from napari_csunet.images.datasets import find_samples
from napari_csunet.models import build_model
from napari_csunet.models.modelfile import load_model_file, read_model_info

TRAIN = ["spot2_0d_0", "spot2_0d_4"]
VAL = ["spot2_180d_3"]


def _pairs(data_dir: Path, names: list[str]) -> list[dict[str, str]]:
    root = data_dir / "super1_test"
    return [{"image": str(root / "images" / f"{n}.tif"), "labels": str(root / "masks" / f"{n}.tif")} for n in names]


def _job(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(out=str(out), mode="train", preset="csunet-tiny", pairs=_pairs(data_dir, TRAIN),
                val_pairs=_pairs(data_dir, VAL), class_names=["matrix", "secondary", "tertiary"], steps=12,
                lr=2e-3, crop=256, batch_size=2, aug_strength=0.3, eval_every=100, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def _fixed_batch_loss(model: torch.nn.Module, data_dir: Path) -> float:
    items = [labelled_image(*s.load(), s.image.stem) for s in find_samples(data_dir / "super1_test", names=TRAIN)]
    ds = CropDataset([prepare_image(it, 1, 256) for it in items], 256, 4, aug_strength=0.0, seed=99)
    x, y = (torch.stack(t) for t in zip(*[ds[i] for i in range(4)], strict=True))
    with torch.no_grad():  # batch statistics: 8 steps are too few for BatchNorm's running ones
        return float(segmentation_loss(model.train()(x), y))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir: Path) -> dict:
    """An 8-step run and a repeat of it."""
    tmp = tmp_path_factory.mktemp("trained")
    runs = {}
    for key, steps in (("run", 8), ("again", 8)):
        events: list[dict] = []
        done = run_job(_job(data_dir, tmp / f"{key}.safetensors", steps=steps), events.append)
        runs[key] = {"path": tmp / f"{key}.safetensors", "events": events, "done": done}
    return runs


def test_training_lowers_the_loss_on_real_super1_crops(trained: dict, data_dir: Path) -> None:
    torch.manual_seed(0)  # the job's seed: the same initial weights
    before = _fixed_batch_loss(build_model("csunet-tiny", num_classes=3), data_dir)
    after = _fixed_batch_loss(load_model_file(trained["run"]["path"])[0], data_dir)
    assert after < 0.85 * before, (before, after)
    done = trained["run"]["done"]
    assert done["steps"] == 8 and not done["stopped"] and done["best_step"] == 8
    assert done["best_metrics"]["miou"] > done["initial_metrics"]["miou"]


def test_events_and_provenance(trained: dict) -> None:
    events = trained["run"]["events"]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "checkpoint" in kinds
    started = events[0]
    assert started["train_images"] == 2 and started["val_images"] == 1 and started["classes"][0] == "matrix"
    steps = [e for e in events if e["event"] == "step"]
    assert steps[0]["step"] == 1 and steps[-1]["step"] == 8
    assert all(math.isfinite(e["loss"]) and e["images_per_s"] > 0 for e in steps)
    evals = [e for e in events if e["event"] == "eval"]
    assert evals[0]["step"] == 0 and set(evals[-1]["metrics"]) >= {"miou", "iou_paper", "pixel_accuracy", "iou_per_class"}
    info = read_model_info(trained["run"]["path"])
    p = info.provenance
    assert info.class_names == ["matrix", "secondary", "tertiary"] and info.preset == "csunet-tiny"
    assert p["steps"] == 8 and p["train_images"] == TRAIN and p["val_images"] == VAL and len(p["data_fingerprint"]) == 64
    assert p["metrics"] == trained["run"]["done"]["best_metrics"] and p["device"] == "cpu" and p["time"]


def test_training_is_deterministic_under_a_seed(trained: dict) -> None:
    a, _ = load_model_file(trained["run"]["path"])
    b, _ = load_model_file(trained["again"]["path"])
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name


def test_resume_starts_from_the_model_file(trained: dict, data_dir: Path, tmp_path: Path) -> None:
    events: list[dict] = []
    cfg = _job(data_dir, tmp_path / "resumed.safetensors", mode="finetune", model=str(trained["run"]["path"]), steps=0)
    done = run_job(cfg, events.append)
    assert done["initial_metrics"] == trained["run"]["done"]["best_metrics"]  # same weights, same data
    assert done["best_step"] == 0
    p = read_model_info(tmp_path / "resumed.safetensors").provenance
    assert p["previous"]["steps"] == 8 and p["steps"] == 8 and p["started_from"] == str(trained["run"]["path"])


def test_finetuning_that_never_beats_the_start_keeps_it_and_stops_early(trained: dict, data_dir: Path,
                                                                          tmp_path: Path, monkeypatch) -> None:
    fixed = trained["run"]["done"]["best_metrics"]
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: fixed)
    out = tmp_path / "ft.safetensors"
    done = run_job(_job(data_dir, out, mode="finetune", model=str(trained["run"]["path"]), steps=10, eval_every=1,
                        patience=2), lambda e: None)
    assert done["reason"] == "early_stop" and done["steps"] == 2 and done["best_step"] == 0
    start, _ = load_model_file(trained["run"]["path"])
    kept, _ = load_model_file(out)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), kept.state_dict().values(), strict=True))


def test_nan_loss_stops_with_an_error_and_keeps_the_best(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}

    def flaky(logits, labels, **kw):
        calls["n"] += 1
        loss = segmentation_loss(logits, labels, **kw)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(losses, "segmentation_loss", flaky)  # the job binds its loss (pseudo-label weight) from here
    events: list[dict] = []
    out = tmp_path / "nan.safetensors"
    code = run_and_report(_job(data_dir, out, steps=10, eval_every=2, batch_size=1), events.append)
    assert code == 4
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "nan" and "step 3" in events[-1]["message"]
    model, info = load_model_file(out)  # the checkpoint of a finite step, intact
    assert info.provenance["steps"] == 2
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_out_of_memory_gives_advice(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "train_step", oom)
    events: list[dict] = []
    assert run_and_report(_job(data_dir, tmp_path / "m.safetensors"), events.append) == 3
    assert events[-1]["kind"] == "oom" and "smaller crop" in events[-1]["message"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class_names": ["matrix", "precipitate"]}, "label 3 is above the 2 classes"),
        ({"val_pairs": [{"image": "missing.tif", "labels": "missing.tif"}]}, "no such file"),
        ({"pairs": [], "val_pairs": None}, "no training data"),
        ({"preset": "no-such-preset"}, "unknown preset"),
        ({"mode": "finetune", "model": "nowhere.safetensors"}, "not found"),
    ],
)
def test_bad_data_is_a_data_error(data_dir: Path, tmp_path: Path, change: dict, message: str) -> None:
    events: list[dict] = []
    assert run_and_report(_job(data_dir, tmp_path / "m.safetensors", **change), events.append) == 2
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "data"
    assert message in events[-1]["message"]
    assert not (tmp_path / "m.safetensors").exists()


def test_mismatched_image_and_labels_are_refused(data_dir: Path, tmp_path: Path) -> None:
    image = np.zeros((300, 200), np.uint8)
    events: list[dict] = []
    with pytest.raises(ValueError, match="labels are 300x100 but the image is 300x200"):
        run_job(_job(data_dir, tmp_path / "m.safetensors", pairs=[]), events.append,
                train=[labelled_image(image, np.ones((300, 100), np.uint8), "bad")])


def test_in_memory_images_frozen_cnn_and_a_class_missing_from_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300), dtype=np.uint8)  # smaller than the crop: padded
    labels = np.zeros((200, 300), np.uint8)
    labels[:50] = 1
    labels[150:] = 2  # classes 1, 2 only; partial labels
    val_labels = np.full((200, 300), 3, np.uint8)
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), preset="csunet-tiny", class_names=["a", "b", "c"], steps=2,
                      batch_size=1, eval_every=2, freeze_cnn=True, device="cpu", seed=1)
    events: list[dict] = []
    torch.manual_seed(1)
    start = build_model("csunet-tiny", num_classes=3)
    run_job(cfg, events.append, train=[labelled_image(image, labels, "mem")],
            val=[labelled_image(image, val_labels, "memval")])
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("'c' appears in validation but not in training" in w for w in warnings)
    trained, _ = load_model_file(tmp_path / "m.safetensors")
    s0, s1 = start.state_dict(), trained.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if k.startswith("cnn."))  # frozen, BatchNorm stats too
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if k.startswith("swin."))


def test_pretrained_encoders_learn_slower_and_the_schedule_warms_up() -> None:
    model = build_model("csunet-tiny")
    opt = loop.build_optimizer(model, 1e-3, 1e-4, ["cnn"], 0.1)
    cnn_ids = {id(p) for p in model.cnn.parameters()}
    for group in opt.param_groups:
        is_cnn = {id(p) in cnn_ids for p in group["params"]}
        assert len(is_cnn) == 1
        assert group["lr"] == pytest.approx(1e-4 if is_cnn.pop() else 1e-3)
    f = loop.warmup_cosine(10, 110)
    assert f(0) < f(5) < f(9) <= 1.0 and f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.505)
    assert f(110) == pytest.approx(0.01)


def test_pretrained_weights_are_applied_and_their_encoder_learns_slower(data_dir: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    import napari_csunet.weights.apply as weights  # build_preset_model applies through it

    calls: dict = {}

    def fake_apply(model, cnn, swin, *, allow_download):
        calls.update(cnn=cnn, swin=swin, allow_download=allow_download)
        return {"cnn": cnn, "cnn_id": "fake-id"}

    real_build = loop.build_optimizer

    def spy_build(model, lr, wd, pretrained, mult):
        calls["pretrained"] = list(pretrained)
        return real_build(model, lr, wd, pretrained, mult)

    monkeypatch.setattr(weights, "apply_sources", fake_apply)
    monkeypatch.setattr(loop, "build_optimizer", spy_build)
    out = tmp_path / "m.safetensors"
    run_job(_job(data_dir, out, steps=0, weights={"cnn": "imagenet", "swin": None}), lambda e: None)
    assert calls == {"cnn": "imagenet", "swin": None, "allow_download": False, "pretrained": ["cnn"]}
    assert read_model_info(out).sources == {"cnn": "imagenet", "cnn_id": "fake-id"}


def test_a_time_budget_ends_the_run_and_the_schedule(data_dir: Path, tmp_path: Path) -> None:
    done = run_job(_job(data_dir, tmp_path / "m.safetensors", steps=1000, batch_size=1, time_budget_s=0.01),
                   lambda e: None)
    assert done["reason"] == "time_budget" and done["steps"] == 1 and not done["stopped"] and done["best_step"] == 1

    class FakeClock(loop.Clock):
        now = 0.0

        @property
        def elapsed(self) -> float:
            return self.now

    clock = FakeClock()
    f = loop.budget_schedule(100.0, clock, warmup_fraction=0.1)
    assert f(0) == pytest.approx(0.01)
    clock.now = 5.0
    assert f(3) == pytest.approx(0.5)  # warm-up over the first 10% of the time
    clock.now = 55.0
    assert f(10) == pytest.approx(0.505)  # then cosine by the clock, whatever the step
    clock.now = 500.0
    assert f(11) == pytest.approx(0.01)
