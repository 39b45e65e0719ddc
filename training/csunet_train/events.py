"""JSON-lines events for the GUI and the CLI, and the stop request (signals or a stop file).

The GUI reads one JSON object per line from the child's stdout, so nothing else may go there:
the job moves ``sys.stdout`` to stderr and writes events to the original stream.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Emit", "json_lines", "stdout_events", "silent", "StopControl"]

Emit = Callable[[dict[str, Any]], None]


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every line parses everywhere."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def json_lines(stream: TextIO) -> Emit:
    """An emitter that writes each event as one flushed line of JSON."""
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(_finite(event), default=str)
        with lock:
            stream.write(line + "\n")
            stream.flush()

    return emit


def stdout_events() -> Emit:
    """Events on the process's stdout; anything else printed later goes to stderr instead."""
    events_out = sys.stdout
    sys.stdout = sys.stderr
    return json_lines(events_out)


def silent(event: dict[str, Any]) -> None:
    """The emitter of ranks other than 0."""


class StopControl:
    """Set by SIGINT/SIGTERM or by ``stop_file`` appearing; a second SIGINT interrupts at once."""

    def __init__(self, stop_file: str | Path | None = None, handle_signals: bool = True) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self._flag = False
        self._handle = handle_signals and threading.current_thread() is threading.main_thread()
        self._previous: dict[int, Any] = {}

    def request(self, signum: int | None = None, frame: Any = None) -> None:
        if self._flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._flag = True
        if signum is not None:
            print(f"stop requested ({signal.Signals(signum).name}): finishing the step and saving", file=sys.stderr)

    @property
    def requested(self) -> bool:
        if not self._flag and self.stop_file is not None and self.stop_file.exists():
            self._flag = True
        return self._flag

    def __enter__(self) -> StopControl:
        if self._handle:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self.request)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
