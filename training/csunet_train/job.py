"""The job entry point: ``python -m csunet_train.job JOB.json`` (also under ``torchrun``).

Prints JSON-lines events on stdout (started, step, eval, checkpoint, warning, done, error) and
nothing else; logs go to stderr. SIGINT/SIGTERM or the stop file end the run after the current
step with the best model saved (exit 0); failures print an ``error`` event and exit non-zero
(2 data, 3 out of memory, 4 NaN loss, 1 internal), keeping the best model written so far.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .begin import begin_job, device_name, ignore_sigint
from .config import ConfigError, TrainConfig, load_job
from .data import DataError, LabelledImage, TrainingData, fingerprint, load_data, read_unlabelled
from .events import Emit, StopControl, stdout_events
from .fair import annotation_digest, fair_split, missing_classes_text
from .fair import summary as fair_summary
from .judge import FairValidation
from .pretrain_config import PretrainConfig
from .unseen import hold_out_unseen
from .verdict import judge_finetune

__all__ = ["run_job", "run_and_report", "main", "EXIT_CODES"]

EXIT_CODES = {"data": 2, "oom": 3, "nan": 4, "internal": 1}


@dataclass
class Start:
    """The starting network and what is known about it before training."""

    model: Any
    preset: str | None
    config: Any
    sources: dict[str, Any]
    pretrained: list[str]  # encoders whose weights were not random
    previous: dict[str, Any]  # provenance of the model file started from
    class_names: list[str] | None
    class_colors: list[str] | None
    name: str
    description: str
    pretraining_only: bool = False  # a self-supervised model: its outputs are pixels, not classes
    untrained_head: bool = False  # a new output layer never trained (the GUI's model for new classes)


def _load_start(cfg: TrainConfig) -> Start:
    """The model file to continue from, if any (its classes name data that names none)."""
    from napari_csunet.models.catalog import resolve_model
    from napari_csunet.models.modelfile import ModelFileError, has_untrained_head, load_model_file

    try:
        _, path = resolve_model(cfg.model)
        model, info = load_model_file(path or cfg.model, "cpu")
    except (KeyError, FileNotFoundError, ModelFileError) as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    present = [n for n in ("cnn", "swin") if hasattr(model, n)]
    own = not info.is_pretraining_only  # a pretrained model's outputs are pixels: the data names the classes
    return Start(model, info.preset, info.config, dict(info.sources), present, dict(info.provenance),
                 info.class_names if own else None, info.class_colors if own else None, info.name if own else "",
                 info.description if own else "", pretraining_only=not own,
                 untrained_head=has_untrained_head(info.provenance))


def _fit_head(start: Start, class_names: list[str], emit: Emit) -> dict[str, Any] | None:
    """Give the starting model an output layer for the data's classes when its own do not fit: another
    count, a self-supervised model, or classes the data names otherwise (another material's phases:
    keeping the layer would also distil the old phases' answers onto the new ones)."""
    from napari_csunet.models.factory import fit_head
    from napari_csunet.models.modelfile import numbered_class_names

    had = start.model.config.num_classes

    def named(names: list[str] | None) -> bool:  # "class 1..K" names nothing
        return bool(names) and list(names) != numbered_class_names(len(names))

    def key(names: list[str]) -> list[str]:
        return [n.strip().casefold() for n in names]

    named_otherwise = (named(start.class_names) and named(class_names)
                       and key(start.class_names) != key(class_names))
    reason = "pretrained" if start.pretraining_only else "other classes" if named_otherwise else "class count"
    start.model, head = fit_head(start.model, class_names, reason, always=start.pretraining_only or named_otherwise)
    if head is None:
        if start.class_names and list(start.class_names) != list(class_names):
            emit({"event": "warning", "message": f"the model's classes {start.class_names} are trained as "
                  f"{class_names} (unnamed classes: output channel i keeps its weights for label i)"})
        return None
    start.config = start.model.config
    what = ("a self-supervised pretrained model" if start.pretraining_only else
            f"a model of the classes {list(start.class_names or [])}" if named_otherwise else f"a model of {had} classes")
    emit({"event": "warning", "message": f"started from {what}: its output layer was re-initialised for the "
          f"{len(class_names)} classes {class_names}; every other weight is kept"
          + ("; to continue training its own classes instead, name them as the model does" if named_otherwise
             else "")})
    return head


def _build_start(cfg: TrainConfig, data: TrainingData) -> Start:
    """A preset with random weights, then the pretrained encoder weights asked for (as the GUI does)."""
    from napari_csunet.models.factory import create_model
    from napari_csunet.weights import WeightsError

    try:
        model, info = create_model(cfg.preset, data.class_names, preset=True, in_chans=data.in_chans,
                                   cnn=cfg.weights.get("cnn"), swin=cfg.weights.get("swin"),
                                   allow_download=cfg.allow_download)
    except KeyError as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    except WeightsError as exc:  # missing file (no download allowed), unknown source, bad checkpoint
        raise ConfigError(str(exc)) from None
    return Start(model, info.preset, info.config, info.sources, [k for k in ("cnn", "swin") if cfg.weights.get(k)],
                 {}, None, None, "", info.description)


def _fair_validation(start: Start, data: TrainingData, in_chans: int, emit: Emit) -> FairValidation | None:
    """Hold reviewed blocks of corrected images out of training (see :mod:`csunet_train.fair`);
    None (and a warning) when there is nothing fair to judge a new model by."""
    if data.val or not any(it.reviewed is not None for it in data.train):
        return None
    split = fair_split(data.train, data.class_names, start.previous.get("trained_on") or [])
    if split.missing and split.reviewed_pixels:
        emit({"event": "warning", "message": missing_classes_text(split.missing)})
    if not split.fair:
        n = split.held_out("new")
        emit({"event": "warning", "message": (
            "nothing fair to validate on: " + (f"only {n:,} reviewed pixels could be held out" if n else
                                               "no corrected area is marked as reviewed (painted pixels only)")
            + "; training runs all its steps and the new model is offered, not made current")})
        return None
    data.train = split.train
    return FairValidation(split, list(data.class_names), in_chans)


def _add_soft_targets(model, data: TrainingData, in_chans: int, device, dtype,
                      unlabelled: Sequence[LabelledImage] = ()) -> bool:
    """The starting model's probabilities on the training and ``unlabelled`` images (distillation
    targets), predicted once as the GUI would (whole image, same tiles); not when every training
    image is (almost) fully labelled and there are no unlabelled ones."""
    from .loop import validation_segmenter

    if not unlabelled and all(item.labelled_pixels >= 0.99 * item.labels.size for item in data.train):
        return False
    segmenter = validation_segmenter(model, data.class_names, in_chans, device, dtype)
    for item in [*data.train, *unlabelled]:
        item.soft = segmenter.predict(item.image, want_probs=True, name=item.name).probs
    return True


def learning_rates(cfg: TrainConfig, new_head: bool) -> tuple[float, float]:
    """(lr, encoder_lr_mult): a new output layer means a new material's model, learnt by the whole
    network at ``new_head_lr`` (few-shot benchmark, docs/training.md); otherwise the job's rates
    (a trained model's encoders move slowly, so what it knew stays)."""
    if new_head:
        return float(cfg.new_head_lr), float(cfg.new_head_encoder_lr_mult)
    return float(cfg.lr), float(cfg.encoder_lr_mult)


def _anchor(model, weight: float):
    """L2-SP (Li et al. 2018): ``weight`` x the squared distance of the weights to the starting ones."""
    import torch

    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    params = dict(model.named_parameters())

    def penalty() -> torch.Tensor:
        return weight * sum(((params[n] - p0) ** 2).sum() for n, p0 in start.items())

    return penalty


def _anchored(loss_fn, penalty):
    def loss(logits, target):
        return loss_fn(logits, target) + penalty()

    return loss


def _collect_warnings(fn, *args, **kwargs) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def run_job(cfg: TrainConfig, emit: Emit, stop: StopControl | None = None,
            train: Sequence[LabelledImage] | None = None, val: Sequence[LabelledImage] | None = None) -> dict[str, Any]:
    """Run one job and return its ``done`` event; ``train``/``val`` add in-memory labelled images."""
    import torch

    from napari_csunet.engine.device import in_device_layout
    from napari_csunet.models import count_parameters
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    from . import dist as distmod
    from .loop import (
        Run,
        amp_dtype,
        budget_schedule,
        build_optimizer,
        fit,
        freeze_encoders,
        validation_segmenter,
        warmup_cosine,
    )
    from .losses import correction_loss, segmentation_loss
    from .sampling import CropDataset, prepare_image
    from .semi import MeanTeacher, SemiLoss

    t_start, clock, dist, emit, stop = begin_job(cfg, emit, stop)
    if cfg.threads:  # e.g. the live update leaves a core to napari: two processes spinning on every core crawl
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        start = _load_start(cfg) if cfg.model else None
        # a new material's few images all train (new_head_val_fraction): decided before the data is read
        new_material = start is not None and (start.pretraining_only or start.untrained_head)
        data_cfg = dataclasses.replace(cfg, val_fraction=cfg.new_head_val_fraction) if new_material else cfg
        data, caught = _collect_warnings(load_data, data_cfg, start.class_names if start else None,
                                         start.class_colors if start else None, list(train or []), list(val or []))
        for message in caught + data.warnings:
            emit({"event": "warning", "message": message})
        head = _fit_head(start, data.class_names, emit) if start else None
        start = start or _build_start(cfg, data)
        model = in_device_layout(start.model.to(dist.device), dist.device)  # fit() feeds batches alike
        in_chans = start.config.in_chans
        dtype = amp_dtype(dist.device, cfg.amp)
        trained_on = [annotation_digest(it) for it in data.train if it.reviewed is not None]
        validation = _fair_validation(start, data, in_chans, emit)
        # an output layer no step has trained: made here (other classes, a pretrained model) or the
        # GUI's new model; it learns at the few-shot rates and knows no answers worth distilling
        new_layer = head is not None or start.untrained_head
        distill = cfg.distill_weight > 0 and cfg.model is not None and not new_layer
        uses_unlabelled = distill or cfg.semi_weight > 0
        unlabelled = read_unlabelled(cfg.unlabelled) if uses_unlabelled and cfg.unlabelled else []
        if cfg.unlabelled and not uses_unlabelled:
            emit({"event": "warning", "message": "unlabelled images are used only with distillation (fine-tuning "
                  "a model file) or semi-supervised training (semi_weight > 0); they are ignored"})
        distill = distill and _add_soft_targets(model, data, in_chans, dist.device, dtype, unlabelled)
        semi = cfg.semi_weight > 0 and not distill  # distillation already gives every unlabelled pixel a target
        unseen = hold_out_unseen([*data.train, *unlabelled]) if distill else None
        start_state = ({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                       if unseen is not None else None)  # a blend with the fine-tuned model may be judged
        anchor = _anchor(model, cfg.anchor_weight) if cfg.anchor_weight > 0 and cfg.model is not None else None
        frozen = freeze_encoders(model, {"cnn": cfg.freeze_cnn, "swin": cfg.freeze_swin})
        for name in ("cnn", "swin"):
            if getattr(cfg, f"freeze_{name}") and name not in frozen:
                emit({"event": "warning", "message": f"freeze_{name}: this model has no {name} encoder"})
        lr, encoder_lr_mult = learning_rates(cfg, new_layer)
        optimizer = build_optimizer(model, lr, cfg.weight_decay, start.pretrained, encoder_lr_mult)
        schedule = (budget_schedule(cfg.time_budget_s, clock) if cfg.time_budget_s
                    else warmup_cosine(cfg.warmup, cfg.steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        train_model = model
        if dist.distributed:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        prepared = [prepare_image(it, in_chans, cfg.crop, cfg.seed + i, pseudo=cfg.pseudo_weight > 0 and not distill)
                    for i, it in enumerate(data.train)]
        context = [prepare_image(it, in_chans, cfg.crop, cfg.seed + 1000 + i) for i, it in enumerate(unlabelled)]
        dataset = CropDataset(prepared, cfg.crop, cfg.steps * cfg.batch_size, cfg.aug_strength, cfg.class_balance,
                              cfg.seed, dist.rank, context=cfg.context_crops if distill else 0.0,
                              unlabelled=context if distill or semi else None, unlabelled_share=cfg.unlabelled_share,
                              weak_view=semi)
        if distill:
            loss_fn = functools.partial(correction_loss, distill_weight=cfg.distill_weight,
                                        temperature=cfg.distill_temperature, balanced=cfg.balanced_ce,
                                        balanced_distill=cfg.balanced_distill)
        else:
            loss_fn = functools.partial(segmentation_loss, pseudo_weight=cfg.pseudo_weight, balanced=cfg.balanced_ce)
        teacher = MeanTeacher(model, cfg.ema_decay) if semi else None
        if teacher is not None:
            loss_fn = SemiLoss(loss_fn, teacher, cfg.semi_weight, cfg.semi_threshold, dtype)
        if anchor is not None:
            loss_fn = _anchored(loss_fn, anchor)
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False,
                                             num_workers=cfg.num_workers, pin_memory=dist.device.type == "cuda",
                                             persistent_workers=False, worker_init_fn=ignore_sigint)
        run = Run(model, train_model, optimizer, scheduler, scaler, loader, data.val, data.class_names, in_chans,
                  frozen, dist, dtype, cfg.steps, cfg.batch_size, cfg.eval_every, cfg.patience, cfg.grad_clip,
                  keep_initial=cfg.model is not None, time_budget_s=cfg.time_budget_s, clock=clock,
                  loss_fn=loss_fn, validator=validation,
                  after_step=functools.partial(teacher.update, model) if teacher is not None else None,
                  initial_state=start_state)
        emit({"event": "started", "steps": cfg.steps, "device": device_name(dist.device),
              "train_images": len(data.train), "val_images": len(data.val), "unlabelled_images": len(context),
              "params": count_parameters(model),
              "threads": torch.get_num_threads(), "lr": lr, "encoder_lr_mult": encoder_lr_mult,
              "classes": data.class_names, "world_size": dist.world_size, "mode": cfg.mode, "out": cfg.out})
        prior_steps = int(start.previous.get("steps", 0) or 0)
        record = {
            "mode": cfg.mode, "recipe": cfg.recipe, "started_from": cfg.model or f"preset {start.preset}",
            "data_fingerprint": fingerprint(data.train + data.val),
            "train_images": [it.name for it in data.train], "val_images": [it.name for it in data.val],
            "device": device_name(dist.device), "world_size": dist.world_size,
            "hyperparameters": {k: getattr(cfg, k) for k in ("crop", "batch_size", "aug_strength", "freeze_cnn",
                                                           "freeze_swin", "seed", "weight_decay")}
            | {"lr": lr, "encoder_lr_mult": encoder_lr_mult},
            "previous": {k: start.previous.get(k) for k in ("task", "steps", "metrics", "time", "data_fingerprint")}
            if start.previous else None,
            "head_reinitialised": head,
            "trained_on": trained_on,  # label digests: the next round's "earlier" images
            "validation": fair_summary(validation.split) if validation is not None else None,
            "distillation": {"weight": cfg.distill_weight, "temperature": cfg.distill_temperature,
                             "balanced": cfg.balanced_distill,
                             "unlabelled_images": [it.name for it in unlabelled]} if distill else None,
            "semi_supervised": {"weight": cfg.semi_weight, "threshold": cfg.semi_threshold, "ema_decay": cfg.ema_decay,
                                "unlabelled_images": [it.name for it in unlabelled]} if semi else None,
        }
        best_blocks: dict[str, Any] = {}
        name = cfg.model_name(start.name)  # once: never the start's name, nor a shipped one

        def save(step: int, metrics: dict[str, Any] | None, state) -> None:
            if not dist.is_main:
                return
            provenance = record | {"steps": prior_steps + step, "run_steps": step, "metrics": metrics,
                                   "initial_metrics": state.initial_metrics,
                                   "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "elapsed_s": round(time.perf_counter() - t_start, 1)}
            info = ModelInfo(start.config, data.class_names, data.class_colors, start.preset, {"mode": "image"},
                             start.sources, provenance, name,
                             cfg.description or start.description)
            save_model_file(cfg.out, model, info, half=cfg.half)
            if validation is not None:
                best_blocks["cms"] = validation.latest
            if unseen is not None and step > 0:  # to measure what it changes where it did not train
                best_blocks["state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            emit({"event": "checkpoint", "step": step, "path": str(cfg.out), "metrics": metrics})

        state = fit(run, emit, save, lambda: stop.requested)
        done = {"event": "done", "path": str(cfg.out), "steps": state.steps, "stopped": state.stopped,
                "reason": state.reason, "initial_metrics": state.initial_metrics, "best_metrics": state.best_metrics,
                "best_step": state.best_step, "elapsed_s": time.perf_counter() - t_start,
                "train_time_s": state.train_time_s}
        if cfg.mode == "finetune" or cfg.model is not None:
            painted_only = not any(it.reviewed is not None and it.reviewed.any() for it in data.train)
            segmenter = validation_segmenter(model, data.class_names, in_chans, dist.device, dtype)
            verdict = judge_finetune(
                model, start_state, best_blocks.get("state") if dist.is_main else None, validation,
                best_blocks.get("cms"), unseen, lambda it: segmenter.predict(it.image, name=it.name).labels,
                lambda m: validation.block_confusion(m, dist.device, dtype), data.class_names, state.steps,
                state.best_step, painted_only, len(unlabelled), (cfg.unchecked_limit, cfg.unchecked_class_limit))
            if verdict.blended is not None:  # the blend (the judge left it in ``model``) replaces the best one in the file
                record["blend"] = {"fine_tuned_weight": verdict.decision["blend"], "method": "WiSE-FT",
                                   "blends": verdict.decision.get("blends"),
                                   "tried": verdict.decision.get("tried")}
                done["best_metrics"] = validation.metrics(verdict.blended_cms)
                save(state.best_step, done["best_metrics"], state)
            done["decision"] = verdict.decision
        emit(done)
        return done
    finally:
        distmod.cleanup()


def _error_kind(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for the error event."""
    from napari_csunet.engine.device import is_out_of_memory
    from napari_csunet.images.datasets import MaskError
    from napari_csunet.images.reading import ImageError

    from .loop import NonFiniteLoss

    if isinstance(exc, ConfigError | DataError | ImageError | MaskError):
        return "data", str(exc)
    if is_out_of_memory(exc):
        return "oom", ("out of memory: use a smaller crop (e.g. 256) or batch size, a smaller preset, or freeze "
                       f"an encoder ({str(exc).splitlines()[0][:200]})")
    if isinstance(exc, NonFiniteLoss):
        return "nan", (f"{exc}: training diverged; lower the learning rate or turn off AMP. The best model so far "
                       "(if any) is kept")
    return "internal", f"{type(exc).__name__}: {exc}"


def run_and_report(cfg: TrainConfig | PretrainConfig, emit: Emit, stop: StopControl | None = None) -> int:
    """``run_job`` (or ``run_pretrain``) with failures turned into an ``error`` event and an exit code."""
    try:
        if isinstance(cfg, PretrainConfig):
            from .pretrain import run_pretrain

            run_pretrain(cfg, emit, stop)
        else:
            run_job(cfg, emit, stop)
        return 0
    except Exception as exc:
        kind, message = _error_kind(exc)
        if kind == "internal":
            traceback.print_exc(file=sys.stderr)
        import os

        if os.environ.get("RANK", "0") == "0":
            emit({"event": "error", "kind": kind, "message": message})
        else:
            print(f"error ({kind}): {message}", file=sys.stderr)
        return EXIT_CODES[kind]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    emit = stdout_events()  # stray prints from libraries must not break the event stream
    try:
        if len(argv) != 1:
            raise ConfigError("usage: python -m csunet_train.job JOB.json")
        cfg = load_job(argv[0])
    except ConfigError as exc:
        emit({"event": "error", "kind": "data", "message": str(exc)})
        return EXIT_CODES["data"]
    with StopControl(cfg.stop_file) as stop:
        return run_and_report(cfg, emit, stop)


if __name__ == "__main__":
    sys.exit(main())
