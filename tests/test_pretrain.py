"""Self-supervised pretraining (`csunet pretrain`) and fine-tuning that starts from its model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from csunet_train.data import DataError, labelled_image
from csunet_train.pretrain import mask_batch, mim_loss, patch_mask
from csunet_train.unlabelled import find_images
from napari_csunet.cli.main import main as csunet
from napari_csunet.models.modelfile import read_model_info

FAST = ["--steps", "2", "--batch-size", "2", "--eval-every", "1", "--val-images", "0", "--device", "cpu"]


@pytest.mark.parametrize("ratio", [0.25, 0.6, 0.9])
@pytest.mark.parametrize("patch", [32, 64])
def test_patch_mask_blanks_exactly_the_ratio_in_whole_squares(ratio: float, patch: int) -> None:
    gen = torch.Generator().manual_seed(0)
    mask = patch_mask(3, 256, 256, patch, ratio, torch.device("cpu"), gen)
    n = (256 // patch) ** 2
    assert mask.shape == (3, 1, 256, 256)
    squares = mask[:, 0, ::patch, ::patch]
    assert squares.sum(dim=(1, 2)).tolist() == [round(ratio * n)] * 3
    assert torch.equal(mask, squares.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None])


def test_the_loss_counts_only_blanked_real_pixels() -> None:
    x = torch.randn(2, 1, 256, 256)
    valid = torch.ones(2, 256, 256, dtype=torch.bool)
    valid[1, :, 128:] = False  # padding of a small image
    x_in, target = mask_batch(x, valid, 32, 0.5, torch.Generator().manual_seed(1))
    blanked = x_in.eq(0) & x.ne(0)
    assert blanked.any() and torch.equal(x_in[~blanked], x[~blanked])
    assert float(mim_loss(x.clone(), target)) == 0.0
    changed = x.clone()
    changed[target[1] == 0] += 5.0  # visible pixels and padding do not count
    assert float(mim_loss(changed, target)) == 0.0
    changed[target[1] > 0] += 1.0
    assert float(mim_loss(changed, target)) == pytest.approx(1.0)


@pytest.mark.parametrize(("exclude", "expected"), [
    ((), {"a", "b", "c"}),
    (("b",), {"a", "c"}),
    (("sub/*",), {"a", "b"}),
    (("*.tif",), {"b", "c"}),
])
def test_find_images_skips_label_folders_and_excluded_files(tmp_path: Path, exclude, expected) -> None:
    for rel in ("a.tif", "b.png", "sub/c.png", "masks/a.png", "train_annot/b.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    kept, dropped = find_images([tmp_path], exclude)
    assert {p.stem for p in kept} == expected
    assert len(kept) + len(dropped) == 3


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """16-bit TIFF, colour PNG, a tiny 8-bit PNG and a corrupt file, all of different sizes."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "micrographs"
    folder.mkdir()
    tifffile.imwrite(folder / "deep.tif", rng.integers(0, 65535, (300, 280), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 255, (260, 300, 3), dtype=np.uint8)).save(folder / "colour.png")
    Image.fromarray(rng.integers(0, 255, (100, 120), dtype=np.uint8)).save(folder / "small.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_pretrain_on_mixed_files_saves_a_model_and_resumes(mixed_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pre.safetensors"
    assert csunet(["pretrain", str(mixed_folder), "--out", str(out), *FAST, "--json-events"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(e["event"] == "warning" and "broken.png" in e["message"] for e in events)
    started = next(e for e in events if e["event"] == "started")
    assert started["train_images"] == 3
    info = read_model_info(out)
    assert info.is_pretraining_only and info.provenance["steps"] == 2
    assert sorted(info.provenance["corpus"]["files"]) == ["broken.png", "colour.png", "deep.tif", "small.png"]
    assert csunet(["pretrain", str(mixed_folder), "--out", str(out), *FAST[2:], "--steps", "3", "--resume"]) == 0
    resumed = read_model_info(out).provenance
    assert (resumed["steps"], resumed["run_steps"]) == (3, 1)
    from napari_csunet.engine.predictor import Segmenter

    with pytest.raises(ValueError, match="fine-tune it on a few labelled images|Fine-tune it"):
        Segmenter.from_file(out, device="cpu")


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_pretrain_refuses_a_folder_without_readable_images(tmp_path: Path, capsys, content) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    if content is not None:
        (folder / "fake.tif").write_bytes(content)
    code = csunet(["pretrain", str(folder), "--out", str(tmp_path / "x.safetensors"), *FAST, "--json-events"])
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and error["event"] == "error" and error["kind"] == "data"
    assert "no image files" in error["message"] or "no readable image" in error["message"]
    assert not (tmp_path / "x.safetensors").exists()


def test_pretrain_job_stops_on_sigint_with_a_loadable_model(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "stopped.safetensors"
    job = tmp_path / "JOB.json"
    job.write_text(json.dumps({"mode": "pretrain", "out": str(out), "images": [str(mixed_folder)], "steps": 10_000,
                               "batch_size": 1, "eval_every": 10_000, "val_images": 0, "device": "cpu"}))
    proc = subprocess.Popen([sys.executable, "-m", "csunet_train.job", str(job)], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "step":
            proc.send_signal(signal.SIGINT)
            break
    events += [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=120) == 0
    done = events[-1]
    assert done["event"] == "done" and done["stopped"] and done["reason"] == "stop"
    assert read_model_info(out).provenance["steps"] == done["steps"] < 10_000


def test_finetuning_from_a_pretrained_model_gets_a_new_class_head(mixed_folder: Path, tmp_path: Path) -> None:
    from csunet_train.config import TrainConfig
    from csunet_train.job import run_job
    from napari_csunet.models.modelfile import load_model_file

    pre = tmp_path / "pre.safetensors"
    assert csunet(["pretrain", str(mixed_folder), "--out", str(pre), *FAST]) == 0
    image = np.asarray(Image.open(mixed_folder / "colour.png").convert("L"))
    labels = np.ones(image.shape, np.uint8) + (image > 128) + (image > 200)
    item = labelled_image(image, labels, "colour")
    events: list[dict] = []
    cfg = TrainConfig(out=str(tmp_path / "ft.safetensors"), mode="finetune", model=str(pre), steps=1, batch_size=1,
                      class_names=["a", "b", "c"], eval_every=1, device="cpu")
    run_job(cfg, events.append, train=[item], val=[item])
    assert any("re-initialised" in e.get("message", "") for e in events)
    model, info = load_model_file(cfg.out)
    assert info.class_names == ["a", "b", "c"] and model.config.num_classes == 3
    assert not info.is_pretraining_only
    assert info.provenance["head_reinitialised"]["reason"] == "pretrained"
    assert info.provenance["previous"]["task"] == "pretraining"


@pytest.mark.parametrize(("start_classes", "data_classes", "reinitialised"), [
    (["grain", "boundary"], ["a", "b", "c"], True),  # another count
    (["p", "q", "r"], ["a", "b", "c"], True),  # as many, named otherwise: another material's phases
    (["p", "q", "r"], ["class 1", "class 2", "class 3"], False),  # unnamed: label i is the model's class i
    (["class 1", "class 2", "class 3"], ["a", "b", "c"], False),  # a model of unnamed classes gets names
    (["a", "b", "c"], ["a", "b", "c"], False),  # the model's own classes
    (["A", "b ", "c"], ["a", "b", "c"], False),  # the same names, written otherwise
])
def test_finetuning_a_model_of_other_classes(mixed_folder: Path, tmp_path: Path, start_classes: list[str],
                                             data_classes: list[str], reinitialised: bool) -> None:
    from csunet_train.config import TrainConfig
    from csunet_train.job import run_job
    from napari_csunet.models import build_model
    from napari_csunet.models.modelfile import ModelInfo, load_model_file, save_model_file

    net = build_model("csunet-tiny", num_classes=len(start_classes))
    start = save_model_file(tmp_path / "start.safetensors", net, ModelInfo(net.config, start_classes))
    image = np.asarray(Image.open(mixed_folder / "colour.png").convert("L"))
    item = labelled_image(image, np.ones(image.shape, np.uint8) + (image > 128) + (image > 200), "colour")
    events: list[dict] = []
    cfg = TrainConfig(out=str(tmp_path / "ft.safetensors"), mode="finetune", model=str(start), steps=1,
                      batch_size=1, class_names=data_classes, eval_every=1, device="cpu")
    run_job(cfg, events.append, train=[item], val=[item])
    messages = " ".join(e.get("message", "") for e in events if e["event"] == "warning")
    model, info = load_model_file(cfg.out)
    assert info.class_names == data_classes and model.config.num_classes == 3
    assert ("re-initialised" in messages) is reinitialised
    assert ("are trained as" in messages) is (not reinitialised and start_classes != data_classes)
    assert (info.provenance["head_reinitialised"] is not None) is reinitialised
    started = next(e for e in events if e["event"] == "started")
    assert (started["lr"] == cfg.new_head_lr) is reinitialised  # a new layer learns at the few-shot rates


def test_shipped_micro_tiny_is_a_small_pretrained_model() -> None:
    from napari_csunet.models.catalog import list_model_files

    entry = next(e for e in list_model_files() if e["name"] == "micro-tiny")
    assert entry["kind"] == "pretrained"
    info = read_model_info(entry["path"])
    assert info.preset == "csunet-tiny" and info.config.swin.depths == (2, 2, 2, 2)
    assert Path(entry["path"]).stat().st_size <= 16e6
    corpus = info.provenance["corpus"]
    assert corpus["images"] > 250
    assert not any(name.startswith("seg_") for name in corpus["files"])  # the nanocomposite benchmark's images


def test_pretrain_config_errors_name_the_key() -> None:
    from csunet_train.config import ConfigError
    from csunet_train.pretrain_config import PretrainConfig

    with pytest.raises(ConfigError, match="mask_patch"):
        PretrainConfig(out="x", images=["d"], mask_patch=48)
    with pytest.raises(ConfigError, match="images"):
        PretrainConfig(out="x")
    with pytest.raises(DataError):
        find_images([Path("/nonexistent/folder")])


def test_pretrain_calls_an_eval_best_only_when_the_reconstruction_improves(mixed_folder: Path, tmp_path: Path,
                                                                            capsys, monkeypatch) -> None:
    from csunet_train import pretrain

    errors = iter([0.5, 0.4, 0.45, 0.3])  # step 0, then after steps 1, 2, 3
    monkeypatch.setattr(pretrain.ReconstructionProbe, "__call__",
                        lambda self, model, dtype: {"recon_l1": next(errors), "mean_l1": 1.0, "recon_gain": 0.0})
    out = tmp_path / "pre.safetensors"
    args = ["pretrain", str(mixed_folder), "--out", str(out), "--steps", "3", "--batch-size", "2", "--eval-every", "1",
            "--val-images", "1", "--device", "cpu", "--json-events"]
    assert csunet(args) == 0
    evals = [e for e in map(json.loads, capsys.readouterr().out.splitlines()) if e["event"] == "eval"]
    assert [e["best"] for e in evals] == [False, True, False, True]
    assert all(e["saved"] for e in evals[1:])  # the file is the latest checkpoint either way
