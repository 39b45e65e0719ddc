"""One error path for every ``csunet`` command.

A failure the user can fix (a missing or bad file, JSON, an argument, memory) ends in one line on
stderr saying what is wrong, exit code 2, no traceback; ``--debug`` shows the traceback, and so does
a real internal error. SIGTERM stops a command like Ctrl-C (exit 130).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ..safetext import shown

__all__ = ["USER_ERROR", "user_error_message", "run_command", "sigterm_as_interrupt", "GracefulStop",
           "plain_warnings"]

USER_ERROR = 2  # the exit code of every user-caused failure (argparse's too)
INTERRUPTED = 130

#: exception types that mean "the input or the request is wrong", not "the program is"
_USER_TYPES = (ValueError, OSError, KeyError, MemoryError, RecursionError)


def _out_of_memory(exc: BaseException) -> bool:
    if "torch" not in sys.modules:  # only torch raises its own out-of-memory errors
        return False
    from ..engine.device import is_out_of_memory

    return is_out_of_memory(exc)


def user_error_message(exc: BaseException) -> str | None:
    """The one line for a failure the user can act on, or None for an internal error."""
    if _out_of_memory(exc) or isinstance(exc, MemoryError):
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "the allocator failed"
        return (f"out of memory ({first}); use a smaller --tile or --batch (segment) or --crop/--batch-size "
                "(train), a smaller model, or --device cpu")
    if not isinstance(exc, _USER_TYPES):
        return None
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line for line in str(text).strip().split("\n") if line.strip()]  # other controls: escaped
    return shown(lines[0] if lines else type(exc).__name__)[:1000]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread for the block, as SIGINT does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class GracefulStop:
    """The first Ctrl-C or SIGTERM asks the work to stop at its next boundary (``requested``); a
    second one interrupts at once. Use as a context manager (main thread only; elsewhere a no-op)."""

    def __init__(self, what: str = "the current item") -> None:
        self.what = what
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _request(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
        self.requested = True
        print(f"stopping after {self.what} ({signal.Signals(signum).name}; again to stop at once)", file=sys.stderr)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._request) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Our own warnings (UserWarning) as one ``warning: ...`` line, without the source line."""
    default = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' signature
        if category is UserWarning:
            return f"warning: {shown(message)}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = default


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                debug: bool = False) -> int:
    """Run a subcommand's handler through the one error path; its exit code."""
    with sigterm_as_interrupt(), plain_warnings():
        try:
            return int(func(args) or 0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED
        except Exception as exc:
            message = None if debug else user_error_message(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            return USER_ERROR
