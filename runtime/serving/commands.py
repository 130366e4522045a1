"""The serving command: ``fsqdeploy triton ART --out REPO`` (registered in fsqdeploy/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsqdeploy.runtime.serving.triton import BACKENDS, DEFAULT_MAX_BATCH, DEFAULT_NAME, PRECISIONS


def triton(
    art: Annotated[Path, typer.Argument(help="Artifact directory written by fsqdeploy export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The model repository to write (a new directory).")],
    precision: Annotated[str, typer.Option(help=f"Which graphs or engines to serve: {' | '.join(PRECISIONS)}.")]
    = "fp32",
    backend: Annotated[str, typer.Option(
        help=f"{' | '.join(BACKENDS)}: Triton's ONNX Runtime backend on the ONNX graphs, or its TensorRT backend on "
        "the artifact's engines (fsqdeploy export --trt, built on a GPU like the server's).")] = "onnxruntime",
    max_batch_size: Annotated[int | None, typer.Option(
        "--max-batch-size", help=f"Largest batch one model call takes (default: {DEFAULT_MAX_BATCH[False]} for patch "
        f"models, {DEFAULT_MAX_BATCH[True]} whole images for spatial ones; never above an engine's profile).")] = None,
    instances: Annotated[int, typer.Option(help="Model instances per device (instance_group count).")] = 1,
    name: Annotated[str, typer.Option(help="The codec's model name: NAME (the ensemble), NAME_encoder, "
                                      "NAME_decoder.")] = DEFAULT_NAME,
    force: Annotated[bool, typer.Option(help="Replace an existing REPO.")] = False,
) -> None:
    """Write a Triton Inference Server model repository: the encoder, the decoder and an ensemble
    (images -> indices, reconstruction), with the FSQ contract in each model's parameters (docs/serving.md)."""
    from fsqdeploy.runtime.serving.triton import RepositoryOptions, write_repository

    options = RepositoryOptions(precision=precision, backend=backend, max_batch_size=max_batch_size,
                                instances=instances, name=name)
    names = write_repository(art, out, options, force=force)
    typer.echo(f"wrote {out}: {', '.join(names.values())} ({backend}, {precision})")
