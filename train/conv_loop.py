"""The conv codec's training loop: step, evaluate on whole held-out photos, keep the best, checkpoint, log.

Unlike the paper loop (epochs over a fixed patch array), the conv codec trains on random crops
(train/crops.py) for a budget of steps (``--steps``) or minutes (``--minutes``, whichever ends first)
and is evaluated every ``eval_every`` steps on whole photos it never trains on, padded to a multiple
of f and cropped back, exactly as ``fsqdeploy compress`` codes them. What is evaluated and saved is
the moving average of the weights (``WEIGHT_EMA``), not the last step's. ``model.safetensors`` is the
best evaluation so far by mean PSNR (its step is in config.json's ``training.best_step`` and in
metrics.jsonl); ``trainer_state.pt`` is the last one, so ``resume=True`` continues a step budget
with the same result as an uninterrupted run (a minutes budget depends on the machine's speed).

Under torchrun every rank trains on its slice of one global batch of crops (train/distributed.py
says how the ranks stay one run); rank 0 alone evaluates and writes. A ``folder:DIR`` is streamed:
decoding threads (``--workers``) decode one photo per crop, and the crops are the ones its
in-memory copy would give.

Defaults and why: MSE (the codec is judged by PSNR), constant temperature 1 and no commitment or
entropy terms. FSQ needs neither (Mentzer et al. 2023), and the commitment term is divided by the
temperature, so annealing T from 1 to 0.1 multiplies it tenfold: that, not a worse reconstruction,
is why the paper loop's total loss rises while T anneals. The learning rate holds, then decays
linearly over the last ``decay_fraction`` of the budget. With ``amp`` the step's network runs under
bfloat16 autocast where that is faster than FP32 (``autocast_bf16``); evaluations stay FP32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig, TrainConfig, model_config_from_dict, model_config_to_dict
from fsqdeploy.data import FolderPhotos, PhotoSplits, stream_photos
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_text_atomic, write_with
from fsqdeploy.images import pad_to_multiple
from fsqdeploy.metrics import ssim
from fsqdeploy.model import FSQVAE
from fsqdeploy.train import distributed
from fsqdeploy.train.crops import random_crops, streamed_crops
from fsqdeploy.train.loop import METRICS_FILE, STATE_FILE, _load_state, validate_train_config
from fsqdeploy.train.losses import fsq_vae_loss, rate_weight_at
from fsqdeploy.train.stats import code_stats, index_stats

DECAY_FRACTION = 0.2
# Evaluated and saved: an exponential moving average of the weights (and BatchNorm statistics), not
# the last step's. At the learning rates that train in minutes the held-out PSNR of the raw weights
# swings by several dB between evaluations; the average does not (docs/training.md). 0: off.
WEIGHT_EMA = 0.99
# A streamed folder:DIR evaluates its first EVAL_PHOTOS test photos (by path), held whole in memory:
# every evaluation codes each of them, and a large folder's test split would dominate the run.
EVAL_PHOTOS = 32


@torch.no_grad()
def encode_photo(model: FSQVAE, photo: np.ndarray) -> torch.Tensor:
    """A whole photo's indices [1, W, h, w] in one pass, edge-padded to multiples of f as compress pads it."""
    padded = pad_to_multiple(photo, model.config.downsample)
    x = torch.from_numpy(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    return model.encode(x.to(next(model.parameters()).device))


def reconstruct_photo(model: FSQVAE, photo: np.ndarray, grid: torch.Tensor | None = None) -> np.ndarray:
    """A whole photo through encode (or its ``grid`` from ``encode_photo``) and decode, as uint8 [H, W, 3]."""
    h, w = photo.shape[:2]
    y = model.decode(encode_photo(model, photo) if grid is None else grid)[0, :, :h, :w]
    return (y.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def photo_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else min(100.0, 10.0 * math.log10(255.0**2 / mse))


@torch.no_grad()
def evaluate_photos(model: FSQVAE, photos: PhotoSplits, cells: list[np.ndarray] | None = None,
                    on_recon: Callable[[np.ndarray, np.ndarray], None] | None = None) -> dict[str, Any]:
    """Mean and per-photo PSNR (dB, on the uint8 output) and SSIM of whole test photos, plus the
    payload's bits per pixel at the fixed rate (padding cells included, file header not). ``cells``,
    when given, receives each photo's indices [cells, W] (``fsqdeploy eval``'s code statistics);
    ``on_recon(photo, recon)`` sees each photo and its uint8 reconstruction as they come (eval's FID)."""
    was_training = model.training
    model.eval()
    per_psnr, per_ssim, bits, pixels = {}, {}, 0.0, 0
    # the bits .fsq spends per cell: the levels' product packed in whole bits (docs/bitstream.md)
    f, cell_bits = model.config.downsample, (math.prod(model.levels) - 1).bit_length()
    for name, photo in zip(photos.names, photos.test):
        grid = encode_photo(model, photo)
        if cells is not None:
            cells.append(grid[0].flatten(1).T.cpu().numpy())
        recon = reconstruct_photo(model, photo, grid)
        if on_recon is not None:
            on_recon(photo, recon)
        per_psnr[name] = photo_psnr(recon, photo)
        as_float = [torch.from_numpy(p.transpose(2, 0, 1)[None].astype(np.float32) / 255.0) for p in (recon, photo)]
        per_ssim[name] = float(ssim(*as_float).mean())
        h, w = photo.shape[:2]
        bits += math.ceil(h / f) * math.ceil(w / f) * cell_bits
        pixels += h * w
    model.train(was_training)
    return {"test_psnr": float(np.mean(list(per_psnr.values()))), "test_ssim": float(np.mean(list(per_ssim.values()))),
            "test_psnr_per_image": per_psnr, "bits_per_pixel": bits / max(pixels, 1)}


def autocast_bf16(device: torch.device, amp: bool) -> bool:
    """Whether the training step runs under bfloat16 autocast (``--amp``, the quantizer stays FP32): on
    GPUs with bfloat16 tensor cores (CUDA compute capability 8.0 on, and ROCm) and on CPUs with
    bfloat16 instructions (AVX512-BF16, AMX-BF16). Elsewhere bfloat16 is emulated: on CPUs that is
    slower than FP32 (measured in docs/training.md, "Mixed precision on CPUs"). bfloat16 keeps
    float32's range, so no loss scaling is needed."""
    if not amp:
        return False
    if device.type == "cuda":
        return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
    capabilities = torch.cpu.get_capabilities() if device.type == "cpu" else {}
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def lr_at(progress: float, lr: float) -> float:
    """Constant, then linear decay to 5% over the last DECAY_FRACTION of the budget."""
    start = 1.0 - DECAY_FRACTION
    return lr if progress <= start else lr * max(0.05, 1.0 - (progress - start) / DECAY_FRACTION)


def train_conv(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    photos: PhotoSplits | None = None,
    device: torch.device,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int, float, float], None] | None = None,
    stop_after_step: int | None = None,
) -> FSQVAE:
    """Train the conv codec; writes RUN/{model.safetensors (best), config.json, metrics.jsonl,
    recon.png, curves.png, trainer_state.pt (last)}. ``stop_after_step`` simulates a kill (tests)."""
    out_dir = Path(out_dir)
    state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    start_step, best_psnr, best_step, elapsed_before = 0, -math.inf, 0, 0.0
    if resume:  # the run's own settings win, except the worker count, which changes no result
        state = _load_state(out_dir)
        model_cfg = model_config_from_dict(state["model_config"])
        cfg = dataclasses.replace(TrainConfig(**state["train_config"]), workers=cfg.workers)
        start_step, history = int(state["step"]), list(state["history"])
        best_psnr, best_step = float(state["best_psnr"]), int(state["best_step"])
        elapsed_before = float(state["elapsed"])
    if not model_cfg.spatial:
        raise FSQDeployError(f"train: train_conv needs arch conv, got {model_cfg.arch!r}")
    model_cfg.validate()
    validate_train_config(cfg, "conv")
    ctx = distributed.from_env(device)
    device = distributed.rank_device(device, ctx)
    torch.manual_seed(cfg.seed)  # the same on every rank: DDP also broadcasts rank 0's weights
    photos = photos or stream_photos(cfg.data, model_cfg.image_size, EVAL_PHOTOS)
    model = FSQVAE(model_cfg, ema_decay=cfg.ema_decay).to(device)
    stepper = distributed.wrap(model, ctx, device, cfg.sync_bn)  # DDP when distributed, else the model
    optimizer = torch.optim.Adam(stepper.parameters(), lr=cfg.lr)
    averaged = _weight_average(model)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if averaged is not None and "averaged" in state:
            averaged.load_state_dict(state["averaged"])
    use_amp = autocast_bf16(device, cfg.amp)
    total, budget_s = cfg.steps, cfg.minutes * 60.0
    eval_every = cfg.eval_every or max(1, math.ceil(total / 10))
    stages = list(model.quantizer.stages)
    # --batch-size is per process: every rank plans the same global batch of crops and cuts its slice
    global_batch, mine = cfg.batch_size * ctx.world, slice(ctx.rank, None, ctx.world)
    streamed = (streamed_crops(photos.train, global_batch, model_cfg.image_size, cfg.seed, start_step, total,
                               cfg.workers, mine) if isinstance(photos.train, FolderPhotos) else None)
    started, window_start, window_images = time.perf_counter(), time.perf_counter(), 0
    step, loss = start_step, math.nan
    while step < total:
        elapsed = elapsed_before + time.perf_counter() - started
        if budget_s > 0:  # rank 0's clock for all: the lr and the end of the budget must agree across ranks
            elapsed = distributed.from_rank0(elapsed, ctx, device)
        out_of_time = budget_s > 0 and elapsed >= budget_s
        progress = max(step / total, elapsed / budget_s if budget_s > 0 else 0.0)
        # -- step ---------------------------------------------------------------------------------
        if not out_of_time:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress, cfg.lr)
            x = (next(streamed) if streamed is not None else
                 random_crops(photos.train, global_batch, model_cfg.image_size, cfg.seed, step, keep=mine)).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = stepper(x)
            terms = fsq_vae_loss(out.logits.float(), x, stages, out.stages, model.quantizer.temperature,
                                 cfg.recon_loss, cfg.recon_weight, cfg.quant_weight, cfg.entropy_weight,
                                 rate_weight_at(progress, cfg.rate_weight, cfg.rate_from), model_cfg.downsample ** 2)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            window_images += len(x)
            loss = float(terms.total.detach())
            if on_step:
                on_step(step, total, loss, window_images / max(time.perf_counter() - window_start, 1e-9))
        # -- evaluate, keep the best, checkpoint, log -----------------------------------------------
        if step % eval_every == 0 or step == total or out_of_time:
            # every rank: one BatchNorm state (the ranks' mean), the loss and speed summed over the ranks
            distributed.average_batchnorm_statistics(model, ctx)
            if averaged is not None:
                distributed.average_batchnorm_statistics(averaged.module, ctx)
            reduced = distributed.all_sum({"loss": loss, "images_per_s": window_images / max(
                time.perf_counter() - window_start, 1e-9)}, ctx, device)
            if ctx.is_main:  # rank 0 alone evaluates and writes; the others wait at the barrier
                metrics: dict[str, Any] = {"step": step, "train_loss": reduced["loss"] / ctx.world,
                                           "autocast": "bfloat16" if use_amp else None}
                if ctx.active:
                    metrics.update(processes=ctx.world, effective_batch_size=global_batch)
                evaluated = model if averaged is None else averaged.module
                cells: list[np.ndarray] = []
                metrics.update(evaluate_photos(evaluated, photos, cells))
                held_out = index_stats(np.concatenate(cells), model.levels)  # a tokenizer's codebook, on unseen photos
                metrics.update(test_tokens_in_use=held_out["tokens_in_use"],
                               test_token_perplexity=held_out["token_perplexity"])
                stats = code_stats(stages)
                metrics.update(codebook_usage=stats.usage, perplexity=stats.perplexity, dead_levels=stats.dead_levels,
                               bits_per_cell=stats.fixed_bits, entropy_bits_per_cell=stats.entropy_bits,
                               temperature=model.quantizer.temperature, lr=optimizer.param_groups[0]["lr"],
                               images_per_s=reduced["images_per_s"],
                               elapsed_s=elapsed_before + time.perf_counter() - started)
                improved = metrics["test_psnr"] > best_psnr
                if improved:
                    best_psnr, best_step = metrics["test_psnr"], step
                metrics["best_step"] = best_step
                history.append(metrics)
                _save(model, averaged, optimizer, cfg, out_dir, step, history, photos, improved, best_psnr,
                      best_step, metrics["elapsed_s"])
                if on_eval:
                    on_eval(metrics)
            distributed.barrier(ctx)
            window_start, window_images = time.perf_counter(), 0
            if out_of_time:
                break
            if stop_after_step is not None and step >= stop_after_step and step < total:
                return model.eval()
    distributed.barrier(ctx)  # rank 0 has written the checkpoint every rank returns
    return FSQVAE.load(out_dir, device) if (out_dir / "model.safetensors").is_file() else model.eval()


def _weight_average(model: FSQVAE) -> AveragedModel | None:
    if not WEIGHT_EMA:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(WEIGHT_EMA), use_buffers=True)


def _save(model: FSQVAE, averaged: AveragedModel | None, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
          out_dir: Path, step: int, history: list[dict[str, Any]], photos: PhotoSplits, improved: bool,
          best_psnr: float, best_step: int, elapsed: float) -> None:
    from fsqdeploy.train.plots import save_curves, save_recon_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    evaluated = model if averaged is None else averaged.module
    if improved:  # model.safetensors and config.json always describe the best evaluation so far
        best = {"best_step": best_step, "best_test_psnr": best_psnr}
        save_model(evaluated, out_dir, {**dataclasses.asdict(cfg), "data": photos.source, "steps_done": step, **best})
        save_recon_grid(evaluated, recon_crops(photos), out_dir / "recon.png", count=len(photos.test))
    write_text_atomic(out_dir / METRICS_FILE, "".join(json.dumps(m) + "\n" for m in history))
    save_curves(history, out_dir / "curves.png")
    state = {"step": step, "history": history, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "best_psnr": best_psnr, "best_step": best_step, "elapsed": elapsed,
             "model_config": model_config_to_dict(model.config), "train_config": dataclasses.asdict(cfg)}
    if averaged is not None:
        state["averaged"] = averaged.state_dict()
    write_with(out_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))


def recon_crops(photos: PhotoSplits, side: int = 96) -> np.ndarray:
    """uint8 [N, 3, side, side]: the centre of each test photo, for recon.png."""
    crops = []
    for photo in photos.test[:8]:
        h, w = photo.shape[:2]
        s = min(side, h, w)
        y, x = (h - s) // 2, (w - s) // 2
        crops.append(np.pad(photo[y : y + s, x : x + s], ((0, side - s), (0, side - s), (0, 0)), mode="edge"))
    return np.stack(crops).transpose(0, 3, 1, 2).copy()
