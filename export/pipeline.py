"""RUN -> ART: load the checkpoint, export both graphs, pass the parity gate, write the manifest;
then, when asked, the FP16 graphs (``--precision fp16``) and the TensorRT engines (``--trt``).

Everything is written to a temporary directory beside ``--out`` and renamed into place only after
the gate passes and every engine passed its checks, so a failed export leaves nothing behind and a
reader never sees half an artifact. All user-facing validation (opset, precisions, --out, TensorRT
and a GPU for --trt, run dir, data) happens before any file is written.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fsqdeploy.artifact import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DECODER_FILE,
    DEFAULT_EVAL_IMAGES,
    ENCODER_FILE,
    TIMING_CACHE_FILE,
    file_entry,
    io_contract,
    read_manifest,
    write_manifest,
)
from fsqdeploy.backends.onnxruntime import import_onnxruntime
from fsqdeploy.backends.tensorrt_env import require_tensorrt_and_gpu
from fsqdeploy.config import read_config, tile_halos
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.fp16 import check_precision, convert_graphs, fp16_record
from fsqdeploy.export.onnx_export import check_opset, export_graphs
from fsqdeploy.export.parity import ImageSet, ParityReport, patch_image_sets, run_parity, spatial_image_sets
from fsqdeploy.export.prior import add_prior
from fsqdeploy.export.tensorrt.build import build_engines
from fsqdeploy.export.tensorrt.options import BuildOptions
from fsqdeploy.fileio import replace_dir, sha256_file
from fsqdeploy.model import FSQVAE, WEIGHTS_FILE
from fsqdeploy.onnxgraph.graph import DEQUANTIZE_OP, DOMAIN, DOMAIN_VERSION, QUANTIZE_OP

CHECKPOINT_FILES = (f"{CHECKPOINT_DIR}/{CONFIG_FILE}", f"{CHECKPOINT_DIR}/{WEIGHTS_FILE}")


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FSQDeployError(f"export: --out '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FSQDeployError(f"export: --out '{out}' exists and is not empty. Note: pass --force to replace it")


def _data_spec(run_config: dict[str, Any], data: str | None) -> str:
    spec = data or (run_config.get("training") or {}).get("data")
    if not spec or not isinstance(spec, str):
        raise FSQDeployError("export: the run's config.json names no training data. Note: pass --data SPEC")
    return spec


def load_parity_images(run_config: dict[str, Any], image_size: int, count: int, data: str | None
                       ) -> tuple[np.ndarray, str]:
    """The first ``count`` test-split images of the run's data (or ``data``), as float32 in [0, 1]."""
    from fsqdeploy.data import load_images
    from fsqdeploy.images import images_to_float

    if count < 1:
        raise FSQDeployError(f"export: --parity-images must be at least 1, got {count}")
    spec = _data_spec(run_config, data)
    try:
        splits = load_images(spec, image_size)
    except FSQDeployError as e:  # e.g. the run's CIFAR folder is elsewhere on this machine
        raise FSQDeployError(f"{e}; for export, --data SPEC picks other test images") from None
    return images_to_float(splits.test[:count]), splits.source


def load_parity_photos(run_config: dict[str, Any], model: FSQVAE, count: int, data: str | None
                       ) -> tuple[list[ImageSet], np.ndarray, str]:
    """Spatial models: the gate's image sets from the first ``count`` whole test photos of the run's
    data (or ``data``), and those photos cut into training-size patches for the FP16 record."""
    from fsqdeploy.data import load_photos
    from fsqdeploy.images import to_patches

    if count < 1:
        raise FSQDeployError(f"export: --parity-images must be at least 1, got {count}")
    cfg = model.config
    try:
        splits = load_photos(_data_spec(run_config, data), cfg.downsample)
    except FSQDeployError as e:
        raise FSQDeployError(f"{e}; for export, --data SPEC picks other test images") from None
    photos = list(splits.test[:count])
    patches = np.concatenate([to_patches(p, cfg.image_size)[0] for p in photos])
    return spatial_image_sets(photos, cfg.downsample), patches, splits.source


def producer_versions() -> dict[str, str]:
    import onnxruntime
    import torch

    from fsqdeploy import __version__

    return {"fsqdeploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def build_manifest(model: FSQVAE, checkpoint_sha256: str, opset: int, inline: bool, art: Path,
                   report: ParityReport) -> dict[str, Any]:
    cfg = model.config
    spatial = {}
    if cfg.spatial:  # the grid's factor and the halos whole-image tiling needs (runtime/tiles.py)
        encoder_halo, decoder_halo = tile_halos(cfg)
        spatial = {"arch": cfg.arch, "downsample": cfg.downsample,
                   "tiling": {"encoder_halo": encoder_halo, "decoder_halo": decoder_halo}}
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "model_id": checkpoint_sha256,
        **spatial,
        "levels": model.levels,
        "latent_dim": cfg.latent_dim,
        "code_width": model.code_width,
        "image_size": cfg.image_size,
        "stages": cfg.stages,
        "temperature": float(model.quantizer.temperature),
        "opset": opset,
        "inline": inline,
        "custom_domain": None if inline else {"name": DOMAIN, "version": DOMAIN_VERSION,
                                              "ops": [QUANTIZE_OP, DEQUANTIZE_OP]},
        "producer": producer_versions(),
        "checkpoint": {"sha256": checkpoint_sha256},
        "io": io_contract(cfg.image_size, model.code_width, spatial=cfg.spatial),
        "files": {name: file_entry(art / name) for name in (ENCODER_FILE, DECODER_FILE, *CHECKPOINT_FILES)},
        "parity": report.to_manifest(),
    }


def export_artifact(run: Path, out: Path, *, opset: int, inline: bool = False, force: bool = False,
                    parity_images: int = DEFAULT_EVAL_IMAGES, data: str | None = None,
                    precisions: Sequence[str] = ("fp32",), trt: BuildOptions | None = None) -> dict[str, Any]:
    """Write ART (``out``) from RUN; returns the manifest. Raises FSQDeployError, writing nothing.

    ``precisions``: "fp32" graphs are always written; "fp16" adds the FP16 graphs. ``trt``: build
    TensorRT engines of every listed precision (needs TensorRT and an NVIDIA GPU, checked first).
    """
    check_opset(opset)
    for precision in precisions:
        check_precision(precision)
    check_out_dir(out, force)
    import_onnxruntime()  # the parity gate runs the graphs on it: missing, say so before any work
    if trt is not None:
        trt.check()
        require_tensorrt_and_gpu()
    config = read_config(run)
    model = FSQVAE.load(run)
    if model.config.spatial:
        image_sets, images, source = load_parity_photos(config, model, parity_images, data)
    else:
        images, source = load_parity_images(config, model.config.image_size, parity_images, data)
        image_sets = patch_image_sets(images)
    checkpoint_sha256 = sha256_file(Path(run) / WEIGHTS_FILE)
    graphs = export_graphs(model, opset, inline, checkpoint_sha256)
    graphs16 = convert_graphs(graphs, "fp16") if "fp16" in precisions else {}

    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, graph in {**graphs, **graphs16}.items():
            onnx.save(graph, str(work / name))
        # The PyTorch reference travels with the graphs, so bench and Codec(backend="torch") need
        # nothing but ART.
        (work / CHECKPOINT_DIR).mkdir()
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copyfile(Path(run) / name, work / CHECKPOINT_DIR / name)
        report = run_parity(model, work / ENCODER_FILE, work / DECODER_FILE, image_sets, source)
        if not report.passed:
            raise FSQDeployError(report.failure())
        manifest = build_manifest(model, checkpoint_sha256, opset, inline, work, report)
        if graphs16:
            manifest["files"].update({name: file_entry(work / name) for name in sorted(graphs16)})
            manifest["fp16"] = fp16_record(graphs, graphs16, images, source)
        if model.config.spatial:  # the entropy coder's tables, from the training photos (export/prior.py)
            add_prior(work, manifest, model, _data_spec(config, data))
        write_manifest(work, manifest)
        if trt is not None:
            # The timing cache outlives --force: the old ART's cache seeds the new one.
            build_engines(work, list(dict.fromkeys(precisions)), trt, previous_cache=out / TIMING_CACHE_FILE)
            manifest = read_manifest(work)
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest
