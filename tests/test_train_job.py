"""The job protocol as the GUI sees it: a child process, JSON lines on stdout, stop, kill -9, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_csunet.models.modelfile import load_model_file, read_model_info

TIMEOUT = 600  # generous: the CI/CPU may be shared


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _write_job(tmp_path: Path, data: Path, **kw) -> Path:
    root = data / "super1_test"
    job = {"mode": "train", "preset": "csunet-tiny", "data_dir": str(root),
           "names": ["spot2_0d_0", "spot2_0d_4", "spot2_180d_3"], "steps": 3, "crop": 256, "batch_size": 1,
           "eval_every": 3, "device": "cpu", "seed": 0, "out": str(tmp_path / "model.safetensors"),
           "stop_file": None, "num_workers": 0} | kw
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


def _parse(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every stdout line is one JSON object


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr.log", "wb"), text=True,
                            env=_env(), cwd=tmp_path)


@pytest.mark.parametrize("how", ["sigint", "sigterm", "stop_file"])
def test_stop_finishes_the_step_saves_the_best_and_exits_0(tmp_path: Path, data_dir: Path, how: str) -> None:
    stop_file = tmp_path / "STOP"
    job = _write_job(tmp_path, data_dir, steps=10_000, eval_every=10_000, stop_file=str(stop_file))
    proc = _start([sys.executable, "-m", "csunet_train.job", str(job)], tmp_path)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "step":
            break
    assert events and events[-1]["event"] == "step", (tmp_path / "stderr.log").read_text()
    if how == "stop_file":
        stop_file.touch()
    else:
        proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
    rest, _ = proc.communicate(timeout=TIMEOUT)
    events += _parse(rest)
    assert proc.returncode == 0, (tmp_path / "stderr.log").read_text()
    done = events[-1]
    assert done["event"] == "done" and done["stopped"] is True and done["steps"] < 10_000
    assert [e for e in events if e["event"] == "checkpoint"][-1]["step"] == done["steps"]
    model, info = load_model_file(done["path"])
    assert info.provenance["steps"] == done["best_step"] == done["steps"]


def test_a_bad_job_prints_one_error_event_and_exits_2(tmp_path: Path, data_dir: Path) -> None:
    job = _write_job(tmp_path, data_dir, data_dir=str(tmp_path / "nowhere"))
    out = subprocess.run([sys.executable, "-m", "csunet_train.job", str(job)], capture_output=True, text=True,
                         env=_env(), timeout=TIMEOUT)
    assert out.returncode == 2
    (event,) = _parse(out.stdout)
    assert event["event"] == "error" and event["kind"] == "data" and "nowhere" in event["message"]
    out = subprocess.run([sys.executable, "-m", "csunet_train.job", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert out.returncode == 2 and "job file not found" in _parse(out.stdout)[0]["message"]


_HANGING_WRITER = """
import pathlib, sys, time
from napari_csunet.models import build_model
from napari_csunet.models.modelfile import ModelInfo, save_model_file

def slow_write(self, data):
    with open(self, "wb") as fh:  # a write caught half-way
        fh.write(data[: len(data) // 2])
        fh.flush()
        print("writing", flush=True)
        time.sleep(600)
pathlib.Path.write_bytes = slow_write
model = build_model("csunet-tiny")
save_model_file(sys.argv[1], model, ModelInfo(model.config, ["a", "b", "c"], name="second"))
"""


def test_kill_9_in_the_middle_of_a_write_leaves_the_previous_model_file_intact(tmp_path: Path) -> None:
    from napari_csunet.models import build_model
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    path = tmp_path / "model.safetensors"
    model = build_model("csunet-tiny")
    save_model_file(path, model, ModelInfo(model.config, ["a", "b", "c"], name="first"))
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert read_model_info(path).name == "first"
    load_model_file(path)


def test_torchrun_two_gloo_processes_on_cpu(tmp_path: Path, data_dir: Path) -> None:
    job = _write_job(tmp_path, data_dir, steps=2, eval_every=2)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "csunet_train.job", str(job)], capture_output=True, text=True, env=_env(),
                         timeout=TIMEOUT, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    events = _parse(out.stdout)
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 1 and kinds.count("done") == 1, kinds  # only rank 0 speaks
    assert events[0]["world_size"] == 2
    assert events[-1]["steps"] == 2 and time.perf_counter() - t0 < TIMEOUT
    _, info = load_model_file(tmp_path / "model.safetensors")
    assert info.provenance["world_size"] == 2
