"""The training loop as flat functions: optimiser, schedule, one step, validation, ``fit``.

``fit`` knows nothing of files or JSON: it reports through ``emit`` and saves through ``save``, so
the job, the CLI and the benchmark share it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_csunet.engine.device import amp_dtype, in_device_layout, prefers_channels_last
from napari_csunet.measure.metrics import confusion_matrix, metrics_from_confusion

from .data import LabelledImage
from .dist import DistInfo, all_reduce_sum
from .events import Emit
from .losses import segmentation_loss

__all__ = [
    "NonFiniteLoss", "FitState", "Clock", "build_optimizer", "warmup_cosine", "budget_schedule", "amp_dtype", "train_step",
    "validation_segmenter", "evaluate", "fit", "freeze_encoders",
]

ENCODERS = ("cnn", "swin")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training cannot continue from this state."""


def freeze_encoders(model: nn.Module, freeze: dict[str, bool]) -> list[str]:
    """Stop gradients into the named encoders; returns the frozen ones the model has."""
    frozen = []
    for name in ENCODERS:
        module = getattr(model, name, None)
        if freeze.get(name) and module is not None:
            module.requires_grad_(False)
            frozen.append(name)
    return frozen


def set_train_mode(model: nn.Module, frozen: Sequence[str]) -> None:
    """Train mode, except frozen encoders keep their BatchNorm statistics (eval mode)."""
    model.train()
    for name in frozen:
        getattr(model, name).eval()


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, pretrained: Sequence[str],
                    encoder_lr_mult: float) -> torch.optim.AdamW:
    """AdamW; pretrained encoders learn at ``lr * encoder_lr_mult``; no decay on norms and biases."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = encoder_lr_mult if name.split(".")[0] in pretrained else 1.0
        decay = weight_decay if p.ndim > 1 else 0.0
        groups.setdefault((mult, decay), []).append(p)
    if not groups:
        raise ValueError("every parameter is frozen: unfreeze an encoder (the decoder always trains)")
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr * mult, "weight_decay": decay, "lr_mult": mult} for (mult, decay), ps in groups.items()],
        lr=lr,
    )


def warmup_cosine(warmup: int, total: int, floor: float = 0.01) -> Callable[[int], float]:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``floor`` x the base rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Clock:
    """Seconds since ``start()`` (0 before): a time budget's schedule and stop share it.

    ``cpu``: the process's CPU seconds instead of wall-clock ones, so runs compared at an equal
    budget on a machine shared with other work each get the same computation (benchmarks).
    """

    def __init__(self, cpu: bool = False) -> None:
        self.t0: float | None = None
        self._read = time.process_time if cpu else time.perf_counter

    def start(self) -> None:
        self.t0 = self._read()

    @property
    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else self._read() - self.t0


def budget_schedule(budget_s: float, clock: Clock, warmup_fraction: float = 0.05,
                    floor: float = 0.01) -> Callable[[int], float]:
    """Warm-up and cosine decay both by the clock: the decay ends when ``budget_s`` seconds are
    spent, however fast (or loaded) the machine is."""

    def factor(step: int) -> float:
        progress = min(1.0, clock.elapsed / budget_s)
        if progress < warmup_fraction:
            return max(progress / warmup_fraction, floor)
        progress = (progress - warmup_fraction) / (1 - warmup_fraction)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train_step(model: nn.Module, x: torch.Tensor, y: Any, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, dtype: torch.dtype | None, grad_clip: float,
               loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None) -> torch.Tensor:
    """One optimisation step of ``loss_fn(model(x), y)`` (default: the segmentation loss); returns the
    (detached) loss without synchronising."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(x)
    loss = (loss_fn or segmentation_loss)(logits, y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()


def validation_segmenter(model: nn.Module, class_names: Sequence[str], in_chans: int, device: torch.device,
                         dtype: torch.dtype | None):
    """The :class:`~napari_csunet.engine.predictor.Segmenter` that ``csunet evaluate`` would build for the
    saved model (same tiles, blending, normalisation), wrapped around the network being trained,
    so validation numbers are the numbers the saved model gets."""
    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.models.modelfile import ModelInfo

    info = ModelInfo(model.config.with_classes(len(class_names), in_chans), list(class_names))
    return Segmenter(model, info, device=device, amp=dtype is not None, channels_last=prefers_channels_last(device))


def evaluate(model: nn.Module, items: Sequence[LabelledImage], class_names: Sequence[str], in_chans: int,
             device: torch.device, dtype: torch.dtype | None, dist: DistInfo | None = None) -> dict[str, Any] | None:
    """Validation metrics over whole images (shared between ranks); None without validation data."""
    if not items:
        return None
    was_training = model.training
    segmenter = validation_segmenter(model, class_names, in_chans, device, dtype)
    k = len(class_names)
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    cm = np.zeros((k, k), dtype=np.int64)
    for item in items[rank::world]:
        cm += confusion_matrix(segmenter.predict(item.image, name=item.name).labels, item.labels, k)
    total = all_reduce_sum(torch.from_numpy(cm).to(device)).cpu().numpy()
    model.train(was_training)
    return metrics_from_confusion(total, class_names)


@dataclass
class FitState:
    """What a run did; ``best_step`` 0 means the starting model was never beaten."""

    initial_metrics: dict[str, Any] | None = None
    best_metrics: dict[str, Any] | None = None
    best_step: int | None = None
    steps: int = 0
    stopped: bool = False
    reason: str = "steps"
    saved: bool = False
    train_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def _score(metrics: dict[str, Any] | None) -> float:
    return -math.inf if not metrics or metrics.get("miou") is None else float(metrics["miou"])


@dataclass
class Run:
    """Everything ``fit`` needs, built by the job (see :func:`csunet_train.job.prepare_run`)."""

    model: nn.Module  # the bare network (saved and evaluated)
    train_model: nn.Module  # the same network, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    loader: Any
    val: list[LabelledImage]
    class_names: list[str]
    in_chans: int
    frozen: list[str]
    dist: DistInfo
    dtype: torch.dtype | None
    steps: int
    batch_size: int
    eval_every: int
    patience: int | None
    grad_clip: float
    keep_initial: bool  # the starting model is a candidate (fine-tuning): it must be beaten
    time_budget_s: float | None = None  # stop (and end the schedule) after this many seconds of training
    clock: Clock = field(default_factory=Clock)
    log_interval_s: float = 0.5
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] = segmentation_loss  # e.g. with pseudo-label weight
    #: scores a model instead of whole-image validation on ``val`` (e.g. the fair held-out blocks)
    validator: Callable[..., dict[str, Any] | None] | None = None
    after_step: Callable[[], None] | None = None  # e.g. a mean teacher's weight update
    #: the starting weights on the CPU when the caller keeps a copy anyway (the judge's blend): one
    #: copy instead of two (a ResNet50 + Swin-T model is 0.2 GB per copy)
    initial_state: dict[str, torch.Tensor] | None = None

    def evaluate(self) -> dict[str, Any] | None:
        if self.validator is not None:
            return self.validator(self.model, self.dist.device, self.dtype, self.dist)
        return evaluate(self.model, self.val, self.class_names, self.in_chans, self.dist.device, self.dtype, self.dist)


def _to_device(y: Any, device: torch.device) -> Any:
    """Labels, or a tuple of target tensors (labels, soft targets), on ``device``."""
    if isinstance(y, tuple | list):
        return tuple(t.to(device, non_blocking=True) for t in y)
    return y.to(device, non_blocking=True)


def fit(run: Run, emit: Emit, save: Callable[[int, dict[str, Any] | None, FitState], None],
        stop_requested: Callable[[], bool]) -> FitState:
    """Train ``run.steps`` steps with periodic validation, keeping (saving) the best model.

    Returns when the steps are done, when patience runs out, or after the step in which a stop was
    requested. Raises :class:`NonFiniteLoss` without saving the broken model.
    """
    state = FitState()
    device, dist = run.dist.device, run.dist
    state.initial_metrics = run.evaluate()
    emit({"event": "eval", "step": 0, "metrics": state.initial_metrics, "best": False})
    best_score = _score(state.initial_metrics) if run.keep_initial else -math.inf
    initial_state = None
    if run.keep_initial:
        initial_state = run.initial_state if run.initial_state is not None else copy.deepcopy(
            {k: v.cpu() for k, v in run.model.state_dict().items()})
        state.best_metrics, state.best_step = state.initial_metrics, 0
    since_best = 0
    start = last_log = time.perf_counter()
    window_steps, window_t0 = 0, start
    set_train_mode(run.model, run.frozen)

    def validate(step: int) -> None:
        nonlocal best_score, since_best
        metrics = run.evaluate()
        improved = metrics is None or _score(metrics) > best_score
        if improved:
            best_score, since_best = _score(metrics), 0
            state.best_metrics, state.best_step = metrics, step
            save(step, metrics, state)
            state.saved = True
        else:
            since_best += 1
        state.history.append({"step": step, "metrics": metrics})
        emit({"event": "eval", "step": step, "metrics": metrics, "best": improved})
        set_train_mode(run.model, run.frozen)

    step = 0
    last_eval = 0
    t_last = time.perf_counter()
    if run.clock.t0 is None:
        run.clock.start()
    for x, y in run.loader if run.steps else ():
        x, y = in_device_layout(x.to(device, non_blocking=True), device), _to_device(y, device)
        loss_t = train_step(run.train_model, x, y, run.optimizer, run.scaler, run.dtype, run.grad_clip,
                            loss_fn=run.loss_fn)
        run.scheduler.step()
        if run.after_step is not None:
            run.after_step()
        step += 1
        expired = run.time_budget_s is not None and run.clock.elapsed >= run.time_budget_s
        flags = torch.cat([loss_t.float().reshape(1), torch.tensor([float(stop_requested()), float(expired)], device=device)])
        if dist.distributed:
            all_reduce_sum(flags)  # every rank stops at the same step
        loss, stop, expired = float(flags[0]) / dist.world_size, bool(flags[1] > 0), bool(flags[2] > 0)
        now = time.perf_counter()
        state.train_time_s += now - t_last  # data loading included, validation not
        state.steps = step
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss} at step {step}")
        window_steps += 1
        if now - last_log >= run.log_interval_s or step in (1, run.steps) or stop or expired:
            rate = window_steps * run.batch_size * dist.world_size / max(now - window_t0, 1e-9)
            elapsed = now - start
            eta = elapsed / step * (run.steps - step)
            if run.time_budget_s is not None:
                eta = min(eta, max(0.0, run.time_budget_s - run.clock.elapsed))
            emit({"event": "step", "step": step, "steps": run.steps, "loss": loss,
                  "lr": run.optimizer.param_groups[0]["lr"] / run.optimizer.param_groups[0]["lr_mult"],
                  "images_per_s": rate, "elapsed_s": elapsed, "eta_s": eta})
            last_log, window_steps, window_t0 = now, 0, now
        if step % run.eval_every == 0 or step == run.steps or stop or expired:
            validate(step)
            last_eval = step
            if run.patience is not None and since_best >= run.patience and step < run.steps:
                state.reason = "early_stop"
                break
        if stop:
            state.stopped, state.reason = True, "stop"
            break
        if expired:
            state.reason = "time_budget"
            break
        if step >= run.steps:
            break
        t_last = time.perf_counter()
    if not state.saved and step > last_eval:
        validate(step)
    if not state.saved:  # nothing beat the start (fine-tuning), or no step was taken
        if initial_state is not None:
            run.model.load_state_dict(initial_state)
        state.best_metrics, state.best_step = state.initial_metrics, 0
        save(0, state.initial_metrics, state)
        state.saved = True
    return state
