"""One engine: training validation predicts like ``csunet evaluate``; one device, AMP and OOM rule."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from fabricated import write_nasa_folder

from csunet_train import dist as distmod
from csunet_train.config import TrainConfig
from csunet_train.job import _error_kind, run_job
from napari_csunet.cli import main as cli
from napari_csunet.cli import segment as segment_cli
from napari_csunet.engine.device import amp_dtype, is_out_of_memory, rank_device
from napari_csunet.engine.predictor import InferenceMemoryError


def test_validation_numbers_are_what_csunet_evaluate_gives_the_saved_model(tmp_path: Path, capsys) -> None:
    """The 5-class folder (no dataset.json; 520x250 images: padded, two blended tiles) trains, and
    the best validation mIoU of the run equals ``csunet evaluate --split val`` of the saved model."""
    root = write_nasa_folder(tmp_path / "five", classes=5, splits={"train": 1, "val": 1}, shape=(520, 250))
    out = tmp_path / "m.safetensors"
    events: list[dict] = []
    cfg = TrainConfig(out=str(out), preset="csunet-tiny", data_dir=str(root), steps=2, eval_every=2, crop=256,
                      batch_size=1, lr=2e-3, device="cpu", seed=0)
    done = run_job(cfg, events.append)
    started = next(e for e in events if e["event"] == "started")
    assert started["classes"] == [f"class {i}" for i in range(1, 6)] and started["val_images"] == 1
    capsys.readouterr()
    assert cli.main(["evaluate", "--data", str(root), "--split", "val", "--model", str(out), "--device", "cpu",
                     "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["images"] == 1 and list(evaluated["iou_per_class"]) == list(done["best_metrics"]["iou_per_class"])
    assert abs(evaluated["miou"] - done["best_metrics"]["miou"]) <= 0.002
    assert abs(evaluated["pixel_accuracy"] - done["best_metrics"]["pixel_accuracy"]) <= 0.002


@pytest.mark.parametrize(("world", "local_rank", "gpu"), [("1", "0", 0), ("4", "3", 1)])
def test_training_and_csunet_segment_give_each_torchrun_rank_its_own_gpu(monkeypatch, world: str, local_rank: str,
                                                                         gpu: int) -> None:
    """The rule, with two fake GPUs, as training (``dist.setup``) and ``csunet segment`` apply it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distmod.tdist, "is_initialized", lambda: True)  # no process group is made here
    for key, value in (("WORLD_SIZE", world), ("RANK", local_rank), ("LOCAL_RANK", local_rank)):
        monkeypatch.setenv(key, value)
    assert rank_device("auto") == rank_device("cuda") == torch.device("cuda", gpu) and rank_device("cpu").type == "cpu"
    assert distmod.setup("auto").device == torch.device("cuda", gpu)

    class Loaded(Exception):
        pass

    def segmenter(args, device=None):
        raise Loaded(device)

    monkeypatch.setattr(segment_cli, "_segmenter", segmenter)
    with pytest.raises(Loaded) as loaded:
        segment_cli._segment_into(argparse.Namespace(device="auto"), int(world), int(local_rank), [], [])
    # a plain process lets the model's loading resolve "auto" (after the file's header is checked)
    assert loaded.value.args[0] == (torch.device("cuda", gpu) if world != "1" else None)
    assert amp_dtype(torch.device("cpu"), enabled=False) is None


@pytest.mark.parametrize(("avx512_bf16", "amx", "enabled", "expected"), [
    (True, False, True, torch.bfloat16),   # e.g. this project's EPYC: bf16 matmuls at 2.5x float32
    (False, True, True, torch.bfloat16),   # Sapphire Rapids and later
    (False, False, True, None),            # bf16 would be emulated: float32
    (True, True, False, None),             # --no-amp / amp=False: float32
])
def test_cpu_mixed_precision_only_where_the_cpu_has_bf16(monkeypatch, avx512_bf16, amx, enabled, expected) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert amp_dtype(torch.device("cpu"), enabled=enabled) == expected
    assert amp_dtype(torch.device("mps"), enabled=enabled) is None


@pytest.mark.parametrize(("exc", "oom"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
    (InferenceMemoryError("out of memory on cuda with 512x512 tiles"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_one_out_of_memory_rule_for_inference_and_training(exc: BaseException, oom: bool) -> None:
    assert is_out_of_memory(exc) is oom
    assert (_error_kind(exc)[0] == "oom") is oom


@pytest.mark.parametrize("cnn", [None, "imagenet"])
def test_one_preset_builder_keeps_the_weight_report_in_the_model(monkeypatch, cnn: str | None) -> None:
    """The GUI and training build presets alike; what was applied travels into the model file."""
    import napari_csunet.weights.apply as apply_mod

    report = {"cnn": cnn, "cnn_id": "resnet10t.imagenet", "cnn_sha256": "ab12"}
    monkeypatch.setattr(apply_mod, "apply_sources", lambda model, cnn, swin, *, allow_download: report)
    model, info = apply_mod.build_preset_model("csunet-tiny", ["pore", "grain"], in_chans=3, cnn=cnn)
    assert info.sources == (report if cnn else {}) and info.preset == "csunet-tiny"
    assert model.config == info.config and info.config.num_classes == 2 and info.config.in_chans == 3
