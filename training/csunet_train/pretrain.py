"""Self-supervised pretraining: masked image modelling through the whole U-shaped network.

Random 32-pixel squares of each crop are blanked (set to the image mean) and the network, encoders
and decoder together, learns to paint them back (L1 on the blanked pixels, SimMIM's objective).
Why this objective, and what it was measured to give, is in docs/pretraining.md. The job speaks the
same protocol as supervised training: JSON-lines events, stop file / SIGINT, torchrun.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from napari_csunet.engine.device import in_device_layout
from napari_csunet.models.modelfile import PRETRAINING_TASK, ModelInfo

from .begin import begin_job, device_name, ignore_sigint
from .data import DataError, LabelledImage
from .events import Emit, StopControl
from .pretrain_config import PretrainConfig
from .unlabelled import find_images, read_unlabelled
from .validation import ConfigError

__all__ = ["patch_mask", "mim_loss", "mask_batch", "reconstruction_names", "run_pretrain"]


def patch_mask(batch: int, h: int, w: int, patch: int, ratio: float, device: torch.device,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1, H, W) bool: exactly ``round(ratio * n)`` of the n ``patch``-pixel squares are True."""
    gh, gw = h // patch, w // patch
    n = gh * gw
    k = max(1, min(n - 1, int(round(ratio * n))))
    scores = torch.rand(batch, n, generator=generator, device=generator.device if generator else device)
    chosen = torch.zeros(batch, n, dtype=torch.bool, device=scores.device)
    chosen.scatter_(1, scores.argsort(dim=1)[:, :k], True)
    mask = chosen.view(batch, 1, gh, gw).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return mask.to(device)


def mask_batch(x: torch.Tensor, valid: torch.Tensor, patch: int, ratio: float,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Blank random squares of standardised crops; returns (input, (target, loss weight))."""
    mask = patch_mask(x.shape[0], x.shape[-2], x.shape[-1], patch, ratio, x.device, generator)
    weight = (mask & valid.unsqueeze(1)).to(x.dtype)
    return x.masked_fill(mask, 0.0), (x, weight)


def mim_loss(pred: torch.Tensor, target_weight: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean absolute error over the blanked, real (not padding) pixels."""
    target, weight = target_weight
    err = (pred.float() - target).abs() * weight
    return err.sum() / (weight.sum() * pred.shape[1]).clamp(min=1.0)


def reconstruction_names(in_chans: int) -> list[str]:
    """Output names of a pretrained model: one reconstructed intensity per input channel."""
    return ["reconstruction"] if in_chans == 1 else [f"reconstruction {c}" for c in "RGB"[:in_chans]]


class ReconstructionProbe:
    """Fixed crops and masks of held-out images: the reconstruction error, comparable over a run."""

    def __init__(self, items: list[LabelledImage], cfg: PretrainConfig, in_chans: int, device: torch.device) -> None:
        from .sampling import CropDataset, prepare_image

        prepared = [prepare_image(it, in_chans, cfg.crop, cfg.seed + 10_000 + i) for i, it in enumerate(items)]
        crops = CropDataset(prepared, cfg.crop, 2 * len(items), 0.0, 0.0, cfg.seed + 10_000)
        xs, ys = zip(*(crops[i] for i in range(len(crops))), strict=True)
        gen = torch.Generator().manual_seed(cfg.seed + 20_000)
        x_in, (target, weight) = mask_batch(torch.stack(xs), torch.stack(ys) > 0, cfg.mask_patch, cfg.mask_ratio, gen)
        self.x_in, self.target, self.weight = x_in.to(device), target.to(device), weight.to(device)
        self.batch = cfg.batch_size
        self.names = [it.name for it in items]

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        err = total = mean_err = 0.0
        for i in range(0, len(self.x_in), self.batch):
            sl = slice(i, i + self.batch)
            with torch.autocast(self.x_in.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                pred = model(self.x_in[sl])
            w = self.weight[sl]
            err += float(((pred.float() - self.target[sl]).abs() * w).sum())
            mean_err += float((self.target[sl].abs() * w).sum())  # what blanking (predicting the mean) leaves
            total += float(w.sum()) * pred.shape[1]
        model.train(was_training)
        total = max(total, 1.0)
        return {"recon_l1": err / total, "mean_l1": mean_err / total, "recon_gain": 1.0 - err / max(mean_err, 1e-9)}


def _start_model(cfg: PretrainConfig) -> tuple[Any, ModelInfo | None, int]:
    """(network with a reconstruction head, the file's description if any, steps already done)."""
    from napari_csunet.models import build_model, get_preset, with_new_head
    from napari_csunet.models.catalog import resolve_model
    from napari_csunet.models.modelfile import ModelFileError, load_model_file

    if cfg.resume or cfg.model:
        spec = cfg.out if cfg.resume else cfg.model
        try:
            _, path = resolve_model(spec)
            model, info = load_model_file(path or spec, "cpu")
        except (KeyError, FileNotFoundError, ModelFileError) as exc:
            hint = "; start without --resume" if cfg.resume else ""
            raise ConfigError(str(exc).strip("'\"") + hint) from None
        if cfg.resume and not info.is_pretraining_only:
            raise ConfigError(f"--resume: {cfg.out} is not a pretraining checkpoint; use --from to start from it")
        prior = int(info.provenance.get("steps", 0) or 0) if cfg.resume else 0
        return with_new_head(model, model.config.in_chans), info, prior
    try:
        preset = get_preset(cfg.preset)
    except KeyError as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    return build_model(preset.name, num_classes=cfg.in_chans, in_chans=cfg.in_chans), None, 0


def _split(items: list[LabelledImage], n_val: int, seed: int) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold ``n_val`` images out (seeded), but never more than a fifth; none held out: probe training images."""
    import numpy as np

    n_val = min(n_val, len(items) // 5)
    if n_val == 0:
        return items, items[:4]
    order = np.random.default_rng(seed).permutation(len(items))
    held = set(order[:n_val].tolist())
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def run_pretrain(cfg: PretrainConfig, emit: Emit, stop: StopControl | None = None) -> dict[str, Any]:
    """Run one pretraining job and return its ``done`` event."""
    from napari_csunet.models import count_parameters
    from napari_csunet.models.modelfile import save_model_file

    from . import dist as distmod
    from .loop import amp_dtype, budget_schedule, build_optimizer, train_step, warmup_cosine
    from .sampling import CropDataset, prepare_image

    t_start, clock, dist, emit, stop = begin_job(cfg, emit, stop)
    try:
        torch.manual_seed(cfg.seed + dist.rank)
        paths, excluded = find_images(cfg.images, cfg.exclude)
        if not paths:
            raise DataError(f"no image files in {', '.join(cfg.images)}"
                            + (f" after excluding {len(excluded)} (patterns {cfg.exclude})" if excluded else ""))
        items, problems = read_unlabelled(paths, cfg.max_side)
        for message in problems:
            emit({"event": "warning", "message": message})
        model, previous, prior = _start_model(cfg)
        in_chans = model.config.in_chans
        device = dist.device
        model = in_device_layout(model.to(device), device)
        train_items, val_items = _split(items, cfg.val_images, cfg.seed)
        probe = ReconstructionProbe(val_items, cfg, in_chans, device)
        remaining = max(0, cfg.steps - prior)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, [], 1.0)
        by_step = warmup_cosine(cfg.warmup, cfg.steps)  # a resumed run continues the same curve
        schedule = budget_schedule(cfg.time_budget_s, clock) if cfg.time_budget_s else (lambda s: by_step(s + prior))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        dtype = amp_dtype(device, cfg.amp)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        train_model = model
        if dist.distributed:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        prepared = [prepare_image(it, in_chans, cfg.crop, cfg.seed + i) for i, it in enumerate(train_items)]
        dataset = CropDataset(prepared, cfg.crop, remaining * cfg.batch_size, cfg.aug_strength, 0.0,
                              cfg.seed + prior, dist.rank)
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                             pin_memory=device.type == "cuda", worker_init_fn=ignore_sigint)
        emit({"event": "started", "mode": cfg.mode, "steps": cfg.steps, "prior_steps": prior,
              "device": device_name(device), "train_images": len(train_items), "val_images": len(val_items),
              "excluded_images": len(excluded), "params": count_parameters(model), "world_size": dist.world_size,
              "out": cfg.out})
        record = {
            "task": PRETRAINING_TASK,
            "objective": {"name": "masked-image-modelling", "loss": "L1 on blanked pixels", "mask_ratio": cfg.mask_ratio,
                          "mask_patch": cfg.mask_patch, "crop": cfg.crop, "aug_strength": cfg.aug_strength},
            "corpus": {"sources": list(cfg.images), "exclude": list(cfg.exclude), "images": len(items),
                       "excluded_files": sorted(p.name for p in excluded),
                       "files": sorted(p.name for p in paths), "probe_images": probe.names},
            "started_from": (f"{cfg.out} (resumed)" if cfg.resume else cfg.model) or f"preset {cfg.preset}",
            "device": device_name(device), "world_size": dist.world_size,
            "hyperparameters": {k: getattr(cfg, k) for k in ("lr", "batch_size", "weight_decay", "seed", "steps")},
            "previous": {k: previous.provenance.get(k) for k in ("task", "steps", "metrics", "time")} if previous else None,
        }
        sources = dict(previous.sources) if previous else {}
        preset = previous.preset if previous else cfg.preset
        name = cfg.name or (previous.name if cfg.resume and previous else "") or Path(cfg.out).stem
        description = cfg.description or (previous.description if cfg.resume and previous else "") or (
            f"{preset} pretrained by masked image modelling on {len(items)} unlabelled micrographs; "
            "fine-tune it on labelled images before segmenting")

        def save(step: int, metrics: dict[str, Any]) -> None:
            if not dist.is_main:
                return
            provenance = record | {"steps": step, "run_steps": step - prior, "metrics": metrics,
                                   "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "elapsed_s": round(time.perf_counter() - t_start, 1)}
            info = ModelInfo(model.config, reconstruction_names(in_chans), [], preset, {"mode": "image"}, sources,
                             provenance, name, description)
            save_model_file(cfg.out, model, info, half=cfg.half)
            emit({"event": "checkpoint", "step": step, "path": str(cfg.out), "metrics": metrics})

        initial = probe(model, dtype)
        best_l1 = initial["recon_l1"] if initial is not None else float("inf")
        emit({"event": "eval", "step": prior, "metrics": initial, "best": False})
        step, reason, stopped, train_time = prior, "steps", False, 0.0
        metrics, last_log, t_last = initial, 0.0, time.perf_counter()
        model.train()
        for x, y in loader if remaining else ():
            x = in_device_layout(x.to(device, non_blocking=True), device)
            x_in, target = mask_batch(x, y.to(device, non_blocking=True) > 0, cfg.mask_patch, cfg.mask_ratio)
            loss_t = train_step(train_model, x_in, target, optimizer, scaler, dtype, cfg.grad_clip, loss_fn=mim_loss)
            scheduler.step()
            step += 1
            expired = cfg.time_budget_s is not None and clock.elapsed >= cfg.time_budget_s
            flags = torch.stack([loss_t.float(), torch.tensor(float(stop.requested), device=device),
                                 torch.tensor(float(expired), device=device)])
            if dist.distributed:
                distmod.all_reduce_sum(flags)
            loss, stopped, expired = float(flags[0]) / dist.world_size, bool(flags[1] > 0), bool(flags[2] > 0)
            now = time.perf_counter()
            train_time += now - t_last
            if now - last_log >= 0.5 or step in (prior + 1, cfg.steps) or stopped or expired:
                emit({"event": "step", "step": step, "steps": cfg.steps, "loss": loss,
                      "lr": optimizer.param_groups[0]["lr"], "elapsed_s": now - t_start,
                      "images_per_s": (step - prior) * cfg.batch_size * dist.world_size / max(train_time, 1e-9)})
                last_log = now
            finished = stopped or expired or step >= cfg.steps
            if step % cfg.eval_every == 0 or finished:
                metrics = probe(model, dtype)
                improved = metrics is not None and metrics["recon_l1"] < best_l1
                best_l1 = metrics["recon_l1"] if improved else best_l1
                # the file is the latest checkpoint (what --resume continues), best or not
                emit({"event": "eval", "step": step, "metrics": metrics, "best": improved, "saved": True})
                save(step, metrics)
            if finished:
                reason = "stop" if stopped else "time_budget" if expired else "steps"
                break
            t_last = time.perf_counter()
        if step == prior:  # nothing to do (already complete, or zero steps): still leave a loadable file
            save(step, metrics)
        done = {"event": "done", "mode": cfg.mode, "path": str(cfg.out), "steps": step, "stopped": stopped,
                "reason": reason, "initial_metrics": initial, "best_metrics": metrics, "best_step": step,
                "elapsed_s": time.perf_counter() - t_start, "train_time_s": train_time}
        emit(done)
        return done
    finally:
        distmod.cleanup()
