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
    run: Annotated[Path, typer.Argument(help="Training run directory (config.json + model.safetensors), or an "
                                        "exported artifact to build TensorRT engines into (with --trt).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Artifact directory to create (from a run).")]
    = None,
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
    precision: Annotated[list[str] | None, typer.Option(
        "--precision", help="fp32 (default) or fp16: FP16 graphs (encoder.fp16.onnx, decoder.fp16.onnx) with "
        "the quantizer in FP32. Repeat it to build TensorRT engines of both. int8: engines from the "
        "calibrated graphs of an artifact (fsqdeploy export ART --trt --precision int8).")] = None,
    trt: Annotated[bool, typer.Option("--trt", help="Also build TensorRT engines (strongly typed) of each "
                                      "--precision; needs TensorRT and an NVIDIA GPU.")] = False,
    min_batch: Annotated[int | None, typer.Option("--min-batch", help="TensorRT profile: smallest batch [1].")]
    = None,
    opt_batch: Annotated[int | None, typer.Option("--opt-batch", help="TensorRT profile: batch to tune for "
                                                  "[64].")] = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="TensorRT profile: largest batch [256]; "
                                                  "larger ones run in chunks.")] = None,
    workspace: Annotated[int | None, typer.Option("--workspace", help="TensorRT workspace limit in MiB "
                                                  "[2048].")] = None,
    optimization_level: Annotated[int | None, typer.Option("--optimization-level", help="TensorRT builder "
                                                           "optimization level 0..5 [3].")] = None,
    timing_cache: Annotated[Path | None, typer.Option("--timing-cache", help="TensorRT timing cache file to "
                                                      "read and update [ART/timing.cache].")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="TensorRT engines that load "
                                                     "on later TensorRT versions of the same major.")] = False,
    hardware_compatible: Annotated[bool, typer.Option("--hardware-compatible", help="TensorRT engines that "
                                                      "run on every Ampere or newer GPU.")] = False,
) -> None:
    """Export the encoder+quantizer and decoder ONNX graphs and prove them equal to PyTorch; with
    --precision fp16 also FP16 graphs, with --trt TensorRT engines (docs/tensorrt.md). Given an
    artifact instead of a run, with --trt: build engines into it (int8 after fsqdeploy calibrate)."""
    from fsqdeploy.export.pipeline import export_artifact
    from fsqdeploy.export.tensorrt_build import BuildOptions, build_engines, describe

    precisions = list(dict.fromkeys(precision or ["fp32"]))
    if not run.is_dir():
        raise FSQDeployError(f"export: '{run}' does not exist. Note: pass a training run directory, or an "
                             "artifact with --trt")
    into_artifact = (run / "manifest.json").is_file()
    if into_artifact and not trt:
        raise FSQDeployError(f"export: '{run}' is an exported artifact. Note: add --trt to build TensorRT engines "
                             "into it, or export from a training run")
    if into_artifact:
        export_only = {"--out": out is not None, "--inline": inline, "--force": force, "--data": data is not None,
                       "--opset": opset != DEFAULT_OPSET, "--parity-images": parity_images != DEFAULT_PARITY_IMAGES}
        flag = next((f for f, given in export_only.items() if given), None)
        if flag:
            raise FSQDeployError(f"export: {flag} does not apply when building engines into the artifact '{run}'")
    if not into_artifact and "int8" in precisions:
        raise FSQDeployError("export: int8 engines are built from calibrated graphs. Note: fsqdeploy export RUN "
                             "--out ART, fsqdeploy calibrate ART, then fsqdeploy export ART --trt --precision int8")
    if not into_artifact and out is None:
        raise FSQDeployError("export: --out is required. Note: fsqdeploy export RUN --out ART")
    given = {"--min-batch": min_batch, "--opt-batch": opt_batch, "--max-batch": max_batch,
             "--workspace": workspace, "--optimization-level": optimization_level, "--timing-cache": timing_cache,
             "--version-compatible": version_compatible or None, "--hardware-compatible": hardware_compatible or None}
    options = None
    if trt:
        d = BuildOptions()
        lo = d.min_batch if min_batch is None else min_batch
        hi = d.max_batch if max_batch is None else max_batch
        options = BuildOptions(
            # Without --opt-batch, tune for the default clamped into the given range.
            min_batch=lo, opt_batch=min(max(d.opt_batch, lo), hi) if opt_batch is None else opt_batch, max_batch=hi,
            workspace_mib=d.workspace_mib if workspace is None else workspace,
            optimization_level=d.optimization_level if optimization_level is None else optimization_level,
            timing_cache=timing_cache, version_compatible=version_compatible, hardware_compatible=hardware_compatible)
    else:
        stray = [flag for flag, value in given.items() if value is not None]
        if stray:
            raise FSQDeployError(f"export: {stray[0]} only applies to TensorRT engines. Note: add --trt")

    started = time.perf_counter()
    if into_artifact:
        assert options is not None  # --trt was checked above
        summary = build_engines(run, precisions, options)
        typer.echo(describe({k: v for k, v in summary.items() if k in precisions})
                   + f"; {time.perf_counter() - started:.1f} s")
        return
    assert out is not None
    manifest = export_artifact(run, out, opset=opset, inline=inline, force=force,
                               parity_images=parity_images, data=data, precisions=precisions, trt=options)
    p = manifest["parity"]
    files = ", ".join(f"{name} ({entry['size'] / 1024:.0f} KiB)" for name, entry in manifest["files"].items())
    lines = [
        f"exported {out}: {files}; opset {manifest['opset']}{', inlined' if inline else ''}",
        f"parity ({p['data']}, {p['images']} images, batch sizes {p['batch_sizes']}): indices "
        f"{100 * p['index_agreement']:.4g}% equal, max image error {p['max_image_error']:.2g}, "
        f"{p['adversarial_cases']} adversarial inputs equal; nearest latent to a threshold "
        f"{p['min_threshold_distance']:.2g}",
    ]
    if "fp16" in manifest and "fp16" in precisions:
        lines.append(describe_fp16(manifest["fp16"]))
    if options is not None and manifest.get("tensorrt"):
        lines.append(describe({k: v for k, v in manifest["tensorrt"].items() if k in precisions}))
    lines[-1] += f"; {time.perf_counter() - started:.1f} s"
    typer.echo("\n".join(lines))


def describe_fp16(record: dict[str, Any]) -> str:
    """One line: FP16 index agreement with FP32 on ONNX Runtime CPU, and what check's risk predicts."""
    ort, rounded, risk = record["onnxruntime_cpu"], record["fp16_rounding"], record["fp16_risk"]
    psnr = rounded["decoder_psnr_db"]
    return (f"fp16 ({record['data']}, {record['images']} images, quantizer in FP32): indices "
            f"{100 * ort['index_agreement']:.3f}% equal to FP32 on ONNX Runtime CPU, "
            f"{100 * rounded['index_agreement']:.3f}% with every FP16 tensor rounded (expected on a GPU); "
            f"FP16 risk {100 * risk:.3f}% (fsqdeploy check) predicts >= {100 * (1 - risk):.3f}%; "
            f"decoder {'identical' if psnr is None else f'{psnr:.1f} dB PSNR'} vs FP32")


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
