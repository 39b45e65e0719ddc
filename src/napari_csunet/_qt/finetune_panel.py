"""Fine-tune panel: train the current model on the annotation set in a child process.

The training backend runs as ``python -m csunet_train.job`` (never in napari's interpreter, never
on the GUI thread); its JSON-lines events drive a live loss / validation-IoU plot and a status
line. Only held-out *reviewed* pixels judge (painted ones were chosen because the model was wrong
there, so a score on them cannot fail), and the child's ``decision`` says what happens next:
better there -> the new model becomes current and the image is segmented again with the user's
corrections kept; not better -> the current model stays, and why is shown; nothing fair to judge
by -> the new model is offered ("Use the new model"), never made current silently. "Revert model"
goes back, in one click, to the model from before the fine-tune. A crash or an out-of-memory in
the child shows its message; napari and the annotations are untouched.

"Keep the other open images as they are" (on by default) hands the open micrographs that were not
corrected to the child as ``unlabelled`` images: it distils to the starting model's answers there
too, so a fine-tune on one image does not drift on the rest of the material. They are written to
TIFFs on a worker thread before the child starts.

"Show what it changes" segments the open images with the fine-tuned model and the one before it
(on a worker thread) and marks, per image, the pixels whose class changes: what the verdict's
"look at those areas" points to (``loop.compare``, ``_qt.changes_view``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

from ..loop.finetune_job import (
    FORM_FIELDS,
    NEW_MODEL_STEPS,
    finetune_defaults,
    finetune_job_spec,
    job_classes,
)
from ..loop.outcome import Outcome
from ..loop.training_job import TrainingJob
from ..models.catalog import finetuned_name, model_stem, user_models_dir
from ..settings import save_settings
from .changes_view import ChangesButton
from .common import EventRelay, StatusLine, form_group, hbox, start_training_child
from .config_form import config_form, form_rows, form_values
from .finetune_text import (
    decision_text,
    duration,
    held_out_score,
    other_images_label,
    other_images_note,
    other_images_use,
)
from .other_images import KEEP_OTHERS, other_open_images, write_unlabelled
from .plot import TrainingPlot
from .serial_worker import SerialWorker
from .session import ModelSession

__all__ = ["FinetunePanel"]


def _where(path: Path) -> str:
    """Where a model file can be found again: the Model tab lists the models folder, not its subfolders."""
    return f"{path.name} (Model tab)" if path.parent == user_models_dir() else str(path)

class FinetunePanel(QWidget):
    """Hyper-parameters, Start/Stop, live plot, status, the verdict; Use the new model / Revert model."""

    #: emitted with the new model file once it is loaded
    trained = Signal(str)
    #: emitted when a fine-tune saved a model file that is not loaded (offered or kept aside)
    saved = Signal(str)

    def __init__(self, viewer: napari.Viewer, session: ModelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        from csunet_train.config import TrainConfig

        saved = session.settings.finetune  # older settings may hold keys no longer offered (pseudo_weight)
        values = finetune_defaults() | {k: v for k, v in saved.items() if k in FORM_FIELDS}
        self.form = config_form(TrainConfig, FORM_FIELDS, values)  # limits and help from TrainConfig
        self.keep_others = CheckBox(  # not a TrainConfig field: the panel turns it into ``unlabelled`` files
            value=bool(saved.get(KEEP_OTHERS, True)), text="Keep the other open images as they are",
            tooltip="the images open in napari that were not corrected are used without labels: the fine-tuned "
                    "model is taught to keep its answers there, so it does not drift on the rest of your material")
        #: job keys beyond the form (TrainConfig fields, e.g. distill_weight): experts, benchmarks
        self.overrides: dict[str, Any] = {}
        self.start_btn = QPushButton("Start fine-tuning")
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn = QPushButton("Stop (keep best)")
        self.stop_btn.clicked.connect(lambda: self.stop())
        self.stop_btn.setEnabled(False)
        self.use_btn = QPushButton("Use the new model")
        self.use_btn.setToolTip("make the fine-tuned model current and segment the image again with it")
        self.use_btn.clicked.connect(lambda: self.use_new_model())
        self.revert_btn = QPushButton("Revert model")
        self.revert_btn.setToolTip("back to the model from before the last fine-tune (the fine-tuned one stays "
                                   "saved in the Model tab)")
        self.revert_btn.clicked.connect(lambda: self.revert_model())
        self.plot = TrainingPlot()
        self.plot.clear(self.form.steps.value)  # the axis the run will have, before it starts
        self.form.steps.changed.connect(self._steps_changed)
        self.training_set = StatusLine()  # what Start would train on, kept up to date (show_training_set)
        self.status = StatusLine()
        self.writer = SerialWorker("csunet-unlabelled", self)  # the other open images, the child's start, comparisons
        self.changes = ChangesButton(viewer, session, self.writer, self.status, self._comparable, self._idle_again, self)
        self.changes_btn = self.changes.button
        self.result = StatusLine()

        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Fine-tune on the training set",
                                    [*form_rows(self.form), self.keep_others, self.training_set,
                                     hbox(self.start_btn, self.stop_btn)]))
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        layout.addWidget(self.result)
        layout.addWidget(hbox(self.use_btn, self.revert_btn))
        layout.addWidget(self.changes_btn)
        layout.addStretch(1)

        self.job: TrainingJob | None = None
        self.last_done: dict[str, Any] | None = None
        self.last_started: dict[str, Any] | None = None
        self.resegmented: list[str] | None = None  # layers segmented again after the last model change
        self.before_model: Path | None = None  # current before the last fine-tune: what Revert loads
        self.new_model: Path | None = None  # the last fine-tune's file
        self.offered = False  # "Use the new model" can make the last fine-tune's model current
        self.undecided = False  # an offer nothing fair judged waits for the user's word (Revert declines it)
        self._pending_offer: tuple[str, str, str] | None = None  # a live update's, while this tab is busy
        self._declined: tuple | None = None  # what a live update's offer replaced (Revert brings it back)
        self._start_model: Path | None = None
        self._writing = False  # the other open images are being written; the child starts next
        self._relay = EventRelay(self._on_event, self)
        session.busy_changed.connect(self._update_enabled)
        session.changed.connect(self._update_enabled)
        session.changed.connect(self.show_training_set)
        self._steps_for_trained: int | None = None  # the user's steps while a new model proposes more
        session.changed.connect(self._follow_model)
        session.offered.connect(self.offer)
        session.changed.connect(self._drop_stale_offer)
        self._update_enabled()
        self.show_training_set()

    @property
    def running(self) -> bool:
        return self.job is not None or self._writing or self.comparing

    def _update_enabled(self, *_: object) -> None:
        idle = not self.running and not self.session.busy
        self.start_btn.setEnabled(idle and self.session.segmenter is not None)
        self.use_btn.setEnabled(idle and self.offered and self.new_model is not None and self.new_model.exists())
        current = self.session.path
        self.revert_btn.setEnabled(idle and self.before_model is not None and (
            self.undecided or (current is not None and current != self.before_model and self.before_model.exists())))
        self.changes.update(idle)

    def _steps_changed(self, steps: int) -> None:
        """An empty plot follows the chosen step count; a run's curves stay until the next start."""
        if not self.running and not self.plot.loss:
            self.plot.clear(steps)

    def _follow_model(self, *_: object) -> None:
        """A new model (output layer untrained) gets :data:`NEW_MODEL_STEPS` proposed; the steps
        the user had come back with a trained model (unless they changed the proposal meanwhile)."""
        from ..models.modelfile import has_untrained_head

        info, steps = self.session.info, self.form.steps
        if info is not None and has_untrained_head(info.provenance):
            if steps.value < NEW_MODEL_STEPS:
                self._steps_for_trained = steps.value
                steps.value = NEW_MODEL_STEPS
                self.status.info(f"a new model: {NEW_MODEL_STEPS} steps proposed (its output layer learns from "
                                 "nothing; a trained model is corrected in fewer)")
        elif self._steps_for_trained is not None:
            if steps.value == NEW_MODEL_STEPS:
                steps.value = self._steps_for_trained
            self._steps_for_trained = None

    def show_training_set(self, *_: object) -> None:
        """Say what Start would train on: the saved corrected images and their pixels, or what to do first."""
        from ..images.annotations import AnnotationError

        store, info = self.session.annotations, self.session.info
        use = self._others_use()
        self.keep_others.text = other_images_label(use)
        self.keep_others.enabled = use is not None
        try:
            entries = store.entries()
        except AnnotationError as exc:
            self.training_set.error(str(exc), notify=False)
            return
        if not entries:
            self.training_set.info("the training set is empty: correct an image in the Correct tab and "
                                   "'Add to training set', then start")
            return
        painted = sum(e.painted or 0 for e in entries)
        text = (f"training set: {len(entries)} corrected image{'s' if len(entries) != 1 else ''}, "
                f"{sum(e.labelled for e in entries):,} px will train ({painted:,} painted)")
        if info is not None and store.class_names != list(info.class_names):
            self.training_set.warning(f"{text}; its classes {store.class_names} are not the model's "
                                      f"{list(info.class_names)}", notify=False)
        else:
            self.training_set.info(text)

    def _others_use(self) -> str | None:
        """What the next fine-tune would do with the other open images (see ``other_images_use``)."""
        from ..models.modelfile import has_untrained_head

        info = self.session.info
        new_head = info is not None and has_untrained_head(info.provenance)
        semi = (finetune_defaults() | self.params() | self.overrides)["semi_weight"]
        return other_images_use(new_head, float(semi))

    def params(self) -> dict[str, Any]:
        """The form's values (what is saved in the settings)."""
        return form_values(self.form)

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> bool:
        """Check everything, save an unsaved model first, then launch the child. True if started."""
        info, store = self.session.info, self.session.annotations
        if self.running:
            self.status.error("wait: the two models are segmenting the open images" if self.comparing
                              else "a fine-tuning job is already running")
            return False
        if info is None:
            self.status.error("no model: load or build one in the Model tab first")
            return False
        pairs = store.pairs()
        if not pairs:
            self.status.error("the training set is empty: correct an image and 'Add to training set' first")
            return False
        if store.class_names != list(info.class_names):
            self.status.error(f"the training set has classes {store.class_names} but the model has "
                              f"{list(info.class_names)}; load a model with these classes or start a new set")
            return False
        remembered = self.params() | {KEEP_OTHERS: self.keep_others.value}
        if self._steps_for_trained is not None and remembered["steps"] == NEW_MODEL_STEPS:
            remembered["steps"] = self._steps_for_trained  # the proposal for a new model is not the user's choice
        self.session.settings.finetune = remembered
        keep = self.keep_others.value and self._others_use() is not None  # a new model may not use them
        save_settings(self.session.settings)
        corrected = {entry.name for entry in store.entries()}
        others = [(lay.name, lay.data) for lay in other_open_images(self.viewer, corrected)] if keep else []
        if self.session.path is None or self.session.unsaved:
            base = user_models_dir() / f"{model_stem(info.name or info.preset or 'model')}-base.safetensors"
            self.status.info(f"saving the current model to {base} first …")
            return self.session.save(base, on_done=lambda: self._write_then_launch(pairs, others)) is not None
        return self._write_then_launch(pairs, others)

    def _write_then_launch(self, pairs: list[dict[str, Any]], others: list[tuple[str, np.ndarray]]) -> bool:
        """Write the other open images off the GUI thread (up to 4 x 4096² px), then launch the child."""
        if not others:
            return self._launch(pairs, [])
        self._writing = True
        self._update_enabled()
        self.status.info(f"writing {len(others)} other open image(s) for the fine-tune …")

        def written(paths: list[str]) -> None:
            self._writing = False
            if not self._launch(pairs, paths):
                self._update_enabled()

        def failed(exc: Exception) -> None:
            self._writing = False
            self._update_enabled()
            self.status.error(f"cannot start: the other open images could not be written ({exc}); "
                              "untick 'Keep the other open images as they are' to fine-tune without them")

        self.writer.submit(lambda: write_unlabelled(others), written, failed)
        return True

    def _launch(self, pairs: list[dict[str, Any]], unlabelled: list[str]) -> bool:
        from csunet_train.config import ConfigError

        info, store, settings = self.session.info, self.session.annotations, self.session.settings
        name = finetuned_name(info.name or info.preset or "model")
        params = self.params() | ({"unlabelled": unlabelled} if unlabelled else {}) | self.overrides
        try:
            names, colors = job_classes(info, store)
            spec = finetune_job_spec(self.session.path, pairs, names, user_models_dir() / f"{name}.safetensors",
                                     class_colors=colors, device=settings.device, amp=settings.mixed_precision, name=name, **params)
        except ConfigError as exc:
            self.status.error(f"cannot start: {exc}")
            return False
        self.plot.clear(spec.steps)
        self.result.info("")
        self.last_done, self.resegmented = None, None
        job = start_training_child(spec, self._relay.event.emit, self.status, writer=self.writer,
                                   on_failed=lambda: self._not_started(job))
        self.job = job
        if job is None:
            return False
        self._start_model, self.offered, self.undecided, self._declined = self.session.path, False, False, None
        self.stop_btn.setEnabled(True)
        self._update_enabled()
        note = other_images_note(len(spec.unlabelled), self._others_use())
        self.status.info(f"starting the training process ({len(pairs)} corrected image(s){note}) …")
        return True

    def _not_started(self, job) -> None:
        """The child could not be started (on the writer thread): nothing runs."""
        if self.job is job:
            self.job = None
            self.stop_btn.setEnabled(False)
            self._update_enabled()

    def stop(self) -> None:
        """Ask the child to stop: it saves the best model so far and exits."""
        if self.job is not None:
            job = self.job  # still starting (on the writer thread): asked once it has started
            self.writer.submit(lambda: None, lambda _: job.stop(), lambda _exc: None)
            self.stop_btn.setEnabled(False)
            self.status.info("stopping: saving the best model …")

    def shutdown(self, *_: object) -> None:
        """napari is closing: end the child (the annotations and saved checkpoints stay on disk) and a
        comparison (its thread would keep Python from exiting until both models had segmented)."""
        self.changes.stop()
        if self.job is not None:
            job = self.job
            job.kill()
            self.writer.submit(job.kill, lambda _: None, lambda _exc: None)  # one still starting, too

    # -- events --------------------------------------------------------------------------------

    def _on_event(self, ev: dict[str, Any]) -> None:
        handler = getattr(self, f"_ev_{ev['event']}", None)
        if handler is not None:
            handler(ev)

    def _ev_started(self, ev: dict) -> None:
        self.last_started = ev
        self.plot.clear(ev.get("steps") or self.form.steps.value)
        rate = ev.get("lr")
        differs = rate is not None and abs(float(rate) - float(self.form.lr.value)) > 1e-12
        self.status.info(f"training on {ev.get('device')}: {ev.get('train_images')} training image(s)" + (
            f"; learning rate {rate:g}, the whole network (a new model's rate)" if differs else ""))

    def _ev_step(self, ev: dict) -> None:
        self.plot.add_loss(ev["step"], ev.get("loss"))
        speed = ev.get("images_per_s")
        self.status.info(f"step {ev['step']}/{ev.get('steps')} · loss {ev.get('loss') or float('nan'):.4f}"
                         + (f" · {speed:.1f} img/s" if speed else "") + f" · ETA {duration(ev.get('eta_s'))}")

    def _ev_eval(self, ev: dict) -> None:
        score = held_out_score(ev.get("metrics"))
        if not score:  # only reviewed pixels judge: nothing else is plotted as "validation"
            return
        self.plot.add_val(ev["step"], ev["metrics"]["miou"], bool(ev.get("best")))
        if ev["step"] == 0:
            self.result.info(f"before: {score}")

    def _ev_checkpoint(self, ev: dict) -> None:
        score = held_out_score(ev.get("metrics"))
        if score:
            self.result.info(f"best so far at step {ev['step']}: {score}")

    def _ev_warning(self, ev: dict) -> None:
        self.status.warning(f"training: {ev.get('message')}")

    def _ev_error(self, ev: dict) -> None:
        self.status.error(f"training failed ({ev.get('kind', 'error')}): {ev.get('message')}")

    def _ev_done(self, ev: dict) -> None:
        """Follow the child's decision: make the new model current, offer it, or keep the current one."""
        self.last_done = ev
        outcome = Outcome.of(ev)
        text = decision_text(outcome.decision, f"{'stopped' if outcome.stopped else 'finished'} after "
                                               f"{outcome.steps} steps")
        path = outcome.path
        if path is None:
            self.result.info(text)
            self.status.error("training ended without saving a model (no step finished)")
            return
        self.before_model, self.new_model = self._start_model, path
        if outcome.kept:
            self.result.info(text)
            self._switch_to(path, "the fine-tuned model")
        elif outcome.offered:
            self.offered = self.undecided = True
            self.result.warning(text, notify=True)
            self.status.info(f"the fine-tuned model is saved as {path.name}: 'Use the new model' to segment with "
                             "it, 'Revert model' to keep the current one")
        else:
            current = self.session.path
            if outcome.discard_if_start(current):
                self.new_model = None
            self.result.warning(text, notify=True)
            self.status.info(f"the current model {current.name if current else ''} is unchanged")
        if self.new_model is not None and not outcome.kept:
            self.saved.emit(str(self.new_model))  # listed in the Model tab, not current
        self._update_enabled()

    def offer(self, path: str, start: str, reason: str) -> None:
        """A model fine-tuned elsewhere (the live update) and offered: decided here, as this tab's own
        offers are (Use the new model, Show what it changes, Revert model); after this tab's run or
        comparison when one is under way."""
        if self.running:
            self._pending_offer = (path, start, reason)
            return
        new, old = Path(path), Path(start)
        if self.session.path != old:
            self.status.warning(f"a live update's model was fine-tuned from {old.name}, which is not current any "
                                f"more: not offered; it is saved as {new}")
            return
        replaced = self.new_model if self.undecided else None
        self._declined = (self.before_model, self.new_model, self.offered, self.undecided)
        self.before_model, self.new_model = old, new
        self.offered = self.undecided = True
        self.result.warning(f"Live update: {reason}", notify=False)
        self.status.info(f"{new.name} is offered: 'Show what it changes', then 'Use the new model' or 'Revert "
                         "model'" + (f" (in place of {replaced.name}: Revert model brings that offer back)"
                                     if replaced is not None else ""))
        self._update_enabled()

    def _idle_again(self) -> None:
        """This tab's run or comparison ended: a live update's offer that waited is taken now."""
        self._update_enabled()
        pending, self._pending_offer = self._pending_offer, None
        if pending is not None:
            self.offer(*pending)

    def _drop_stale_offer(self, *_: object) -> None:
        """Another model became current (loaded by hand, a live update): an undecided offer was
        made against the model before it, so Use and Revert no longer mean what they say."""
        if self.undecided and self.before_model is not None and self.session.path != self.before_model:
            self.offered = self.undecided = False
            self._declined = None
            if self.new_model is not None:
                self.status.info(f"the offer of {self.new_model.name} is withdrawn: it was fine-tuned from "
                                 f"{self.before_model.name}, which is not current any more; it stays saved as "
                                 f"{_where(self.new_model)}")
            self._update_enabled()

    def use_new_model(self) -> None:
        """The user's word for an offered model: make it current and segment again with it."""
        if self.new_model is None or not self.new_model.exists():
            self.status.error("no fine-tuned model to use: fine-tune first")
            return
        self.offered = self.undecided = False
        self._declined = None
        verdict = self.result.text()  # "offered, not made current" must not stand beside "is current"
        self.result.info(f"{verdict}\nYou chose to use it: it is current now (Revert model goes back)."
                         if verdict else "")
        self._switch_to(self.new_model, "the fine-tuned model")

    def revert_model(self) -> None:
        """Back to the model from before the last fine-tune (declines an offered one; a live update's
        offer declined brings back what it replaced)."""
        if self.before_model is None:
            self.status.error("nothing to revert: no fine-tune changed or offered a model")
            return
        if self.undecided or self.session.path == self.before_model:
            declined = self.new_model
            self.offered = self.undecided = False
            if self._declined is not None:
                self.before_model, self.new_model, self.offered, self.undecided = self._declined
                self._declined = None
            self.status.info(f"kept {self.session.path.name if self.session.path else 'the current model'}" + (
                f"; the fine-tuned model stays saved as {_where(declined)}" if declined else ""))
            self._update_enabled()
            return
        if not self.before_model.exists():
            self.status.error(f"{self.before_model} is gone: load a model in the Model tab")
            return
        self.offered = self.new_model is not None and self.new_model.exists()  # one click back to it
        self._switch_to(self.before_model, "the model from before the fine-tune")

    def _switch_to(self, path: Path, what: str) -> None:
        """Load ``path`` and segment the image again with it, the corrections kept on top."""
        self.status.info(f"loading {what} {path.name} …")
        if self.session.load_file(path, on_done=lambda: self._after_load(str(path))) is None:
            self.status.warning(f"{what} is saved as {path}; load it from the Model tab")

    def _after_load(self, path: str) -> None:
        self.trained.emit(path)
        self._update_enabled()
        layers = self._images_to_resegment()
        self.status.info(f"model {Path(path).name} is current" + ("; segmenting again …" if layers else ""))
        if not layers:
            self.resegmented = []
            return
        store = self.session.annotations  # the training set's labels are read here, off the GUI thread

        def segment(vouched: dict[str, np.ndarray | None] | None) -> None:
            keep = self.session.corrections if vouched is None else (lambda layer: self.session.corrections(layer, vouched))
            if self.session.segment(layers, on_done=lambda written: self._resegmented(path, written), keep=keep) is None:
                self.status.warning(f"model {Path(path).name} is current; segment again in the Segment tab")

        self.writer.submit(lambda: {lay.name: store.vouched(lay.name) for lay in layers}, segment,
                           lambda _exc: segment(None))

    def _resegmented(self, path: str, written: list) -> None:
        names = [layer.name for layer in written]
        self.resegmented = names
        self.status.info(f"model {Path(path).name} is current" + (
            f"; segmented again: {', '.join(names)} (your painted corrections are kept; Revert to prediction in "
            "the Correct tab shows the new prediction)" if names else ""))
        self._update_enabled()

    def _images_to_resegment(self) -> list:
        """The image of the Correct tab's labels layer, else the Segment tab's choice."""
        layer = self.session.correcting
        image = self.session.records.image_of(layer) if layer is not None else None
        if image is not None:
            return [image]
        return self.session.segmentation.targets() if self.session.segmentation is not None else []

    # -- what the new model changes -------------------------------------------------------------

    def _comparable(self) -> tuple[Path, Path] | None:
        """(the model before the last fine-tune, its fine-tuned model) when both files are there."""
        old, new = self.before_model, self.new_model
        if old is None or new is None or old == new or not old.exists() or not new.exists():
            return None
        return old, new

    @property
    def comparing(self) -> bool:
        return self.changes.running

    def show_changes(self) -> bool:
        """Segment the open images with both models and mark what changes (:class:`ChangesButton`)."""
        return self.changes.start()

    def _ev_exit(self, ev: dict) -> None:
        self.job = None
        self.stop_btn.setEnabled(False)
        self._idle_again()
