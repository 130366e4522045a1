"""The ``calibrate`` command. User errors are FSQDeployError: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsqdeploy.calibration.data import DEFAULT_SAMPLES
from fsqdeploy.calibration.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_EVAL_IMAGES
from fsqdeploy.calibration.quantize import METHODS


def calibrate(
    art: Annotated[Path, typer.Argument(help="Artifact directory written by fsqdeploy export.")],
    data: Annotated[str | None, typer.Option("--data", help="sample | folder:DIR | cifar10:DIR (default: the "
                                             "data the export's parity gate used).")] = None,
    method: Annotated[str, typer.Option("--method", help=f"Range calibration: {' | '.join(METHODS)}.")] = "minmax",
    samples: Annotated[int | None, typer.Option("--samples", help="Training-split images to calibrate on "
                                                f"(default: {DEFAULT_SAMPLES}, or all if the split is smaller).")]
    = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Calibration batch size; --samples must be at "
                                            "least this.")] = DEFAULT_BATCH_SIZE,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Score every layer alone in INT8 and keep "
                                              "the worst in float until the targets hold.")] = False,
    eval_images: Annotated[int, typer.Option("--eval-images", help="Test-split images the targets are measured "
                                             "on.")] = DEFAULT_EVAL_IMAGES,
) -> None:
    """Write INT8 (QDQ) graphs calibrated on real images: encoder.int8.onnx and decoder.int8.onnx for ONNX
    Runtime, encoder.int8.trt.onnx and decoder.int8.trt.onnx for TensorRT, and calibration.json."""
    from fsqdeploy.calibration.accuracy import Accuracy
    from fsqdeploy.calibration.pipeline import INT8_FILES, calibrate_artifact
    from fsqdeploy.calibration.record import RECORD_FILE
    from fsqdeploy.calibration.tensorrt_graphs import TENSORRT_FILES

    result = calibrate_artifact(art, data=data, method=method, samples=samples, batch_size=batch_size,
                                sensitivity=sensitivity, eval_images=eval_images)
    record = result.record
    settings = record["settings"]
    what = (f"{record['method']} on {record['samples']} images of {record['data']['source']} "
            f"(batch {settings['batch_size']}{', sensitivity pass' if settings['sensitivity'] else ''})")
    if result.reused:
        typer.echo(f"reusing calibration record {art / RECORD_FILE}: {what}; same model, data and settings")
    else:
        if result.reasons:
            typer.echo(f"recalibrating: {'; '.join(result.reasons)}")
        typer.echo(f"calibrated {art}: {what} in {result.seconds:.1f} s")
    for graph in ("encoder", "decoder"):
        layers = record["int8_layers"][graph]
        kept = [f"{name} ({why})" for name, why in record["float_nodes"][graph].items() if why != "sensitivity"]
        if record["sensitivity"] and record["sensitivity"][graph]["kept"]:
            kept.append(f"{', '.join(record['sensitivity'][graph]['kept'])} (sensitivity)")
        typer.echo(f"  {graph}: {len(layers)} layer(s) in INT8; in float: {', '.join(kept) or 'nothing'}")
    r = record["results"]
    typer.echo(f"  test split ({r['images']} images of {r['data']}): {result.accuracy.summary()}")
    trt = Accuracy.from_json(record["tensorrt"]["results"])
    typer.echo(f"  TensorRT graphs (int8 activations with zero point 0, measured on ONNX Runtime CPU): {trt.summary()}")
    files = [*INT8_FILES.values(), *TENSORRT_FILES.values(), RECORD_FILE]
    typer.echo(f"  files: {', '.join(files)}; manifest updated. Note: fsqdeploy export {art} --trt --precision int8 "
               "builds TensorRT engines from them")
    if not r["targets_met"] and not record["settings"]["sensitivity"]:
        typer.echo("  Note: rerun with --sensitivity to keep the layers INT8 hurts most in float")
