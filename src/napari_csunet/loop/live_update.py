"""Live update: after each correction, a short fine-tune, then a fresh prediction and queue.

The cycle is: the user corrects or accepts a region -> a short fine-tune in the training child,
continuing from the current model with the encoders frozen (only the decoder learns, which is
what makes a few dozen steps on a CPU take tens of seconds) -> the new model is loaded, the
image re-segmented and the queue re-ranked. One cycle at a time: a correction made meanwhile is
remembered and starts the next cycle when this one ends, never a second child. GUI-free (the
Correct tab drives it with callbacks), so the rules are tested without Qt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from csunet_train.config import TrainConfig

__all__ = ["LIVE_OVERRIDES", "live_job_spec", "LiveUpdate"]

#: where a live update's job differs from TrainConfig's defaults (``csunet_train.config``), and why;
#: and ``threads``: every core but one, for napari (a child spinning on every core beside napari's GUI
#: and inference took 4-5x longer per step), unless a caller names it
LIVE_OVERRIDES: dict[str, Any] = {
    "steps": 20,  # a short fine-tune: tens of seconds on a CPU
    "eval_every": 10,  # judged after 10 and 20 steps
    "lr": 3e-4,  # a trained model is corrected, not trained from scratch: smaller steps
    "batch_size": 2,  # two crops a step: short steps beside napari
    "freeze_cnn": True,  # only the decoder learns: what makes a few dozen steps enough
    "freeze_swin": True,  # (the same)
    "pseudo_weight": 0.0,  # no pseudo-labels: only what the user corrected or accepted teaches
    "holdout": "blocks",  # a lattice of held-out blocks: an end strip of one region is too uneven to judge by
}


def live_job_spec(model: str | Path, pairs: list[dict[str, str]], class_names: list[str], out: str | Path,
                  device: str = "auto", class_colors: list[str] | None = None, **overrides: Any) -> TrainConfig:
    """The training job of one live update, built and checked once (ConfigError names a bad key)."""
    from csunet_train.config import TrainConfig

    params = LIVE_OVERRIDES | overrides
    if params.get("threads") is None:
        params["threads"] = max(1, (os.cpu_count() or 2) - 1)
    params["eval_every"] = min(int(params["eval_every"]), int(params["steps"]) or 1)
    spec = {"mode": "finetune", "model": str(model), "pairs": list(pairs), "class_names": list(class_names),
            "class_colors": list(class_colors) if class_colors else None, "device": device, "out": str(out),
            "name": Path(out).stem,
            "description": f"live update of {Path(model).name} on {len(pairs)} corrected image(s)"} | params
    return TrainConfig.from_dict(spec)


class LiveUpdate:
    """One cycle at a time; corrections during a cycle queue exactly one more.

    ``start_cycle()`` launches a cycle (returns False when it cannot, e.g. nothing to train on);
    the owner calls :meth:`finished` when the cycle's prediction is on screen (or it failed).
    """

    def __init__(self, start_cycle: Callable[[], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self._start_cycle = start_cycle
        self._clock = clock
        self.enabled = False
        self.running = False
        self.pending = False
        self.cycles = 0
        self.requested_at: float | None = None  # the correction the running cycle answers
        self._pending_since: float | None = None
        self.last_seconds: float | None = None  # correction -> updated prediction, last cycle
        self.last_updated: float | None = None  # wall-clock time of the last updated prediction

    def request(self) -> str:
        """A region was corrected or accepted: 'started', 'queued' (a cycle is running), 'off' or 'refused'."""
        if not self.enabled:
            return "off"
        now = self._clock()
        if self.running:
            if not self.pending:
                self.pending, self._pending_since = True, now
            return "queued"
        return self._begin(now)

    def _begin(self, since: float) -> str:
        self.running, self.requested_at = True, since
        try:
            ok = self._start_cycle()
        except Exception:
            self.running = False
            raise
        if not ok:
            self.running = False
            return "refused"
        self.cycles += 1
        return "started"

    def finished(self, ok: bool = True) -> str | None:
        """The cycle ended (``ok``: a new prediction is on screen); starts the queued one, if any."""
        if not self.running:
            return None
        self.running = False
        if ok and self.requested_at is not None:
            self.last_seconds = self._clock() - self.requested_at
            self.last_updated = time.time()
        if self.pending and self.enabled:
            since, self.pending, self._pending_since = self._pending_since, False, None
            return self._begin(since if since is not None else self._clock())
        self.pending = False
        return None

    def cancel_pending(self) -> None:
        """Forget the queued cycle (live update switched off, or Stop)."""
        self.pending, self._pending_since = False, None

    def describe(self) -> str:
        """For the status line: when the prediction was last updated and what is going on."""
        parts = []
        if self.last_updated is not None:
            parts.append(f"prediction updated at {time.strftime('%H:%M:%S', time.localtime(self.last_updated))}"
                         + (f" ({self.last_seconds:.0f} s after the correction)" if self.last_seconds else ""))
        else:
            parts.append("prediction not updated live yet")
        if self.running:
            parts.append("updating …" + (" (one more queued)" if self.pending else ""))
        return "; ".join(parts)
