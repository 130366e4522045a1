"""``fsqdeploy train`` and ``fsqdeploy eval``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from fsqdeploy.config import ModelConfig, TrainConfig
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import parse_levels


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise FSQDeployError(f"train: {what} {text!r} is not a comma-separated list of integers") from None


def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")] = Path("runs/sample"),
    data: Annotated[str, typer.Option(help="sample | synthetic | cifar10:DIR | folder:DIR")] = "sample",
    download: Annotated[bool, typer.Option(help="Fetch CIFAR-10 into DIR if it is missing.")] = False,
    epochs: Annotated[int, typer.Option(help="Training epochs (paper: 50).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 128).")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-3).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    image_size: Annotated[int, typer.Option(help="Image side in pixels, a multiple of 16.")] = 32,
    channels: Annotated[str, typer.Option(help="Encoder channels per stride-2 layer.")] = "32,64,128,256",
    latent_dim: Annotated[int, typer.Option(help="Latent size D.")] = 64,
    levels: Annotated[str, typer.Option(help="Levels per dimension; a pattern repeats: 8 or 8,5,5,5.")] = "8",
    stages: Annotated[int, typer.Option(help="Residual FSQ stages (hierarchical quantization).")] = 1,
    recon_loss: Annotated[str, typer.Option(help="bce (paper) or mse.")] = "bce",
    recon_weight: Annotated[float, typer.Option(help="Weight of the reconstruction loss.")] = 1.0,
    quant_weight: Annotated[float, typer.Option(help="Weight of the quantization loss (0: off).")] = 1.0,
    entropy_weight: Annotated[float, typer.Option(help="Weight of the entropy-rate bonus (0: off).")] = 0.1,
    ema_decay: Annotated[float, typer.Option(help="Decay of the EMA code statistics.")] = 0.99,
    temperature_schedule: Annotated[str, typer.Option(help="exponential | linear | cosine | constant")] = "exponential",
    temperature_start: Annotated[float, typer.Option(help="Temperature at the first step.")] = 1.0,
    temperature_end: Annotated[float, typer.Option(help="Temperature at the last step and at inference.")] = 0.1,
    adaptive_levels: Annotated[bool, typer.Option(help="Reallocate levels under a fixed bit budget.")] = False,
    adapt_epochs: Annotated[str, typer.Option(help="Epochs to adapt at (default: 20% and 40%).")] = "",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out with its own settings.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
) -> None:
    """Train an FSQ-VAE; writes model.safetensors, config.json, metrics.jsonl, recon.png, curves.png."""
    from fsqdeploy.train.loop import STATE_FILE
    from fsqdeploy.train.loop import train as run_training

    model_cfg = ModelConfig(
        image_size=image_size,
        channels=tuple(_int_list(channels, "--channels")),
        latent_dim=latent_dim,
        levels=parse_levels(levels, latent_dim) * stages if stages >= 1 else [],
        stages=stages,
        temperature=temperature_start,
    )
    cfg = TrainConfig(
        data=data, download=download, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
        recon_loss=recon_loss, recon_weight=recon_weight, quant_weight=quant_weight,
        entropy_weight=entropy_weight, ema_decay=ema_decay, temperature_schedule=temperature_schedule,
        temperature_start=temperature_start, temperature_end=temperature_end,
        adaptive_levels=adaptive_levels, adapt_epochs=_int_list(adapt_epochs, "--adapt-epochs"),
    )
    if out.exists() and not out.is_dir():
        raise FSQDeployError(f"train: --out '{out}' exists and is not a directory")
    if resume:
        if not (out / STATE_FILE).is_file():
            raise FSQDeployError(f"train: nothing to resume in '{out}' ({STATE_FILE} is missing)")
    elif out.is_dir() and any(out.iterdir()):
        if not force:
            raise FSQDeployError(
                f"train: '{out}' is not empty. Note: pass --resume to continue it or --force to replace it"
            )
        shutil.rmtree(out)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
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

        run_training(model_cfg, cfg, out, resume=resume, on_epoch=on_epoch, on_step=on_step)
    print(f"wrote {out}/ (model.safetensors, config.json, metrics.jsonl, recon.png, curves.png)")


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

    table = Table(title=f"{run} on {metrics['data']} ({split}, {metrics['images']} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key not in ("data", "images"):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if json_out:
        from fsqdeploy.fileio import write_json_atomic

        write_json_atomic(json_out, metrics)
