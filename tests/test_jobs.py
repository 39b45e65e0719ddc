"""The training child: events stream to a callback; stop, crash and kill never hang the parent.

A stand-in child module speaks the job protocol so these tests need neither torch nor a model;
the real backend runs in tests/test_gui_loop.py.
"""

from __future__ import annotations

import sys
import textwrap
import threading

import pytest

from napari_csunet.loop.training_job import JobError, TrainingJob

FAKE = textwrap.dedent('''
    import json, os, sys, time
    spec = json.load(open(sys.argv[1]))
    def say(**kw):
        print(json.dumps(kw), flush=True)
    say(event="started", steps=spec["steps"], device="cpu", train_images=1, val_images=1)
    print("a stray line that is not JSON", flush=True)
    if spec.get("crash"):
        print("Traceback: boom in the data loader", file=sys.stderr, flush=True)
        os._exit(3)
    try:
        for step in range(1, spec["steps"] + 1):
            if os.path.exists(spec["stop_file"]):
                break
            say(event="step", step=step, steps=spec["steps"], loss=1.0 / step)
            time.sleep(spec.get("sleep", 0.0))
    except KeyboardInterrupt:
        pass
    if spec.get("ignore_stop"):
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(60)
    say(event="done", path=spec["out"], steps=step, stopped=os.path.exists(spec["stop_file"]))
''')


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    (tmp_path / "fake_job.py").write_text(FAKE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "fake_job"


def _job(tmp_path, module, **spec):
    events, finished = [], threading.Event()

    def on_event(ev):
        events.append(ev)
        if ev["event"] == "exit":
            finished.set()

    job = TrainingJob({"steps": 5, "out": str(tmp_path / "m.safetensors")} | spec, on_event,
                      workdir=tmp_path / "job", module=module)
    return job, events, finished


def test_events_arrive_in_order_with_a_final_exit(tmp_path, fake_module):
    job, events, finished = _job(tmp_path, fake_module)
    job.start()
    assert finished.wait(30)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds.count("step") == 5 and kinds[-2:] == ["done", "exit"]
    assert {"event": "log", "message": "a stray line that is not JSON"} in events
    assert events[-1]["returncode"] == 0 and (tmp_path / "job" / "job.json").exists()
    with pytest.raises(JobError, match="already started"):
        job.start()


def test_the_kept_heap_is_given_back_before_the_child_starts(tmp_path, fake_module, monkeypatch):
    from napari_csunet.loop import training_job

    released = []
    monkeypatch.setattr(training_job, "release_heap", lambda: released.append(True))
    job, _, finished = _job(tmp_path, fake_module)
    job.start()
    assert released == [True] and finished.wait(30)


def test_a_crashing_child_becomes_an_error_event_with_its_stderr(tmp_path, fake_module):
    job, events, finished = _job(tmp_path, fake_module, crash=True)
    job.start()
    assert finished.wait(30)
    error = next(e for e in events if e["event"] == "error")
    assert error["kind"] == "crash" and "code 3" in error["message"] and "boom in the data loader" in error["message"]


@pytest.mark.parametrize("ignore_stop", [False, True])
def test_stop_ends_the_child_politely_or_by_force(tmp_path, fake_module, ignore_stop):
    job, events, finished = _job(tmp_path, fake_module, steps=10_000, sleep=0.01, ignore_stop=ignore_stop)
    job.start()
    while not any(e["event"] == "step" for e in events):
        assert job.running or events, "child died early"
        threading.Event().wait(0.02)
    job.stop(grace_s=0.5 if ignore_stop else 20, kill_after_s=0.5)
    assert finished.wait(30)
    assert events[-1]["stopped"] is True
    if ignore_stop:  # escalated past SIGINT to a kill: reported as a crash, parent fine
        assert events[-2]["event"] == "error" and "killed by signal" in events[-2]["message"]
    else:
        assert events[-2]["event"] == "done" and events[-2]["stopped"] is True


def test_missing_backend_module_is_reported(tmp_path):
    job, events, finished = _job(tmp_path, "no_such_backend_module_xyz")
    job.start()
    assert finished.wait(30)
    assert "No module named" in next(e for e in events if e["event"] == "error")["message"]
    assert sys.executable == job.python
