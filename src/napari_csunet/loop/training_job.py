"""Run the training backend in a child process and stream its JSON-lines events.

Training never runs in napari's interpreter: a crash, an out-of-memory or a kill in the child
leaves napari and the annotation set untouched. The child is ``python -m csunet_train.job
JOB.json``; it prints one JSON object per line. Events reach ``on_event`` on a reader thread
(GUIs forward them to their main thread). Stop asks politely (stop file), then SIGINT, then kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..atomic import atomic_write_text
from ..engine.allocator import release_heap

__all__ = ["TrainingJob", "JobSpec", "JobError", "jobs_dir", "TERMINAL_EVENTS"]

#: events after which the child has nothing more to say
TERMINAL_EVENTS = ("done", "error")


@runtime_checkable
class JobSpec(Protocol):
    """A job built once as an object (``TrainConfig``, ``PretrainConfig``) that writes its JOB.json keys."""

    def to_dict(self) -> dict[str, Any]: ...


class JobError(RuntimeError):
    """The job could not be started (bad spec, already running)."""


def jobs_dir() -> Path:
    """Where job specs and child logs go: under the user's models folder (``CSUNET_MODELS_DIR``),
    so a test or a demo that redirects that folder leaves nothing elsewhere."""
    from ..models.catalog import user_models_dir

    return user_models_dir() / "jobs"


def _child_env() -> dict[str, str]:
    """The parent's environment, unbuffered. ``csunet_train`` is installed with the package (the
    wheel ships it, an editable install puts ``training/`` on the path), so the child finds it as
    the parent does."""
    return dict(os.environ, PYTHONUNBUFFERED="1")


class TrainingJob:
    """One training child. ``on_event(dict)`` gets every event with its kind under ``"event"``.

    After the child ends, one last ``{"event": "exit", "returncode": n}`` follows; if it ended
    without ``done`` or ``error`` (a crash, a kill), an ``error`` event of kind ``"crash"``
    carrying the tail of its stderr comes first.
    """

    def __init__(self, spec: JobSpec | dict[str, Any], on_event: Callable[[dict[str, Any]], None],
                 workdir: str | Path | None = None, python: str = sys.executable,
                 module: str = "csunet_train.job", nice: int = 5) -> None:
        """``spec``: a ``TrainConfig``/``PretrainConfig`` (written as JOB.json with its ``to_dict``),
        or the JSON keys themselves (another ``module``'s job)."""
        self.spec = spec.to_dict() if isinstance(spec, JobSpec) else dict(spec)
        self.on_event = on_event
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{id(self) % 10000:04d}"
        self.workdir = Path(workdir) if workdir is not None else jobs_dir() / stamp
        self.python = python
        self.module = module
        self.nice = nice
        self.spec["stop_file"] = self.spec.get("stop_file") or str(self.workdir / "STOP")
        self.proc: subprocess.Popen | None = None
        self.events: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None
        self._stopping = False

    @property
    def job_file(self) -> Path:
        return self.workdir / "job.json"

    @property
    def stderr_file(self) -> Path:
        return self.workdir / "stderr.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.proc is not None:
            raise JobError("this job was already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path(self.spec["stop_file"]).unlink(missing_ok=True)
        atomic_write_text(self.job_file, json.dumps(self.spec, indent=2))
        # the child needs the RAM the last prediction's kept heap holds (up to GBs); trimming it took
        # 150 ms of the GUI thread (gui_responsiveness.py --trace), so a thread does it meanwhile
        threading.Thread(target=release_heap, name="csunet-release-heap", daemon=True).start()
        stderr = open(self.stderr_file, "wb")  # noqa: SIM115 - owned by the child until it exits
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", self.module, str(self.job_file)],
                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                env=_child_env(), cwd=str(self.workdir),
            )
        finally:
            stderr.close()
        self._lower_priority()
        self._reader = threading.Thread(target=self._read, name="csunet-train-events", daemon=True)
        self._reader.start()

    def _lower_priority(self) -> None:
        """Let the GUI win the CPU: the child (and the threads it starts) run ``nice``-r."""
        if self.nice and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
            except OSError:
                pass

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        try:
            self.on_event(event)
        except Exception as exc:  # a faulty handler must not kill the reader (and hide the exit)
            print(f"napari-csunet: event handler failed: {exc!r}", file=sys.stderr)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        terminal = False
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                event = {"event": "log", "message": line}
            kind = event.get("event") or event.get("type") or "log"
            event["event"] = kind
            terminal = terminal or kind in TERMINAL_EVENTS
            self._emit(event)
        rc = self.proc.wait()
        if not terminal:
            tail = self._read_stderr_tail()
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            self._emit({"event": "error", "kind": "crash",
                        "message": f"the training process {how} without finishing" + (f":\n{tail}" if tail else ""),
                        "returncode": rc, "log": str(self.stderr_file)})
        self._emit({"event": "exit", "returncode": rc, "stopped": self._stopping})

    def _read_stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.stderr_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace_s: float = 60.0, kill_after_s: float = 15.0) -> None:
        """Ask the child to save its best model and exit; escalate in the background if it hangs."""
        if not self.running or self._stopping:
            return
        self._stopping = True
        atomic_write_text(self.spec["stop_file"], "stop\n")
        threading.Thread(target=self._escalate, args=(grace_s, kill_after_s), daemon=True).start()

    def _escalate(self, grace_s: float, kill_after_s: float) -> None:
        assert self.proc is not None
        if self._wait(grace_s):
            return
        if os.name == "posix":
            self.proc.send_signal(signal.SIGINT)
            if self._wait(kill_after_s):
                return
        self.proc.kill()

    def _wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """End the child now (napari closing); the annotations are already on disk."""
        if self.running:
            self._stopping = True
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child and for its last event to be delivered."""
        if self.proc is None:
            return None
        if self._reader is not None:
            self._reader.join(timeout)
        return self.proc.poll()
