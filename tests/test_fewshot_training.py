"""A new material in a few images (issue 20): rare classes sampled and weighed, the mean teacher's
update and threshold, semi-supervised jobs with unlabelled images, the CPU budget clock, and the
few-shot benchmark's protocols and summary."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from csunet_train import loop
from csunet_train.config import ConfigError, TrainConfig
from csunet_train.data import labelled_image
from csunet_train.job import run_job
from csunet_train.losses import segmentation_loss
from csunet_train.sampling import CropDataset, prepare_image
from csunet_train.semi import MeanTeacher, SemiLoss, pseudo_label_loss
from napari_csunet.models.modelfile import read_model_info

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(name: str):
    sys.path.insert(0, str(_BENCH))  # fewshot.py imports its sibling protocols.py
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", _BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(_BENCH))


def _image(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)


def _rare_set() -> list:
    """Four images of matrix (1) and a second phase (2); a precipitate (3) only in the last, 400 px."""
    items = []
    for i in range(4):
        labels = np.ones((256, 256), np.uint8)
        labels[128:] = 2
        if i == 3:
            labels[20:40, 200:220] = 3
        items.append(prepare_image(labelled_image(_image(seed=i), labels, f"im{i}"), 1, 256, seed=i))
    return items


def _shown(ds: CropDataset, n: int, c: int) -> float:
    """The share of ``n`` crops that show class ``c``."""
    return float(np.mean([bool((ds[i][1] == c).any()) for i in range(n)]))


@pytest.mark.parametrize(("balance", "low", "high"), [(0.0, 0.0, 0.05), (0.5, 0.15, 0.26), (1.0, 0.28, 0.42)])
def test_class_aware_sampling_shows_a_rare_phase_without_starving_the_rest(balance, low, high) -> None:
    """A uniformly drawn class of the whole set, on an image that has it: the precipitate (0.15 % of
    the pixels, one image of four) is in about balance / 3 of the crops, the other phases stay."""
    ds = CropDataset(_rare_set(), 64, 600, aug_strength=0.0, class_balance=balance, seed=1)
    assert low <= _shown(ds, 600, 3) <= high
    for c in (1, 2):
        assert _shown(ds, 600, c) >= 0.3  # the common phases are not starved


def test_class_aware_sampling_of_one_image_is_unchanged() -> None:
    """One image (the GUI's corrections): the set's classes are the image's, so crops repeat the
    draws they had before the set-level rule."""
    only = _rare_set()[3:]
    ds = CropDataset(only, 64, 50, aug_strength=0.5, class_balance=0.5, seed=4)
    assert _shown(CropDataset(only, 64, 50, aug_strength=0.0, class_balance=1.0, seed=4), 50, 3) > 0.25
    assert torch.equal(ds[7][0], CropDataset(only, 64, 50, aug_strength=0.5, class_balance=0.5, seed=4)[7][0])


@pytest.mark.parametrize("balanced", [False, True])
def test_balanced_cross_entropy_weighs_every_class_alike(balanced: bool) -> None:
    """98 % matrix, 2 % precipitate, every pixel equally wrong: the plain loss pushes the matrix
    49x harder in total; the balanced one pushes both alike."""
    labels = torch.ones(1, 10, 10, dtype=torch.long)
    labels[0, 0, :2] = 2
    logits = torch.zeros(1, 2, 10, 10, requires_grad=True)
    segmentation_loss(logits, labels, dice_weight=0.0, balanced=balanced).backward()
    push = logits.grad.abs().sum(dim=1)[0]
    ratio = float(push[labels[0] == 1].sum() / push[labels[0] == 2].sum())
    assert ratio == pytest.approx(1.0 if balanced else 49.0, rel=1e-4)


def test_the_mean_teacher_averages_the_weights_and_copies_the_statistics() -> None:
    student = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    teacher = MeanTeacher(student, decay=0.9)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(5.0)
    teacher.update(student)
    decay = 2 / 11  # warm-up: (1 + n) / (10 + n) for the first update, below 0.9
    for name, p in student.named_parameters():
        expected = decay * before[name] + (1 - decay) * p.detach()
        torch.testing.assert_close(teacher.model.state_dict()[name], expected)
    assert torch.equal(teacher.model[1].running_mean, torch.full((2,), 5.0))
    assert not any(p.requires_grad for p in teacher.model.parameters())
    for _ in range(200):
        teacher.update(student)
    assert teacher.updates == 201 and min(0.9, 202 / 211) == 0.9  # the decay is capped by the setting


@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.95])
def test_only_confident_teacher_answers_are_learned(threshold: float) -> None:
    confidence = torch.tensor([0.55, 0.7, 0.85, 0.99]).view(1, 1, 1, 4)
    probs = torch.cat([confidence, 1 - confidence], dim=1)  # the teacher says class 0 at every pixel
    where = torch.tensor([[[True, True, True, False]]])
    logits = torch.zeros(1, 2, 1, 4, requires_grad=True)
    loss, passed = pseudo_label_loss(logits, probs, where, threshold)
    loss.backward()
    learned = (logits.grad[0, 0, 0] != 0).tolist()
    expect = [bool(c >= threshold) and w for c, w in zip(confidence.flatten().tolist(), where.flatten().tolist(),
                                                        strict=True)]
    assert learned == expect
    assert passed == pytest.approx(sum(expect) / 3)
    assert float(loss) == pytest.approx(sum(expect) * np.log(2) / 3, rel=1e-5)  # averaged over every "where" pixel


def test_the_semi_loss_adds_the_teacher_term_on_unlabelled_pixels_only() -> None:
    torch.manual_seed(0)
    student = torch.nn.Conv2d(1, 3, 1)
    teacher = MeanTeacher(student)
    with torch.no_grad():
        teacher.model.bias.copy_(torch.tensor([8.0, 0.0, 0.0]))  # confident: class 1 everywhere
    x = torch.randn(2, 1, 8, 8)
    labels = torch.full((2, 8, 8), 2)
    plain = SemiLoss(segmentation_loss, teacher, weight=1.0, threshold=0.9)(student(x), (labels, x))
    assert float(plain) == pytest.approx(float(segmentation_loss(student(x), labels)))  # all labelled: no term
    labels[:, :4] = 0
    semi = SemiLoss(segmentation_loss, teacher, weight=1.0, threshold=0.9)
    total = semi(student(x), (labels, x))
    assert semi.passed == 1.0 and float(total) > float(segmentation_loss(student(x), labels))


def test_weak_views_follow_the_crop_geometry() -> None:
    """The teacher's view is the crop before intensity changes, flipped and rotated with it: the
    labels of a two-level image can be read off it exactly."""
    image = np.zeros((256, 256), np.uint8)
    image[:, 100:] = 200
    image[50:90, :] = 120
    labels = (1 + (image > 100) + (image == 120)).astype(np.uint8)
    ds = CropDataset([prepare_image(labelled_image(image, labels), 1, 128)], 128, 12, aug_strength=1.0,
                     seed=2, weak_view=True)
    for i in range(12):
        x, (y, weak) = ds[i]
        assert weak.shape == x.shape and y.shape == x.shape[1:]
        levels = torch.tensor(sorted(set(np.unique(image).tolist())), dtype=torch.float32)
        stats = ds.images[0].stats
        nearest = ((weak[0, ..., None] - (levels / 200 - stats[0]) / stats[1]).abs().argmin(-1))
        read = torch.tensor([1, 3, 2])[nearest]  # 0 -> 1, 120 -> 3, 200 -> 2
        assert float((read == y).float().mean()) > 0.97


def test_a_weak_view_with_soft_targets_is_refused() -> None:
    item = labelled_image(_image(), np.ones((256, 256), np.uint8))
    item.soft = np.full((1, 256, 256), 1.0, np.float32)
    with pytest.raises(ValueError, match="not with soft targets"):
        CropDataset([prepare_image(item, 1, 256)], 256, 2, weak_view=True)


def _semi_job(tmp_path: Path, **kw) -> tuple[dict, list[dict]]:
    labels = np.zeros((256, 256), np.uint8)
    labels[:60] = 1
    labels[200:] = 2  # partial labels: the middle is unlabelled
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, _image(300, 280, seed=5))
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), preset="csunet-tiny", class_names=["a", "b"], steps=3,
                      batch_size=2, eval_every=3, device="cpu", seed=0, val_fraction=0.0, unlabelled=[str(other)],
                      **kw)
    events: list[dict] = []
    done = run_job(cfg, events.append, train=[labelled_image(_image(), labels, "mem")])
    return done, events


def test_a_semi_supervised_job_uses_the_unlabelled_images_and_records_it(tmp_path: Path) -> None:
    done, events = _semi_job(tmp_path, semi_weight=1.0, semi_threshold=0.6, unlabelled_share=0.5)
    started = next(e for e in events if e["event"] == "started")
    assert started["unlabelled_images"] == 1 and done["steps"] == 3
    semi = read_model_info(tmp_path / "m.safetensors").provenance["semi_supervised"]
    assert semi == {"weight": 1.0, "threshold": 0.6, "ema_decay": 0.99, "unlabelled_images": ["other (unlabelled)"]}


def test_unlabelled_images_without_a_use_are_named_as_ignored(tmp_path: Path) -> None:
    _, events = _semi_job(tmp_path)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("unlabelled images are used only with" in w for w in warnings)
    assert read_model_info(tmp_path / "m.safetensors").provenance["semi_supervised"] is None


@pytest.mark.parametrize(("key", "value", "message"), [("semi_weight", -1, "semi_weight"),
                                                       ("semi_threshold", 0.3, "semi_threshold"),
                                                       ("ema_decay", 1.0, "ema_decay"),
                                                       ("budget_clock", "moon", "budget_clock")])
def test_bad_semi_supervised_settings_are_refused(tmp_path: Path, key: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(out=str(tmp_path / "m.safetensors"), preset="csunet-tiny", **{key: value})


def test_the_cpu_clock_counts_computation_not_waiting() -> None:
    wall, cpu = loop.Clock(), loop.Clock(cpu=True)
    wall.start()
    cpu.start()
    time.sleep(0.2)
    assert wall.elapsed >= 0.19 and cpu.elapsed < 0.1


def _labelled_set(root: Path, names: list[str], splits: dict | None = None) -> None:
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for n in names:
        tifffile.imwrite(root / "images" / f"{n}.tif", _image(64, 64))
        tifffile.imwrite(root / "masks" / f"{n}.tif", np.ones((64, 64), np.uint8))
    if splits is not None:
        (root / "splits.json").write_text(json.dumps(splits))


@pytest.mark.parametrize("with_splits", [True, False])
def test_protocols_never_give_a_test_image_to_training(tmp_path: Path, with_splits: bool) -> None:
    protocols = _bench("protocols")
    names = [f"s{i}" for i in range(10)]
    splits = {"train": [f"{n}.tif" for n in names[:7]], "test": [f"{n}.tif" for n in names[7:]]}
    _labelled_set(tmp_path / "tbm-grains", names, splits if with_splits else None)
    for seed in (0, 1):
        proto = protocols.protocols([tmp_path], seed)["tbm-4shot"]
        assert len(proto.train) == 4 and not set(proto.train) & set(proto.test)
        assert not set(proto.unlabelled) & (set(proto.test) | set(proto.train))
        if with_splits:
            assert proto.test == tuple(names[7:]) and len(proto.unlabelled) == 3
    assert protocols.protocols([tmp_path], 0)["tbm-4shot"].train != protocols.protocols([tmp_path], 1)["tbm-4shot"].train


def test_the_fewshot_summary_pairs_runs_by_protocol_and_seed() -> None:
    fewshot = _bench("fewshot")

    def run(protocol: str, recipe: str, seed: int, miou: float, rare: float) -> dict:
        return {"protocol": protocol, "recipe": recipe, "seed": seed, "miou": miou, "steps": 10,
                "iou_per_class": {"matrix": 0.9, "precipitate": rare},
                "train_class_share": {"matrix": 0.99, "precipitate": 0.01}}

    runs = [run("a", "today", 0, 0.50, 0.1), run("a", "new", 0, 0.60, 0.3), run("a", "today", 1, 0.55, 0.25),
            run("a", "new", 1, 0.58, 0.3), run("b", "today", 0, 0.70, 0.3), run("b", "new", 0, 0.70, 0.3)]
    summary = fewshot.summarise(runs)
    gain = summary["gain_over_today"]["new"]
    assert gain["runs"] == 3 and gain["mean_gain"] == pytest.approx((0.1 + 0.03 + 0.0) / 3)
    assert gain["gain_per_seed"] == {"0": pytest.approx(0.05), "1": pytest.approx(0.03)}
    assert [(b["recipe"], b["seed"]) for b in summary["classes_below"]] == [("today", 0)]
    assert summary["tta_gain"] == {}  # no run was scored with TTA
    runs[1]["miou_tta"], runs[3]["miou_tta"] = 0.62, 0.57  # paired on the same model: +0.02 and -0.01
    assert fewshot.summarise(runs)["tta_gain"] == {"new": {"mean_gain": pytest.approx(0.005), "runs": 2,
                                                           "min": pytest.approx(-0.01), "max": pytest.approx(0.02)}}
    name, recipe = fewshot.parse_variant("lr1e3:lr=0.001,balanced_ce=true")
    assert name == "lr1e3" and recipe["lr"] == 0.001 and recipe["balanced_ce"] is True
    assert recipe["crop"] == fewshot.TODAY["crop"]


@pytest.mark.parametrize(("provenance", "distilled"), [
    ({"head_reinitialised": {"reason": "new classes"}}, False),  # the GUI's new model: its output layer knows nothing
    ({"head_reinitialised": {"reason": "new classes"}, "steps": 200}, True),  # trained since: it knows something
    ({}, True),
])
def test_a_new_output_layer_is_not_distilled_to(tmp_path: Path, provenance: dict, distilled: bool) -> None:
    """Distillation keeps what the start knew; the random answers of a new output layer are not
    knowledge (the unlabelled pixels go to the mean teacher instead, when it is on)."""
    from fabricated import tiny_model_file

    from napari_csunet.models.modelfile import load_model_file, save_model_file

    model, info = load_model_file(tiny_model_file(tmp_path, 2))
    info.provenance = provenance
    start = save_model_file(tmp_path / "start.safetensors", model, info)
    labels = np.zeros((256, 256), np.uint8)
    labels[:40], labels[220:] = 1, 2
    cfg = TrainConfig(out=str(tmp_path / "ft.safetensors"), mode="finetune", model=str(start), steps=2, batch_size=1,
                      eval_every=2, device="cpu", val_fraction=0.0, class_names=list(info.class_names))
    events: list[dict] = []
    run_job(cfg, events.append, train=[labelled_image(_image(), labels, "mem")])
    provenance = read_model_info(tmp_path / "ft.safetensors").provenance
    assert (provenance["distillation"] is not None) == distilled
    # a new output layer is a new material's model: the whole network learns at the few-shot rate
    rates = (cfg.lr, cfg.encoder_lr_mult) if distilled else (cfg.new_head_lr, cfg.new_head_encoder_lr_mult)
    assert (provenance["hyperparameters"]["lr"], provenance["hyperparameters"]["encoder_lr_mult"]) == rates
    started = next(e for e in events if e["event"] == "started")
    assert (started["lr"], started["encoder_lr_mult"]) == rates


def test_csunet_finetune_from_micro_tiny_learns_from_an_unlabelled_folder(tmp_path: Path) -> None:
    """``csunet finetune --model micro-tiny --data DIR --unlabelled DIR2``: a new material from the
    shipped pretrained model, with its unlabelled images put to work by the mean teacher."""
    from fabricated import write_nasa_folder

    from napari_csunet.cli.main import main

    data = write_nasa_folder(tmp_path / "set", classes=3, splits={"train": 2})
    unlabelled = tmp_path / "more"
    unlabelled.mkdir()
    for i in range(2):
        tifffile.imwrite(unlabelled / f"u{i}.tif", _image(300, 300, seed=10 + i))
    out = tmp_path / "new.safetensors"
    code = main(["finetune", "--model", "micro-tiny", "--data", str(data), "--unlabelled", str(unlabelled),
                 "--semi-weight", "1", "--balanced-ce", "--out", str(out), "--steps", "2", "--batch-size", "1",
                 "--device", "cpu"])
    assert code == 0
    provenance = read_model_info(out).provenance
    assert provenance["semi_supervised"]["unlabelled_images"] == ["u0 (unlabelled)", "u1 (unlabelled)"]
    assert provenance["distillation"] is None and provenance["head_reinitialised"]["reason"] == "pretrained"
    # a new material's few images all train (new_head_val_fraction 0), at the few-shot rates
    assert provenance["val_images"] == [] and len(provenance["train_images"]) == 2
    assert provenance["hyperparameters"]["lr"] == 1e-3 and provenance["hyperparameters"]["encoder_lr_mult"] == 1.0
