"""``fsqdeploy train`` and ``fsqdeploy eval``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from fsqdeploy.config import ModelConfig, TrainConfig
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import parse_levels


def model_config(arch: str, o: dict[str, Any], stages: int = 1, temperature: float = 1.0) -> ModelConfig:
    """The model of options shaped as ARCH_DEFAULTS[arch] (a run's, or the defaults themselves)."""
    return ModelConfig(
        arch=arch,
        image_size=o["image_size"],
        channels=tuple(_int_list(o["channels"], "--channels")),
        latent_dim=o["latent_dim"],
        levels=parse_levels(o["levels"], o["latent_dim"]) * stages if stages >= 1 else [],
        stages=stages,
        temperature=temperature,
        linear_path=o["linear_path"],
    )


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise FSQDeployError(f"train: {what} {text!r} is not a comma-separated list of integers") from None


# Defaults per architecture: the paper's Table 1 for ``paper``; for ``conv`` the recipe measured to
# beat JPEG on the held-out photos within the README's training time (docs/training.md).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": dict(image_size=32, channels="32,64,128,256", latent_dim=64, levels="8", batch_size=128, lr=1e-3,
                  recon_loss="bce", quant_weight=1.0, entropy_weight=0.1, temperature_schedule="exponential",
                  temperature_end=0.1, epochs=50, steps=0, linear_path=False),
    "conv": dict(image_size=64, channels="32,64,128,192", latent_dim=12, levels="7,7,7,7,7,7,7,7,7,7,7,5",
                 batch_size=16, lr=3e-3, recon_loss="mse", quant_weight=0.0, entropy_weight=0.0,
                 temperature_schedule="constant", temperature_end=1.0, epochs=0, steps=3400, linear_path=True),
}


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")] = Path("runs/sample"),
    arch: Annotated[str, typer.Option(help="conv (fully convolutional) | paper (the seed's FSQ-VAE).")] = "conv",
    data: Annotated[str, typer.Option(help="sample | synthetic | cifar10:DIR | folder:DIR")] = "sample",
    download: Annotated[bool, typer.Option(help="Fetch CIFAR-10 into DIR if it is missing.")] = False,
    epochs: Annotated[int | None, typer.Option(help="paper: training epochs (paper: 50).")] = None,
    steps: Annotated[int | None, typer.Option(help="conv: optimiser steps (default 3400).")] = None,
    minutes: Annotated[float, typer.Option(help="conv: stop after this many minutes (0: no time limit).")] = 0.0,
    eval_every: Annotated[int, typer.Option(help="conv: evaluate every N steps (0: ten times per run).")] = 0,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (paper 128, conv 16 crops).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (paper 1e-3, conv 3e-3).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    amp: Annotated[bool, typer.Option(
        help="conv: bfloat16 autocast on GPUs and CPUs with bfloat16 hardware (the quantizer stays FP32)."
    )] = True,
    image_size: Annotated[int | None, typer.Option(help="paper: image side; conv: crop side (multiple of f).")] = None,
    channels: Annotated[str | None, typer.Option(help="Encoder channels per stride-2 layer (f = 2^layers).")] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Latent size D (conv: channels per latent position).")] = None,
    levels: Annotated[str | None, typer.Option(help="Levels per dimension; a pattern repeats: 8 or 8,5,5,5.")] = None,
    stages: Annotated[int, typer.Option(help="Residual FSQ stages (hierarchical quantization).")] = 1,
    linear_path: Annotated[bool | None, typer.Option(
        "--linear-path/--no-linear-path",
        help="conv: a linear cell-to-latent path beside the deep one (default on).")] = None,
    recon_loss: Annotated[str | None, typer.Option(help="bce (paper default) or mse (conv default).")] = None,
    recon_weight: Annotated[float, typer.Option(help="Weight of the reconstruction loss.")] = 1.0,
    quant_weight: Annotated[float | None, typer.Option(help="Weight of the quantization loss (0: off).")] = None,
    entropy_weight: Annotated[float | None, typer.Option(help="Weight of the entropy-rate bonus (0: off).")] = None,
    rate_weight: Annotated[float, typer.Option(help="Weight of the rate term, bits per pixel (0: off).")] = 0.0,
    rate_from: Annotated[float, typer.Option(help="The rate term acts from this fraction of the run on.")] = 0.5,
    ema_decay: Annotated[float, typer.Option(help="Decay of the EMA code statistics.")] = 0.99,
    temperature_schedule: Annotated[str | None, typer.Option(help="exponential | linear | cosine | constant")] = None,
    temperature_start: Annotated[float, typer.Option(help="Temperature at the first step.")] = 1.0,
    temperature_end: Annotated[float | None, typer.Option(help="Temperature at the end and at inference.")] = None,
    adaptive_levels: Annotated[bool, typer.Option(help="paper: reallocate levels under a fixed bit budget.")] = False,
    adapt_epochs: Annotated[str, typer.Option(help="Epochs to adapt at (default: 20% and 40%).")] = "",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out with its own settings.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    sync_bn: Annotated[bool, typer.Option(help="torchrun on GPUs: SyncBatchNorm across the processes.")] = False,
    workers: Annotated[int, typer.Option(help="folder:DIR: threads decoding files (0: in-process).")] = 2,
) -> None:
    """Train an FSQ codec; writes model.safetensors, config.json, metrics.jsonl, recon.png, curves.png."""
    from fsqdeploy.train import distributed
    from fsqdeploy.train.loop import STATE_FILE, pick_device, validate_train_config
    from fsqdeploy.train.loop import train as run_training

    if arch not in ARCH_DEFAULTS:
        raise FSQDeployError(f"train: unknown architecture {arch!r}. Note: use conv or paper")
    given = dict(image_size=image_size, channels=channels, latent_dim=latent_dim, levels=levels,
                 batch_size=batch_size, lr=lr, recon_loss=recon_loss, quant_weight=quant_weight,
                 entropy_weight=entropy_weight, temperature_schedule=temperature_schedule,
                 temperature_end=temperature_end, epochs=epochs, steps=steps, linear_path=linear_path)
    o = {k: ARCH_DEFAULTS[arch][k] if v is None else v for k, v in given.items()}
    if arch == "paper" and (steps or minutes):
        raise FSQDeployError("train: --steps and --minutes are for --arch conv. Note: use --epochs with paper")
    if arch == "conv" and (epochs is not None or adaptive_levels):
        raise FSQDeployError("train: --epochs and --adaptive-levels are for --arch paper. "
                             "Note: use --steps or --minutes with conv")
    model_cfg = model_config(arch, o, stages, temperature_start)
    cfg = TrainConfig(
        data=data, download=download, epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"], seed=seed,
        device=device, recon_loss=o["recon_loss"], recon_weight=recon_weight, quant_weight=o["quant_weight"],
        entropy_weight=o["entropy_weight"], rate_weight=rate_weight, rate_from=rate_from, ema_decay=ema_decay,
        temperature_schedule=o["temperature_schedule"],
        temperature_start=temperature_start, temperature_end=o["temperature_end"],
        adaptive_levels=adaptive_levels, adapt_epochs=_int_list(adapt_epochs, "--adapt-epochs"),
        steps=o["steps"], minutes=minutes, eval_every=eval_every, amp=amp, sync_bn=sync_bn, workers=workers,
    )
    if out.exists() and not out.is_dir():
        raise FSQDeployError(f"train: --out '{out}' exists and is not a directory")
    if resume:
        if not (out / STATE_FILE).is_file():
            raise FSQDeployError(f"train: nothing to resume in '{out}' ({STATE_FILE} is missing)")
        arch = _resumed_arch(out)
    else:
        model_cfg.validate()
        validate_train_config(cfg, arch)
        distributed.check_sync_bn(sync_bn, pick_device(device), distributed.world_size())
        if out.is_dir() and any(out.iterdir()):
            if not force:
                raise FSQDeployError(
                    f"train: '{out}' is not empty. Note: pass --resume to continue it or --force to replace it"
                )
            shutil.rmtree(out)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    world, main_rank = distributed.world_size(), os.environ.get("RANK", "0") == "0"
    if world > 1 and main_rank:
        run = _resumed_training(out) if resume else {"batch_size": cfg.batch_size, "lr": cfg.lr}
        console.print(f"torchrun: {world} processes x batch {run['batch_size']} = effective batch "
                      f"{world * run['batch_size']}, lr {run['lr']:g} (the single-process rate, not rescaled)")
    with Progress(
        TextColumn("[bold]train[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(), console=console, disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("train", total=None, loss=float("nan"), ips=0.0)

        def on_step(step: int, total: int, loss: float, ips: float) -> None:
            progress.update(task, completed=step, total=total, loss=loss, ips=ips)

        def on_epoch(log: Any) -> None:
            m = log.metrics
            console.print(
                f"epoch {m['epoch']:3d}  train {m['train_loss']:.4f}  test {m.get('test_loss', float('nan')):.4f}  "
                f"PSNR {m.get('test_psnr', float('nan')):.2f} dB  SSIM {m.get('test_ssim', float('nan')):.3f}  "
                f"perplexity {m['perplexity']:.2f}  T {m['temperature']:.3f}  {m['images_per_s']:.0f} img/s"
            )

        said_precision: list[bool] = []

        def on_eval(m: dict[str, Any]) -> None:
            if not said_precision:  # what --amp did depends on the device and the CPU; said at the first
                said_precision.append(True)  # evaluation, so that a bad --data stays a one-line error
                autocast = m.get("autocast")
                console.print(f"precision: {autocast} autocast, the quantizer in FP32" if autocast else
                              "precision: FP32")
            photos = "  ".join(f"{k} {v:.2f}" for k, v in m["test_psnr_per_image"].items())
            console.print(
                f"step {m['step']:5d}  train {m['train_loss']:.4f}  held-out PSNR {m['test_psnr']:.2f} dB "
                f"({photos})  SSIM {m['test_ssim']:.3f}  {m['bits_per_pixel']:.3f} bpp  "
                f"best @ {m['best_step']}  {m['elapsed_s']:.0f} s"
            )

        if arch == "conv":
            from fsqdeploy.train.conv_loop import train_conv

            train_conv(model_cfg, cfg, out, resume=resume, device=pick_device(device), on_eval=on_eval,
                       on_step=on_step)
        else:
            run_training(model_cfg, cfg, out, resume=resume, on_epoch=on_epoch, on_step=on_step)
    if main_rank:
        print(f"wrote {out}/ (model.safetensors, config.json, metrics.jsonl, recon.png, curves.png)")


def _resumed_training(out: Path) -> dict[str, Any]:
    from fsqdeploy.config import read_config

    return dict(read_config(out).get("training", {}))


def _resumed_arch(out: Path) -> str:
    from fsqdeploy.config import read_config

    return str(read_config(out).get("arch", "paper"))


def evaluate(
    run: Annotated[Path, typer.Argument(help="Training run directory.")],
    data: Annotated[str, typer.Option(help="Dataset; default: the run's own.")] = "",
    split: Annotated[str, typer.Option(help="test | train")] = "test",
    fid: Annotated[bool, typer.Option(help="Also compute FID (needs --inception-weights).")] = False,
    inception_weights: Annotated[Path | None, typer.Option(help="Local TorchScript Inception file.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON here.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
) -> None:
    """Report a run's metrics (losses, PSNR, SSIM, rate, optional FID) on a dataset."""
    from fsqdeploy.train.evaluate import evaluate_run

    if split not in ("test", "train"):
        raise FSQDeployError(f"eval: --split must be test or train, got {split!r}")
    if fid and inception_weights is None:
        raise FSQDeployError(
            "eval: FID needs Inception weights and fsqdeploy never downloads them. Note: pass "
            "--inception-weights PATH to a local TorchScript file (e.g. inception-2015-12-05.pt)"
        )
    metrics = evaluate_run(run, data or None, split, inception_weights if fid else None, device)
    from rich.console import Console
    from rich.table import Table

    which = f"{split}: {metrics['selection']}" if metrics.get("selection") else split
    table = Table(title=f"{run} on {metrics['data']} ({which}, {metrics['images']} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [(f"{k}[{name}]", v) for k, per in metrics.items() if isinstance(per, dict) for name, v in per.items()]
    rows = [(k, v) for k, v in metrics.items() if not isinstance(v, dict)] + rows
    for key, value in rows:
        if key not in ("data", "images", "selection", "warning"):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if metrics.get("warning"):
        Console().print(f"[yellow]note:[/] {metrics['warning']}")
    if json_out:
        from fsqdeploy.fileio import write_json_atomic

        write_json_atomic(json_out, metrics)
