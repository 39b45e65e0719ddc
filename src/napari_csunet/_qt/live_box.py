"""The Correct tab's live update toggle: a short fine-tune after each correction, in the background.

Drives :class:`napari_csunet.loop.live_update.LiveUpdate` with the GUI's pieces: the training child
(:class:`napari_csunet.loop.training_job.TrainingJob`, never napari's interpreter), the model session (loads
the new model on its worker thread) and the Segment tab (re-segments the queue's image with the
corrections kept, which re-ranks the queue). Nothing here blocks the GUI thread (even the child
is started on a worker thread); a correction made during a cycle queues one more cycle; Stop ends
the child and forgets the queued cycle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QCheckBox, QPushButton, QVBoxLayout, QWidget

from ..images.annotations import AnnotationStore
from ..loop.finetune_job import job_classes
from ..loop.live_update import LiveUpdate, live_job_spec
from ..loop.outcome import Outcome
from ..loop.training_job import TrainingJob
from ..models.catalog import model_stem, user_models_dir
from .common import EventRelay, StatusLine, hbox
from .queue_box import QueueBox
from .serial_worker import SerialWorker
from .session import ModelSession

__all__ = ["LiveBox", "live_dir"]


def live_dir() -> Path:
    """Live-update models: a subfolder, so they do not crowd the Model tab's list."""
    return user_models_dir() / "live"


class _Refused(Exception):
    """The cycle cannot start (its message says why)."""


class LiveBox(QWidget):
    """Toggle, state ("prediction updated at …"), Stop."""

    def __init__(self, session: ModelSession, store: AnnotationStore, queue: QueueBox,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.store, self.queue = session, store, queue
        self.toggle = QCheckBox("live update after each correction")
        self.toggle.setToolTip("after each corrected or accepted region: a short fine-tune (encoders frozen) in "
                               "the background, then the image is segmented again and the queue re-ranked")
        self.toggle.toggled.connect(self._on_toggle)
        self.stop_btn = QPushButton("Stop update")
        self.stop_btn.clicked.connect(lambda: self.stop())
        self.stop_btn.setEnabled(False)
        self.state = StatusLine("live update is off")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(hbox(self.toggle, self.stop_btn))
        layout.addWidget(self.state)
        self.live = LiveUpdate(self._start_cycle)
        self.job: TrainingJob | None = None
        self.params: dict[str, Any] = {}  # over LIVE_OVERRIDES (tests, experts)
        self.last_done: dict[str, Any] | None = None
        self._cycle_start: Path | None = None  # the model file the running cycle fine-tunes
        self._stopped = self._starting = self._closing = False
        self.worker = SerialWorker("csunet-live", self)  # the job spec and the child's start
        self._relay = EventRelay(self._on_event, self)
        queue.corrected.connect(self.request)

    def _on_toggle(self, on: bool) -> None:
        if on:  # the job check's imports now, not on the GUI thread at the first correction
            import csunet_train.config  # noqa: F401
        self.live.enabled = on
        if not on:
            self.live.cancel_pending()
        self._show()

    def request(self) -> str:
        """A region was saved: start a cycle, or queue one behind the running cycle."""
        result = self.live.request()
        self._show()
        return result

    def _show(self, extra: str = "") -> None:
        if not self.live.enabled and not self.live.running:
            text = "live update is off"
            if self.live.last_updated is not None:
                text += "; " + self.live.describe()
        else:
            text = self.live.describe()
        self.state.info(text + (f"; {extra}" if extra else ""))
        self.stop_btn.setEnabled(self.live.running)

    # -- one cycle: train -> load -> segment ---------------------------------------------------------

    def _start_cycle(self) -> bool:
        """Checks on the GUI thread; the job spec (reads the annotation index) and the child's start
        (writes the job file, forks) on the worker thread. True: the cycle is under way."""
        info, path = self.session.info, self.session.path
        if info is None or path is None or self.session.unsaved:
            self.state.error("live update needs a model saved as a file: load one, or fine-tune once")
            return False
        segmentation = self.session.segmentation
        if self.session.busy or segmentation is None or segmentation.running:
            self.state.warning("busy (loading or segmenting): correct again when it is done", notify=False)
            return False
        base = model_stem(info.name or "model").split("-live-")[0]
        out = live_dir() / f"{base}-live-{time.strftime('%Y%m%d-%H%M%S')}-{self.live.cycles}.safetensors"
        names, colors = job_classes(info, self.store)
        device, params = self.session.settings.device, dict(self.params, amp=self.session.settings.mixed_precision)
        self.last_done, self._starting, self._cycle_start = None, True, path

        def start() -> TrainingJob:
            pairs = self.store.pairs()
            if not pairs or self.store.class_names != names:
                raise _Refused("nothing to train on with this model's classes: correct or accept a region first")
            job = TrainingJob(live_job_spec(path, pairs, names, out, device, colors, **params), self._relay.event.emit)
            job.start()
            if self._closing:  # napari closed meanwhile: this widget may be gone before _started runs
                job.kill()
            return job

        self.worker.submit(start, self._started, self._not_started)
        return True

    def _started(self, job: TrainingJob) -> None:
        self.job, self._starting = job, False
        if self._closing:
            job.kill()
        elif self._stopped:  # Stop was pressed while the child started
            job.stop(grace_s=10.0, kill_after_s=5.0)

    def _not_started(self, exc: Exception) -> None:
        self._starting, self._stopped = False, False
        if isinstance(exc, _Refused):
            self.state.error(str(exc))
        else:
            self.state.error(f"could not start the training process: {exc}")
        self._finish(False)

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "step":
            self._show(f"training step {ev.get('step')}/{ev.get('steps')}")
        elif kind == "error":
            self.state.error(f"live update failed ({ev.get('kind')}): {ev.get('message')}")
        elif kind == "done":
            self.last_done = ev
        elif kind == "exit":
            self.job = None
            stopped, self._stopped = self._stopped, False
            self._after_training(self.last_done if ev.get("returncode") == 0 and not stopped else None)

    def _after_training(self, done: dict[str, Any] | None) -> None:
        """The live update's policy: the new model is loaded when it was kept, or when nothing fair
        judged it (a live cycle's corrections are queue regions: reviewed, so that is rare); one better
        on the checks but not made current (within the noise, or changing unchecked pixels) goes to the
        Fine-tune tab's offer, where the user looks and decides; one not better is dropped."""
        outcome = Outcome.of(done)
        if outcome.path is None:
            self._finish(False, "stopped" if done is None else "no model was saved")
            return
        if outcome.offered and outcome.rejected and self._cycle_start is not None:  # better, not enough to load live
            if self.session.path != self._cycle_start:  # another model became current meanwhile
                self._finish(False, f"model unchanged: this cycle fine-tuned {self._cycle_start.name}, which is not "
                                    f"current any more; its model is saved as {outcome.path}")
                return
            self.session.offered.emit(str(outcome.path), str(self._cycle_start), outcome.decision.get("reason", ""))
            self._finish(False, f"model unchanged: the Fine-tune tab offers {outcome.path.name} "
                                "(Show what it changes, then Use the new model or Revert model)")
            return
        if outcome.rejected:
            outcome.discard_if_start(self.session.path)
            reason = outcome.decision.get("reason", "not better on the held-out reviewed pixels")
            self._finish(False, f"model unchanged: {reason}")
            return
        path = str(outcome.path)
        if self.session.busy or self.session.load_file(path, on_done=lambda: self._resegment(path)) is None:
            self._finish(False, f"busy: load {Path(path).name} from the Model tab")

    def _resegment(self, path: str) -> None:
        layer = self.queue.owner_layer()
        image = self.session.records.image_of(layer) if layer is not None else None
        if image is None:
            self._finish(True, f"new model {Path(path).name}; segment again to see it")
            return
        if self.session.segment([image], keep=self.queue.corrections, on_done=lambda _w: self._finish(True),
                                uncertainty=True) is None:
            self._finish(False, "could not segment again (busy)")

    def _finish(self, ok: bool, why: str = "") -> None:
        if self.live.finished(ok) is None:  # no queued cycle started
            self.stop_btn.setEnabled(False)
        self._show(why)

    def stop(self) -> None:
        """End the running cycle's training (the current model stays) and forget the queued one."""
        self.live.cancel_pending()
        if self.job is not None or self._starting:
            self._stopped = True
        if self.job is not None:
            self.job.stop(grace_s=10.0, kill_after_s=5.0)
        self.state.info("stopping the live update …")

    def shutdown(self, *_: object) -> None:
        """napari is closing: end the child now (or as soon as it has started)."""
        self.live.cancel_pending()
        self._closing = True
        if self.job is not None:
            self.job.kill()
