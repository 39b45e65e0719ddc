"""GUI-thread work in steps, one per turn of Qt's event loop.

napari's GUI thread must not be held for long (``benchmarks/gui_responsiveness.py``: the goal is
no gap over 50 ms between two ticks of a 10 ms timer). What has to run on it (inserting a layer,
napari's progress bars, the panels' updates after a model loads) is split into steps that a
:class:`Steps` queue runs one per timer turn: input, timers and paints are handled in between. A
timer, not a zero delay: Qt 6 runs a zero-delay call with the posted events, before any timer.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

__all__ = ["Steps", "STEP_MS"]

#: ms between two steps
STEP_MS = 5


class Steps(QObject):
    """A queue of callables run on the GUI thread, one per timer turn, in order; owned by a Qt
    parent, so nothing runs after it is deleted. ``then(step, ...)`` queues, ``pending`` says how
    many are left; a step that raises is reported by Qt like any slot, and the next ones still run."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = STEP_MS) -> None:
        super().__init__(parent)
        self._queue: list[Callable[[], object]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._next)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def then(self, *steps: Callable[[], object]) -> None:
        """Run ``steps`` after those already queued, one per turn."""
        self._queue.extend(steps)
        if self._queue and not self._timer.isActive():
            self._timer.start()

    def _next(self) -> None:
        if not self._queue:
            return
        step = self._queue.pop(0)
        try:
            step()
        finally:
            if self._queue and not self._timer.isActive():
                self._timer.start()
