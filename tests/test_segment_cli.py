"""`csunet segment` and `csunet evaluate` end to end on real micrographs, bad files included."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fabricated import tiny_model_file

from napari_csunet.cli.main import main
from napari_csunet.cli.segment import expand_inputs, output_stems
from napari_csunet.engine.predictor import Prediction
from napari_csunet.images.datasets import SUPER_CLASSES, find_samples
from napari_csunet.measure.evaluation import evaluate_samples
from napari_csunet.models.modelfile import ModelInfo, numbered_class_names


@pytest.fixture()
def batch(tmp_path, data_dir) -> Path:
    """Two crops of real Super1 micrographs (small: a 2-core CPU runs this) and broken files."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("spot2_0d_0.tif", "spot2_180d_3.tif"):
        tifffile.imwrite(folder / name, tifffile.imread(data_dir / "super1_test" / "images" / name)[:H, :W])
    real = (data_dir / "super1_test" / "images" / "spot2_0d_0.tif").read_bytes()
    (folder / "empty.tif").write_bytes(b"")
    (folder / "truncated.tif").write_bytes(real[:300])
    tifffile.imwrite(folder / "nan.tif", np.full((64, 64), np.nan, np.float32))
    tifffile.imwrite(folder / "five_channels.tif", np.zeros((64, 64, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(folder / "complex.tif", np.zeros((64, 64), np.complex64))
    return folder


H, W = 256, 300
BAD = ("empty.tif", "truncated.tif", "nan.tif", "five_channels.tif", "complex.tif")


def test_segment_folder_with_bad_files(batch, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(batch), "--model", str(model_file), "--out", str(out), "--tile", "256", "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    report = json.loads(captured.out)
    assert report["segmented"] == 2 and report["failed"] == len(BAD)
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(BAD)
    for name, hint in zip(BAD, ("empty", "cannot be read", "NaN", "5 channels", "unsupported pixel type"), strict=True):
        assert any(name in line and hint in line for line in errors), (name, errors)
    for stem in ("spot2_0d_0", "spot2_180d_3"):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.shape == (H, W) and labels.dtype == np.uint8 and labels.min() >= 1 and labels.max() <= 3
        import skimage.io

        assert skimage.io.imread(out / f"{stem}_overlay.png").shape == (H, W, 3)
        assert not (out / f"{stem}_probs.tif").exists()
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["image"], r["class"]) for r in rows] == [(f"spot2_{s}.tif", c) for s in ("0d_0", "180d_3") for c in SUPER_CLASSES.names]
    for image in ("spot2_0d_0.tif", "spot2_180d_3.tif"):
        assert sum(float(r["area_fraction"]) for r in rows if r["image"] == image) == pytest.approx(1.0)
    assert not list(out.glob(".tmp-*"))


def test_segment_probs_glob_and_text_output(batch, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    stack = np.stack([tifffile.imread(batch / "spot2_0d_0.tif")[:64, :80]] * 3).astype(np.uint16) * 200
    tifffile.imwrite(batch / "spot2_0d_stack.tif", stack)
    rc = main(["segment", str(batch / "spot2_0d_*.tif"), str(batch / "missing.tif"), "--model", str(model_file),
               "--out", str(out), "--tile", "512", "--overlap", "0.5", "--probs", "--no-overlay", "--batch", "1"])
    captured = capsys.readouterr()
    assert rc == 1  # the missing file counts as a failure
    assert "missing.tif: no such file or folder" in captured.err
    assert "segmented 2 image(s)" in captured.out
    stack_probs = tifffile.imread(out / "spot2_0d_stack_probs.tif")
    assert stack_probs.shape == (3, 3, 64, 80)  # Z, C, Y, X
    stack_labels = tifffile.imread(out / "spot2_0d_stack_labels.tif")
    assert stack_labels.shape == (3, 64, 80) and (stack_labels[0] == stack_labels[2]).all()
    probs = tifffile.imread(out / "spot2_0d_0_probs.tif")
    assert probs.shape == (3, H, W) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=3e-3)
    labels = tifffile.imread(out / "spot2_0d_0_labels.tif")
    top2 = np.sort(probs.astype(np.float32), axis=0)[-2:]
    clear = top2[1] - top2[0] > 2e-3  # float16 probabilities may tie where the labels did not
    np.testing.assert_array_equal(labels[clear], probs.argmax(0)[clear] + 1)
    assert not (out / "spot2_0d_0_overlay.png").exists()


def test_unknown_model_is_one_clear_line(batch, tmp_path, capsys):
    rc = main(["segment", str(batch), "--model", "no-such-model", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_expand_inputs_and_unique_stems(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.tif").write_bytes(b"1")
    (tmp_path / "a" / "x_labels.tif").write_bytes(b"1")  # our own outputs are not inputs
    (tmp_path / "a" / "notes.txt").write_text("")
    files, errors = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*" / "x.tif"), str(tmp_path / "empty*")])
    assert files == [tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"]
    assert errors == [f"{tmp_path / 'empty*'}: no images match this pattern"]
    assert output_stems(files) == ["x", "x-2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_segment_split_over_two_ranks(batch, model_file, tmp_path):
    """What torchrun does: two processes share the files, rank 0 writes the one summary."""
    out = tmp_path / "out"
    base = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "napari_csunet.cli.main", "segment", str(batch / "spot2_*.tif"), str(batch / "nan.tif"),
           "--model", str(model_file), "--out", str(out), "--tile", "256", "--json", "--no-overlay"]
    procs = [subprocess.Popen(cmd, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    report = json.loads(outs[0][0])
    assert outs[1][0] == ""  # only rank 0 reports
    assert report["world_size"] == 2 and report["segmented"] == 2 and report["failed"] == 1
    assert [Path(r["input"]).name for r in report["images"]] == ["spot2_0d_0.tif", "spot2_180d_3.tif", "nan.tif"]
    assert "nan.tif" in outs[0][1] + outs[1][1]
    assert {p.returncode for p in procs} == {0, 1}  # the rank that met the NaN file says so
    with open(out / "summary.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6


# -- evaluate ----------------------------------------------------------------------------------------

class Oracle:
    """Predicts each image's own mask: every metric must be exactly 1."""

    def __init__(self, samples) -> None:
        config = get_config()  # NASA's EBC2 label maps come unnamed: their classes are counted
        self.info = ModelInfo(config, list(samples[0].spec.names) or numbered_class_names(config.num_classes))
        self.masks = {str(s.image): s.load()[1] for s in samples}

    def predict(self, image, name: str = "image", **kw) -> Prediction:
        self.tta_calls = [*getattr(self, "tta_calls", []), kw.get("tta", False)]
        target = self.masks[name]
        return Prediction(np.where(target > 0, target, 1).astype(np.uint8))


def get_config():
    from napari_csunet.models import get_preset

    return get_preset("csunet-tiny").config


@pytest.mark.parametrize("root,split,n,tta", [("super1_test", "test", 4, False), ("nasa/Super1", "val", 1, True),
                                              ("nasa/EBC2", "val", 1, False)])
def test_evaluate_samples_with_an_oracle(data_dir, root, split, n, tta):
    samples = find_samples(data_dir / root, split)
    oracle = Oracle(samples)
    result = evaluate_samples(oracle, samples, tta=tta)
    assert oracle.tta_calls == [tta] * n and result["tta"] is tta  # every image predicted as asked
    assert len(result["per_image"]) == n and not result["failed"]
    assert result["miou"] == result["iou_paper"] == result["pixel_accuracy"] == 1.0
    cm = np.array(result["confusion_matrix"])
    assert cm.sum() == sum(r["pixels"] for r in result["per_image"]) and (cm == np.diag(np.diag(cm))).all()
    assert set(result["note"]) >= {"miou", "iou_paper", "pixel_accuracy", "iou_per_class"}


@pytest.mark.parametrize("tta", [False, True])
def test_evaluate_cli_json(model_file, data_dir, capsys, tta):
    rc = main(["evaluate", "--model", str(model_file), "--data", str(data_dir / "nasa" / "Super1"), "--split", "val",
               "--json", "--tile", "512", *(["--tta"] if tta else [])])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["tta"] is tta  # --tta was once parsed and then ignored
    assert result["split"] == "val" and result["model"] == "tiny3" and len(result["per_image"]) == 1
    assert set(result["iou_per_class"]) == set(SUPER_CLASSES.names)  # the model's class names
    acc = result["pixel_accuracy"]
    assert result["iou_paper"] == pytest.approx(acc / (2 - acc))
    assert "accuracy / (2 - accuracy)" in result["note"]["iou_paper"]


def test_evaluate_cli_text_with_a_bad_mask(model_file, data_dir, tmp_path, capsys):
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for name in ("spot2_0d_0.tif", "spot2_0d_4.tif"):
        shutil.copy(data_dir / "super1_test" / "images" / name, root / "images" / name)
        shutil.copy(data_dir / "super1_test" / "masks" / name, root / "masks" / name)
    bad = tifffile.imread(root / "masks" / "spot2_0d_4.tif")
    bad[0, 0] = 5
    tifffile.imwrite(root / "masks" / "spot2_0d_4.tif", bad)
    rc = main(["evaluate", "--model", str(model_file), "--data", str(root)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "spot2_0d_4.tif: label 5 is above the model's 3 classes" in captured.err  # no dataset.json: unnamed
    assert "spot2_0d_0.tif" in captured.out and "overall" in captured.out and "paper IoU" in captured.out


def test_evaluate_refuses_a_model_with_other_classes(data_dir, tmp_path, capsys):
    two = tiny_model_file(tmp_path, num_classes=2)
    rc = main(["evaluate", "--model", str(two), "--data", str(data_dir / "super1_test")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "masks" in err and "has 3 classes" in err and "the model has 2" in err
