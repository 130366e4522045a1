"""The training loop: schedule, step, evaluate, adapt levels, checkpoint, log, in that order.

Everything an epoch produces is written atomically at its end, so an interrupted run loses at most
the epoch in progress, and ``resume=True`` continues from the last finished epoch with the same
result as an uninterrupted run (the data order is a function of seed and epoch, and the model,
optimiser and level state are restored exactly).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig, TrainConfig, model_config_from_dict, model_config_to_dict
from fsqdeploy.data import ImageSplits, image_batches, stream_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_text_atomic, write_with
from fsqdeploy.images import images_to_float
from fsqdeploy.metrics import code_bits, psnr, ssim
from fsqdeploy.model import FSQVAE
from fsqdeploy.train import distributed
from fsqdeploy.train.adaptive import reallocate_levels
from fsqdeploy.train.losses import fsq_vae_loss, rate_weight_at
from fsqdeploy.train.schedules import SCHEDULES, progress_of, temperature_at
from fsqdeploy.train.stats import code_stats

STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FSQDeployError(f"train: device {name!r} requested but CUDA is not available. Note: use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FSQDeployError(f"train: unknown device {name!r}. Note: use auto, cpu or cuda[:N]") from None


def validate_train_config(cfg: TrainConfig, arch: str = "paper") -> None:
    if cfg.workers < 0:
        raise FSQDeployError(f"train: --workers must not be negative, got {cfg.workers} (0 decodes in the "
                             "training process)")
    if arch == "conv":
        if cfg.steps < 1:
            raise FSQDeployError(f"train: --steps must be at least 1, got {cfg.steps}")
        if cfg.minutes < 0 or cfg.eval_every < 0:
            raise FSQDeployError("train: --minutes and --eval-every must not be negative")
    elif cfg.epochs < 1:
        raise FSQDeployError(f"train: --epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise FSQDeployError(f"train: --batch-size must be at least 1, got {cfg.batch_size}")
    if not cfg.lr > 0:
        raise FSQDeployError(f"train: --lr must be positive, got {cfg.lr}")
    if cfg.recon_loss not in ("bce", "mse"):
        raise FSQDeployError(f"train: unknown reconstruction loss {cfg.recon_loss!r}. Note: use bce or mse")
    if cfg.temperature_schedule not in SCHEDULES:
        raise FSQDeployError(
            f"train: unknown temperature schedule {cfg.temperature_schedule!r}. Note: use one of {', '.join(SCHEDULES)}"
        )
    if not (cfg.temperature_start > 0 and cfg.temperature_end > 0):
        raise FSQDeployError("train: temperatures must be positive")
    if not 0 < cfg.ema_decay < 1:
        raise FSQDeployError(f"train: --ema-decay must lie in (0, 1), got {cfg.ema_decay}")
    if min(cfg.recon_weight, cfg.quant_weight, cfg.entropy_weight, cfg.rate_weight) < 0:
        raise FSQDeployError("train: loss weights must not be negative (0 turns a term off)")
    if not 0 <= cfg.rate_from <= 1:
        raise FSQDeployError(f"train: --rate-from is a fraction of the run in [0, 1], got {cfg.rate_from}")
    bad = [e for e in cfg.adapt_epochs if not 1 <= e <= max(cfg.epochs, 1)]
    if bad:
        raise FSQDeployError(f"train: adaptation epoch {bad[0]} is outside 1..{cfg.epochs}")


def adaptation_epochs(cfg: TrainConfig) -> list[int]:
    """Epochs (1-based) after which levels are reallocated; empty unless --adaptive-levels."""
    if not cfg.adaptive_levels:
        return []
    if cfg.adapt_epochs:
        return sorted(set(cfg.adapt_epochs))
    return sorted({max(1, round(cfg.epochs * 0.2)), max(1, round(cfg.epochs * 0.4))})


@dataclass
class EpochLog:
    epoch: int
    metrics: dict[str, Any]


def batches(images: np.ndarray, batch_size: int, generator: torch.Generator | None) -> list[np.ndarray]:
    order = torch.randperm(len(images), generator=generator).numpy() if generator else np.arange(len(images))
    return [order[i : i + batch_size] for i in range(0, len(images), batch_size)]


@torch.no_grad()
def evaluate(
    model: FSQVAE, images: np.ndarray, cfg: TrainConfig, device: torch.device, batch_size: int = 256
) -> dict[str, float]:
    """Losses and image metrics on ``images`` with inference-mode quantization (thresholds)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {"loss": 0.0, "recon_loss": 0.0, "quant_loss": 0.0, "psnr": 0.0, "ssim": 0.0}
    n = 0
    temperature = model.quantizer.temperature
    index_batches = batches(images, batch_size, None)
    for idx, pixels in zip(index_batches, image_batches(images, index_batches, cfg.workers)):
        x = torch.from_numpy(images_to_float(pixels)).to(device)
        out = model(x)
        terms = fsq_vae_loss(
            out.logits, x, list(model.quantizer.stages), out.stages, temperature, cfg.recon_loss,
            cfg.recon_weight, cfg.quant_weight, cfg.entropy_weight, cfg.rate_weight, model.config.image_size ** 2,
        )
        recon = torch.sigmoid(out.logits)
        k = len(idx)
        sums["loss"] += float(terms.total) * k
        sums["recon_loss"] += float(terms.recon) * k
        sums["quant_loss"] += float(terms.quant) * k
        sums["psnr"] += float(psnr(recon, x).sum())
        sums["ssim"] += float(ssim(recon, x).sum())
        n += k
    model.train(was_training)
    return {key: v / max(n, 1) for key, v in sums.items()}


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    splits: ImageSplits | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_step: Callable[[int, int, float, float], None] | None = None,
    stop_after_epoch: int | None = None,
) -> FSQVAE:
    """Train an FSQ-VAE and write RUN/{model.safetensors, config.json, metrics.jsonl, recon.png,
    curves.png, trainer_state.pt}. ``stop_after_epoch`` simulates an interruption (tests)."""
    out_dir = Path(out_dir)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    state: dict[str, Any] | None = None
    if resume:  # the run's own settings win: a resumed run must equal an uninterrupted one
        state = _load_state(out_dir)
        model_cfg = model_config_from_dict(state["model_config"])
        cfg = dataclasses.replace(TrainConfig(**state["train_config"]), workers=cfg.workers)  # changes no result
        start_epoch, history = int(state["epoch"]), list(state["history"])
    best: dict[str, Any] | None = state.get("best") if state is not None else None
    validate_train_config(cfg)
    model_cfg.validate()
    device = pick_device(cfg.device)
    ctx = distributed.from_env(device)
    device = distributed.rank_device(device, ctx)
    torch.manual_seed(cfg.seed)  # the same on every rank: DDP also broadcasts rank 0's weights
    splits = splits or stream_images(cfg.data, model_cfg.image_size, download=cfg.download)  # folder: streamed
    if len(splits.train) == 0:
        raise FSQDeployError(f"train: data {cfg.data!r} has no training images")
    model = FSQVAE(model_cfg, ema_decay=cfg.ema_decay).to(device)
    if state is not None:
        model.load_state_dict(state["model"])
    distributed.check_divisible(len(splits.train), cfg.batch_size, ctx, "the training split")
    stepper = distributed.wrap(model, ctx, device, cfg.sync_bn)  # DDP when distributed, else the model
    optimizer = torch.optim.Adam(stepper.parameters(), lr=cfg.lr)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
    budget = [code_bits(s.level_list()) for s in model.quantizer.stages]
    if state is not None:
        budget = list(state["bit_budget"])
    adapt_at = adaptation_epochs(cfg)

    global_batch = cfg.batch_size * ctx.world  # --batch-size is per process
    steps_per_epoch = math.ceil(len(splits.train) / global_batch)
    total_steps = steps_per_epoch * cfg.epochs
    stages = list(model.quantizer.stages)
    for epoch in range(start_epoch, cfg.epochs):
        # -- schedule and step ------------------------------------------------------------------
        model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        started, seen = time.perf_counter(), 0
        sums = {"loss": 0.0, "recon_loss": 0.0, "quant_loss": 0.0, "entropy_rate": 0.0}
        shards = [distributed.shard(g, ctx) for g in batches(splits.train, global_batch, generator)]
        for i, (idx, pixels) in enumerate(zip(shards, image_batches(splits.train, shards, cfg.workers))):
            step = epoch * steps_per_epoch + i
            temperature = temperature_at(
                progress_of(step, total_steps), cfg.temperature_start, cfg.temperature_end, cfg.temperature_schedule
            )
            model.quantizer.set_temperature(temperature)
            x = torch.from_numpy(images_to_float(pixels)).to(device)
            out = stepper(x)
            terms = fsq_vae_loss(
                out.logits, x, stages, out.stages, temperature, cfg.recon_loss,
                cfg.recon_weight, cfg.quant_weight, cfg.entropy_weight,
                rate_weight_at(progress_of(step, total_steps), cfg.rate_weight, cfg.rate_from),
                model_cfg.image_size ** 2,
            )
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            k = len(idx)
            seen += k
            for key, v in (("loss", terms.total.detach()), ("recon_loss", terms.recon), ("quant_loss", terms.quant),
                           ("entropy_rate", terms.entropy_rate)):
                sums[key] += float(v) * k
            if on_step:
                on_step(step + 1, total_steps, float(terms.total.detach()), seen / (time.perf_counter() - started))
        images_per_s = seen / (time.perf_counter() - started)
        distributed.average_batchnorm_statistics(model, ctx)
        sums = distributed.all_sum({**sums, "seen": float(seen), "images_per_s": images_per_s}, ctx, device)
        seen, images_per_s = int(sums.pop("seen")), sums.pop("images_per_s")

        # -- evaluate -------------------------------------------------------------------------
        test = splits.test if cfg.eval_batches <= 0 else splits.test[: cfg.eval_batches * 256]
        test_metrics = evaluate(model, test, cfg, device) if len(test) else {}
        stats = code_stats(stages)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / seen for k, v in sums.items()},
            **{f"test_{k}": v for k, v in test_metrics.items()},
            "codebook_usage": stats.usage,
            "perplexity": stats.perplexity,
            "dead_levels": stats.dead_levels,
            "bits_per_image": stats.fixed_bits,
            "entropy_bits_per_image": stats.entropy_bits,
            "temperature": model.quantizer.temperature,
            "images_per_s": images_per_s,
        }

        # -- adapt levels (then freeze after the last scheduled epoch) -------------------------
        if epoch + 1 in adapt_at:
            for stage, bits in zip(stages, budget):
                new = reallocate_levels(stage.level_list(), stage.ema_counts.cpu().numpy(), bits)
                if new != stage.level_list():
                    stage.set_levels(new)
            # the optimiser's state is for parameters only; level buffers need no fix-up
            metrics["levels_adapted"] = True
        metrics["levels"] = model.levels if adapt_at else None
        if metrics["levels"] is None:
            del metrics["levels"]
        history.append(metrics)

        # -- checkpoint and log ---------------------------------------------------------------
        # The checkpoint is the epoch with the best test PSNR, not the last: under temperature
        # annealing the last epochs can end below the best (docs/training.md). The trainer state
        # always holds the last epoch, so a resumed run continues from where it stopped.
        psnr_now = metrics.get("test_psnr")
        is_best = best is None or psnr_now is None or psnr_now > best["test_psnr"]
        if is_best:
            best = {"epoch": epoch + 1, "test_psnr": psnr_now}
        metrics["best_epoch"] = best["epoch"]
        if ctx.active:
            metrics["processes"], metrics["effective_batch_size"] = ctx.world, global_batch
        if ctx.is_main:  # one writer; the other ranks wait so nobody reads a half-written run
            _save_epoch(model, optimizer, cfg, out_dir, epoch + 1, history, budget, splits, best, is_best)
        distributed.barrier(ctx)
        if on_epoch:
            on_epoch(EpochLog(epoch + 1, metrics))
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
            return model.eval()
    return FSQVAE.load(out_dir, device)  # the checkpoint: the best epoch's weights, levels and temperature


def _save_epoch(
    model: FSQVAE,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    out_dir: Path,
    epoch: int,
    history: list[dict[str, Any]],
    budget: list[float],
    splits: ImageSplits,
    best: dict[str, Any],
    is_best: bool,
) -> None:
    """The trainer state and metrics every epoch; the checkpoint and its recon grid only when this
    epoch is the best so far (``best``: its epoch and test PSNR, recorded in config.json)."""
    from fsqdeploy.train.plots import save_curves, save_recon_grid

    if is_best:
        training = {**dataclasses.asdict(cfg), "data": splits.source, "epochs_done": epoch,
                    "best_epoch": best["epoch"], "best_test_psnr": best["test_psnr"]}
        save_model(model, out_dir, training)
        save_recon_grid(model, splits.test if len(splits.test) else splits.train, out_dir / "recon.png")
    lines = "".join(json.dumps(m) + "\n" for m in history)
    write_text_atomic(out_dir / METRICS_FILE, lines)
    save_curves(history, out_dir / "curves.png")
    state = {
        "epoch": epoch,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(),
        "bit_budget": budget,
        "best": best,
        "model_config": model_config_to_dict(model.config),
        "train_config": dataclasses.asdict(cfg),
    }
    write_with(out_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))


def _load_state(out_dir: Path) -> dict[str, Any]:
    path = out_dir / STATE_FILE
    if not path.is_file():
        raise FSQDeployError(f"train: cannot resume, '{path}' is missing. Note: start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises several unrelated types
        raise FSQDeployError(f"train: cannot resume, '{path}' is corrupt ({type(e).__name__})") from None
