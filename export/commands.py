"""The ``export`` and ``check`` commands. User errors are FSQDeployError (one line, exit 2);
failing ``check`` findings print the table and exit 1."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fsqdeploy.artifact import DEFAULT_EVAL_IMAGES, MANIFEST_FILE, TIMING_CACHE_FILE
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.onnx_export import DEFAULT_OPSET, SUPPORTED_OPSETS
from fsqdeploy.export.tensorrt.options import (
    MAX_OPTIMIZATION_LEVEL,
    SPATIAL_MAX_SHAPE,
    SPATIAL_OPT_SHAPE,
    BuildOptions,
    parse_shape,
)

# The help shows BuildOptions' own defaults; a flag left out is None and BuildOptions fills it.
_BUILD = BuildOptions()
# Each BuildOptions field and the --trt flag that sets it.
TRT_FLAGS = {"min_batch": "--min-batch", "opt_batch": "--opt-batch", "max_batch": "--max-batch",
             "workspace_mib": "--workspace", "optimization_level": "--optimization-level",
             "timing_cache": "--timing-cache", "version_compatible": "--version-compatible",
             "hardware_compatible": "--hardware-compatible", "min_shape": "--min-shape", "opt_shape": "--opt-shape",
             "max_shape": "--max-shape"}


def export(
    run: Annotated[Path, typer.Argument(help="Training run directory (config.json + model.safetensors), or an "
                                        "exported artifact to build TensorRT engines into (with --trt).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Artifact directory to create (from a run).")]
    = None,
    opset: Annotated[int | None, typer.Option(help=f"ONNX opset, one of {', '.join(map(str, SUPPORTED_OPSETS))} "
                                              f"[{DEFAULT_OPSET}].")] = None,
    inline: Annotated[bool, typer.Option("--inline", help="Inline the FSQ functions: standard ops only, "
                                         "for runtimes without ONNX local functions.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out directory.")] = False,
    parity_images: Annotated[int | None, typer.Option("--parity-images", help="Test-split images for the parity "
                                                      f"gate [{DEFAULT_EVAL_IMAGES}] (batch size 1 uses the "
                                                      "first 64).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Data spec for the parity gate instead of the "
                                             "run's, e.g. cifar10:DIR when the run's folder moved.")] = None,
    precision: Annotated[list[str] | None, typer.Option(
        "--precision", help="fp32 (default) or fp16: FP16 graphs (encoder.fp16.onnx, decoder.fp16.onnx) with "
        "the quantizer in FP32. Repeat it to build TensorRT engines of both. int8: engines from the "
        "calibrated graphs of an artifact (fsqdeploy export ART --trt --precision int8).")] = None,
    trt: Annotated[bool, typer.Option("--trt", help="Also build TensorRT engines (strongly typed) of each "
                                      "--precision; needs TensorRT and an NVIDIA GPU.")] = False,
    min_batch: Annotated[int | None, typer.Option("--min-batch", help="TensorRT profile: smallest batch "
                                                  f"[{_BUILD.min_batch}].")] = None,
    opt_batch: Annotated[int | None, typer.Option("--opt-batch", help="TensorRT profile: batch to tune for "
                                                  f"[{_BUILD.opt_batch}, within the range].")] = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="TensorRT profile: largest batch "
                                                  f"[{_BUILD.max_batch}]; larger ones run in chunks.")] = None,
    workspace: Annotated[int | None, typer.Option("--workspace", help="TensorRT workspace limit in MiB "
                                                  f"[{_BUILD.workspace_mib}].")] = None,
    optimization_level: Annotated[int | None, typer.Option(
        "--optimization-level",
        help=f"TensorRT builder optimization level 0..{MAX_OPTIMIZATION_LEVEL} [{_BUILD.optimization_level}].")
    ] = None,
    timing_cache: Annotated[Path | None, typer.Option("--timing-cache", help="TensorRT timing cache file to "
                                                      f"read and update [ART/{TIMING_CACHE_FILE}].")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="TensorRT engines that load "
                                                     "on later TensorRT versions too (10.x on 11).")] = False,
    hardware_compatible: Annotated[bool, typer.Option("--hardware-compatible", help="TensorRT engines that "
                                                      "run on every Ampere or newer GPU.")] = False,
    min_shape: Annotated[str | None, typer.Option("--min-shape", help="TensorRT profile of a conv model: "
                                                  "smallest image, HEIGHTxWIDTH pixels [f x f].")] = None,
    opt_shape: Annotated[str | None, typer.Option("--opt-shape", help="TensorRT profile of a conv model: "
                                                  f"image size to tune for [{SPATIAL_OPT_SHAPE[0]}x"
                                                  f"{SPATIAL_OPT_SHAPE[1]}, within the range].")] = None,
    max_shape: Annotated[str | None, typer.Option("--max-shape", help="TensorRT profile of a conv model: "
                                                  f"largest image [{SPATIAL_MAX_SHAPE[0]}x{SPATIAL_MAX_SHAPE[1]}]; "
                                                  "the codec tiles larger ones with --tile.")] = None,
) -> None:
    """Export the encoder+quantizer and decoder ONNX graphs and prove them equal to PyTorch; with
    --precision fp16 also FP16 graphs, with --trt TensorRT engines (docs/tensorrt.md). Given an
    artifact instead of a run, with --trt: build engines into it (int8 after fsqdeploy calibrate)."""
    # A flag is given when its value is not None (a bool flag: True); defaults are applied below,
    # in one place each, so an explicit default (--opset 18) is seen like any other value.
    export_flags = {"--out": out, "--inline": inline or None, "--force": force or None, "--data": data,
                    "--opset": opset, "--parity-images": parity_images}
    build_given = {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch,
                   "workspace_mib": workspace, "optimization_level": optimization_level,
                   "timing_cache": timing_cache, "version_compatible": version_compatible or None,
                   "hardware_compatible": hardware_compatible or None,
                   **{name: None if text is None else parse_shape(text, f"--{name.replace('_', '-')}")
                      for name, text in (("min_shape", min_shape), ("opt_shape", opt_shape),
                                         ("max_shape", max_shape))}}
    precisions = list(dict.fromkeys(precision or ["fp32"]))
    if not run.is_dir():
        raise FSQDeployError(f"export: '{run}' does not exist. Note: pass a training run directory, or an "
                             "artifact with --trt")
    into_artifact = (run / MANIFEST_FILE).is_file()
    if into_artifact and not trt:
        raise FSQDeployError(f"export: '{run}' is an exported artifact. Note: add --trt to build TensorRT engines "
                             "into it, or export from a training run")
    if into_artifact:
        flag = _first_given(export_flags)
        if flag:
            raise FSQDeployError(f"export: {flag} does not apply when building engines into the artifact '{run}'")
    if not into_artifact and "int8" in precisions:
        raise FSQDeployError("export: int8 engines are built from calibrated graphs. Note: fsqdeploy export RUN "
                             "--out ART, fsqdeploy calibrate ART, then fsqdeploy export ART --trt --precision int8")
    if not into_artifact and out is None:
        raise FSQDeployError("export: --out is required. Note: fsqdeploy export RUN --out ART")
    if not trt:
        flag = _first_given({TRT_FLAGS[name]: value for name, value in build_given.items()})
        if flag:
            raise FSQDeployError(f"export: {flag} only applies to TensorRT engines. Note: add --trt")
    options = BuildOptions.from_given(_spatial_factor(run, into_artifact), **build_given) if trt else None

    started = time.perf_counter()
    if into_artifact and options is not None:
        from fsqdeploy.export.tensorrt.build import build_engines

        summary = build_engines(run, precisions, options)
        typer.echo(describe_engines({k: v for k, v in summary.items() if k in precisions})
                   + f"; {time.perf_counter() - started:.1f} s")
        return
    from fsqdeploy.export.fp16 import describe_fp16
    from fsqdeploy.export.pipeline import export_artifact

    assert out is not None  # checked above: a run needs --out
    manifest = export_artifact(run, out, opset=DEFAULT_OPSET if opset is None else opset, inline=inline,
                               force=force, data=data, precisions=precisions, trt=options,
                               parity_images=DEFAULT_EVAL_IMAGES if parity_images is None else parity_images)
    p = manifest["parity"]
    files = ", ".join(f"{name} ({entry['size'] / 1024:.0f} KiB)" for name, entry in manifest["files"].items())
    lines = [
        f"exported {out}: {files}; opset {manifest['opset']}{', inlined' if inline else ''}",
        f"parity ({p['data']}, {p['images']} images, batch sizes {p['batch_sizes']}{_sizes(p)}): indices "
        f"{100 * p['index_agreement']:.4g}% equal, max abs error {p['max_abs_error']:.2g}, "
        f"{p['adversarial_cases']} adversarial inputs equal; nearest latent to a threshold "
        f"{p['min_threshold_distance']:.2g}",
    ]
    if "fp16" in manifest and "fp16" in precisions:
        lines.append(describe_fp16(manifest["fp16"]))
    if options is not None and manifest.get("tensorrt"):
        lines.append(describe_engines({k: v for k, v in manifest["tensorrt"].items() if k in precisions}))
    lines[-1] += f"; {time.perf_counter() - started:.1f} s"
    typer.echo("\n".join(lines))


def _first_given(flags: dict[str, Any]) -> str | None:
    return next((flag for flag, value in flags.items() if value is not None), None)


def describe_engines(summary: dict[str, Any]) -> str:
    """One line per precision of the manifest's ``tensorrt`` record, for the export's report."""
    lines = []
    for precision, entry in summary.items():
        facts, p = entry["facts"], entry["profile"]
        q = [e["quantizer"]["engine"] for e in entry["engines"].values()]
        layers = sum(x["layers"] for x in q)
        precs = sorted({pr for x in q for pr in x["precisions"]})
        lines.append(f"tensorrt {precision}: {', '.join(e['file'] for e in entry['engines'].values())} for "
                     f"{facts['gpu_name']} (sm {facts['compute_capability']}, TensorRT {facts['tensorrt_version']}), "
                     f"batch {p['min']}..{p['max']} (opt {p['opt']}){_shape_range(p)}; quantizer layers {layers}, "
                     f"tensor types {', '.join(precs) or 'none listed'}")
    return "\n".join(lines)


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


def _sizes(parity: dict[str, Any]) -> str:
    """A spatial artifact's gate sizes, once each in the order run: ", sizes 400x600 ... 8x24"."""
    sizes = dict.fromkeys(f"{h}x{w}" for h, w in parity.get("image_sizes", []))
    return f", sizes {' '.join(sizes)}" if sizes else ""


def _spatial_factor(source: Path, into_artifact: bool) -> int | None:
    """f of a spatial (conv) model, read from the artifact's manifest or the run's config; None for
    a patch model. Its TensorRT profile then covers height and width (BuildOptions.from_given)."""
    from fsqdeploy.artifact import Manifest
    from fsqdeploy.config import model_config_from_dict, read_config

    if into_artifact:
        manifest = Manifest.load(source)
        return manifest.downsample if manifest.spatial else None
    cfg = model_config_from_dict(read_config(source))
    return cfg.downsample if cfg.spatial else None


def _shape_range(profile: dict[str, Any]) -> str:
    """", images 8x8..2048x2048 (opt 512x768)" for a spatial engine's profile, else ""."""
    if "min_shape" not in profile:
        return ""
    lo, opt, hi = ("x".join(map(str, profile[k])) for k in ("min_shape", "opt_shape", "max_shape"))
    return f", images {lo}..{hi} (opt {opt})"
