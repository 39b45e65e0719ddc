"""Work off napari's GUI thread, one task at a time, in order, with the results back on the GUI thread.

Saving a corrected image (three compressed TIFFs, then the index) and starting the training child
took up to a second on this project's loaded 2-core CPU: done on the GUI thread, napari froze right
after Next. The Correct tab copies what it saves on the GUI thread (the brush keeps painting into
the layer) and hands the writing to a :class:`SerialWorker`: one thread, so two saves of the set
never interleave and the last one asked for is the last one written. The store's files stay atomic,
and the thread is not a daemon: Python waits for a write in flight before it exits.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from qtpy.QtCore import QObject, Signal

__all__ = ["SerialWorker"]

_SKIPPED = object()


class SerialWorker(QObject):
    """``submit(task, on_done, on_error)``: ``task()`` on the worker thread, then ``on_done(result)``
    or ``on_error(exception)`` on the GUI thread."""

    _finished = Signal(object, object, object, object)  # on_done, on_error, result, exception

    def __init__(self, name: str = "csunet-worker", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._latest: dict[Hashable, int] = {}
        self._pending = 0
        self._finished.connect(self._deliver)  # queued: the worker thread emits, the GUI thread runs it

    @property
    def busy(self) -> bool:
        """Tasks submitted whose result has not reached the GUI thread yet."""
        return self._pending > 0

    def submit(self, task: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[Exception], None], key: Hashable | None = None) -> Future:
        """Queue ``task``. A newer task with the same ``key``, submitted before this one started,
        replaces it (this one is skipped, neither callback runs): e.g. a save of everything done so far."""
        ticket = 0
        if key is not None:
            ticket = self._latest[key] = self._latest.get(key, 0) + 1
        self._pending += 1

        def run() -> tuple[Any, Exception | None]:
            if key is not None and self._latest.get(key) != ticket:
                return _SKIPPED, None
            try:
                return task(), None
            except Exception as exc:  # shown on the GUI thread by on_error
                return None, exc

        future = self._pool.submit(run)
        future.add_done_callback(lambda f: self._finished.emit(on_done, on_error, *f.result()))
        return future

    def _deliver(self, on_done: Callable[[Any], None], on_error: Callable[[Exception], None], result: Any,
                 error: Exception | None) -> None:
        self._pending -= 1
        if result is _SKIPPED:
            return
        if error is not None:
            on_error(error)
        else:
            on_done(result)
