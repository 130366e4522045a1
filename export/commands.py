"""The ``export`` and ``check`` commands. User errors are FSQDeployError (one line, exit 2);
failing ``check`` findings print the table and exit 1."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.onnx_export import DEFAULT_OPSET, SUPPORTED_OPSETS

DEFAULT_PARITY_IMAGES = 512


def export(
    run: Annotated[Path, typer.Argument(help="Training run directory (config.json + model.safetensors).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact directory to create.")],
    opset: Annotated[int, typer.Option(help=f"ONNX opset, one of {', '.join(map(str, SUPPORTED_OPSETS))}.")]
    = DEFAULT_OPSET,
    inline: Annotated[bool, typer.Option("--inline", help="Inline the FSQ functions: standard ops only, "
                                         "for runtimes without ONNX local functions.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out directory.")] = False,
    parity_images: Annotated[int, typer.Option("--parity-images", help="Test-split images for the parity "
                                               "gate (batch size 1 uses the first 64).")]
    = DEFAULT_PARITY_IMAGES,
    data: Annotated[str | None, typer.Option("--data", help="Data spec for the parity gate instead of the "
                                             "run's, e.g. cifar10:DIR when the run's folder moved.")] = None,
) -> None:
    """Export the encoder+quantizer and decoder ONNX graphs and prove them equal to PyTorch."""
    from fsqdeploy.export.pipeline import export_artifact

    started = time.perf_counter()
    manifest = export_artifact(run, out, opset=opset, inline=inline, force=force,
                               parity_images=parity_images, data=data)
    p = manifest["parity"]
    files = ", ".join(f"{name} ({entry['size'] / 1024:.0f} KiB)" for name, entry in manifest["files"].items())
    typer.echo(
        f"exported {out}: {files}; opset {manifest['opset']}{', inlined' if inline else ''}\n"
        f"parity ({p['data']}, {p['images']} images, batch sizes {p['batch_sizes']}): indices "
        f"{100 * p['index_agreement']:.4g}% equal, max image error {p['max_image_error']:.2g}, "
        f"{p['adversarial_cases']} adversarial inputs equal; nearest latent to a threshold "
        f"{p['min_threshold_distance']:.2g}; {time.perf_counter() - started:.1f} s"
    )


def check(
    art: Annotated[Path, typer.Argument(help="Artifact directory written by fsqdeploy export.")],
    trt_version: Annotated[int, typer.Option("--trt-version", help="TensorRT major version to lint for.")] = 10,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data: Annotated[str | None, typer.Option("--data", help="Data spec for the FP16 risk instead of the "
                                             "manifest's.")] = None,
    images: Annotated[int | None, typer.Option("--images", help="Test images for the FP16 risk "
                                               "(default: as many as the parity gate used).")] = None,
) -> None:
    """Verify an artifact statically: hashes, I/O contract, ONNX checker, TensorRT lint, FP16 risk."""
    from fsqdeploy.export.check import check_artifact

    if images is not None and images < 1:
        raise FSQDeployError(f"check: --images must be at least 1, got {images}")
    report = check_artifact(art, trt_version=trt_version, data=data, images=images)
    if json_output:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(report)
    if not report.passed:
        raise typer.Exit(1)


def _print_table(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    styles = {"pass": "[green]PASS[/]", "fail": "[bold red]FAIL[/]", "info": "[cyan]INFO[/]"}
    table = Table(title=f"fsqdeploy check {report.artifact} (TensorRT {report.trt_version})")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for f in report.findings:
        table.add_row(f.check, styles[f.status], f.detail)
    console = Console(width=max(100, shutil.get_terminal_size((120, 24)).columns))
    console.print(table)
    console.print("[green]all checks passed[/]" if report.passed else "[bold red]check failed[/]")
