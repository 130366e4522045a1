"""Encode + decode of one whole 768x512 photo with a spatial (conv) codec: PyTorch eager against every
CPU backend (ONNX Runtime FP32, OpenVINO FP32 where installed), side by side.

    python benchmarks/whole_image.py [ART] [--size 768x512] [--blocks 7] [--block-calls 3] [--threads N]

The photo is a held-out sample photo (rocket) resized to the size (width x height; both multiples of
the model's f). Without ART a default-shape conv model (``fsqdeploy train``'s conv defaults, random
weights, BatchNorm statistics from a few passes) is exported: its speed is the real model's.

Latency is measured as benchmarks/backends.py measures it, in alternating blocks: for each stage
every backend runs a block of ``--block-calls`` calls in turn, ``--blocks`` rounds, the order
rotating per round; a block's median is its time, the ratio against PyTorch is taken per round
(the same stretch of time for both) and printed as the median with its spread (min-max).

Printed beside the times: the model's FLOPs at that size (every convolution and transposed
convolution, GDN's 1x1 convolutions included, counted by torch.utils.flop_counter on the PyTorch
model: 2 FLOPs per multiply-accumulate), each backend's achieved GFLOP/s, a nominal FP32 peak of
the threads used (so the distance to it is visible), the CPU, and whether every index equals
PyTorch's (it must: the FP32 contract).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("encode", "decode", "roundtrip")
BACKENDS = ("torch", "onnxruntime", "openvino")


def parse_size(text: str) -> tuple[int, int]:
    """"768x512" -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 768x512") from None
    return width, height


def default_artifact(work: Path) -> Path:
    """A default-shape conv model with random weights, exported: the real model's speed, no training."""
    import torch

    from fsqdeploy.checkpoint import save_model
    from fsqdeploy.config import ModelConfig
    from fsqdeploy.export.onnx_export import DEFAULT_OPSET
    from fsqdeploy.export.pipeline import export_artifact
    from fsqdeploy.model import FSQVAE
    from fsqdeploy.train.commands import ARCH_DEFAULTS

    d = ARCH_DEFAULTS["conv"]
    levels = [int(v) for v in d["levels"].split(",")]
    cfg = ModelConfig(arch="conv", image_size=d["image_size"], channels=tuple(int(c) for c in d["channels"].split(",")),
                      latent_dim=d["latent_dim"], levels=levels, linear_path=d["linear_path"])
    torch.manual_seed(0)
    model = FSQVAE(cfg).train()
    with torch.no_grad():  # BatchNorm statistics of a few passes, so the latent spreads over the levels
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64))
    run = work / "run"
    save_model(model.eval(), run, {"data": "sample"})
    art = work / "art"
    export_artifact(run, art, opset=DEFAULT_OPSET)
    print(f"exported a default-shape conv model (random weights) to {art}", file=sys.stderr)
    return art


def test_photo(width: int, height: int) -> np.ndarray:
    """The held-out rocket photo resized to width x height, uint8 [H, W, 3]."""
    from PIL import Image

    from fsqdeploy.data import sample_photos

    photos = sample_photos()
    photo = photos.test[photos.names.index("rocket")]
    return np.asarray(Image.fromarray(photo).resize((width, height), Image.Resampling.BICUBIC))


def model_flops(art: Path, images: np.ndarray, indices: np.ndarray) -> dict[str, int]:
    """FLOPs of the PyTorch model's encoder and decoder on these inputs (2 per multiply-accumulate)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fsqdeploy.artifact import Manifest
    from fsqdeploy.model import FSQVAE

    model = FSQVAE.load(Manifest.load(art).checkpoint_dir)
    out = {}
    for stage, call in (("encode", lambda: model.encode(torch.from_numpy(images))),
                        ("decode", lambda: model.decode(torch.from_numpy(indices)))):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            call()
        out[stage] = int(counter.get_total_flops())
    out["roundtrip"] = out["encode"] + out["decode"]
    return out


def nominal_peak_gflops(machine: dict[str, Any], threads: int) -> tuple[float, str] | None:
    """threads x the clock /proc/cpuinfo reports x FP32 FLOPs per cycle of two FMA units (32 with
    AVX2, 64 with AVX-512): a nominal ceiling, not a measurement; None where the clock is unknown."""
    try:
        mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("cpu MHz"))
    except (OSError, ValueError, IndexError):
        return None
    features = machine["cpu_features"]
    per_cycle = 64 if "avx512f" in features else 32 if "avx2" in features else 8
    return threads * mhz * 1e-3 * per_cycle, f"{threads} threads x {mhz:.0f} MHz x {per_cycle} FLOP/cycle"


def agreement(codecs: dict[str, Any], images: np.ndarray) -> dict[str, tuple[float, float]]:
    """backend -> (share of indices equal to PyTorch's, decoder max abs error on PyTorch's indices)."""
    ref_indices = codecs["torch"].encode(images)
    ref_images = codecs["torch"].decode(ref_indices)
    out = {}
    for label, codec in codecs.items():
        indices = codec.encode(images)
        decoded = codec.decode(ref_indices)
        out[label] = (float(np.mean(indices == ref_indices)),
                      float(np.abs(decoded.astype(np.float64) - ref_images).max()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("art", nargs="?", type=Path, help="spatial artifact directory (default: export one)")
    parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--blocks", type=int, default=7, help="rounds of alternating blocks per stage")
    parser.add_argument("--block-calls", type=int, default=3, help="calls per block")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="threads per backend (default: every core)")
    args = parser.parse_args()

    from fsqdeploy.artifact import Manifest
    from fsqdeploy.images import hwc_uint8_to_chw
    from fsqdeploy.runtime import Codec
    from fsqdeploy.runtime.bench.machine import machine_info
    from fsqdeploy.runtime.bench.settings import usable_cores
    from fsqdeploy.runtime.bench.timing import alternating_blocks, stage_calls

    width, height = parse_size(args.size)
    threads = args.threads or usable_cores()
    with tempfile.TemporaryDirectory(prefix="fsq-whole-image-") as tmp:
        art = args.art or default_artifact(Path(tmp))
        manifest = Manifest.load(art, verify=True)
        f = manifest.downsample
        if not manifest.spatial:
            raise SystemExit(f"{art} is a patch (paper) model; this script times whole-image (conv) codecs")
        if width % f or height % f:
            raise SystemExit(f"--size {args.size}: both sides must be multiples of the model's f = {f}")
        images = hwc_uint8_to_chw(test_photo(width, height)[None])
        codecs = {}
        for name in BACKENDS:
            try:
                codecs[name] = Codec.load(manifest, name, threads=threads)
            except Exception as e:  # noqa: BLE001 - a backend that cannot run here is left out, with why
                print(f"{name}: not timed ({type(e).__name__}: {str(e).splitlines()[0]})", file=sys.stderr)
        if "torch" not in codecs:
            raise SystemExit("PyTorch (the reference) cannot run this artifact")
        try:
            indices = codecs["torch"].encode(images)
            agree = agreement(codecs, images)
            calls = {label: stage_calls(c, images, indices) for label, c in codecs.items()}
            times = alternating_blocks(calls, blocks=args.blocks, block_calls=args.block_calls, warmup=args.warmup)
        finally:
            for c in codecs.values():
                c.close()
        flops = model_flops(art, images, indices)

    machine = machine_info(threads)
    v = machine["versions"]
    print(f"{machine['cpu']} ({', '.join(machine['cpu_features']) or 'no AVX2'}), {threads} threads; "
          f"torch {v['torch']}, onnxruntime {v['onnxruntime']}, openvino {v['openvino']}")
    print(f"model {manifest.model_id[:12]}: conv f={f}, {manifest.code_width} indices per cell; photo {width}x{height} "
          f"-> latent grid {height // f}x{width // f}; {args.blocks} rounds of {args.block_calls}-call blocks per "
          f"stage after {args.warmup} warm-up calls, wall clock")
    print("FLOPs at this size (2 per multiply-accumulate): " + ", ".join(
        f"{stage} {flops[stage] / 1e9:.3f} GFLOP" for stage in STAGES))
    peak = nominal_peak_gflops(machine, threads)
    if peak:
        print(f"nominal FP32 peak: {peak[0]:.0f} GFLOP/s ({peak[1]}; a ceiling, not a measurement)")
    print()
    width_col = 34
    print(f"{'stage':<10}" + "".join(f"{label:>{width_col}}" for label in codecs))
    print(f"{'':<10}" + "".join(f"{'ms  x torch (min-max)  GFLOP/s':>{width_col}}" for _ in codecs))
    for stage in STAGES:
        base = times[("torch", stage)]
        cells = []
        for label in codecs:
            own = times[(label, stage)]
            ratios = [b / o for b, o in zip(base, own)]
            ms = statistics.median(own)
            cells.append(f"{ms:8.2f} {statistics.median(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                         f" {flops[stage] / ms / 1e6:6.1f}")
        print(f"{stage:<10}" + "".join(f"{c:>{width_col}}" for c in cells))
    print()
    for label, (share, error) in agree.items():
        verdict = "" if share == 1.0 else "  <- NOT the FP32 contract"
        print(f"{label:<12} indices equal to PyTorch {100 * share:.4f}%  decoder max abs error {error:.1e}{verdict}")


if __name__ == "__main__":
    from fsqdeploy.errors import FSQDeployError

    try:
        main()
    except FSQDeployError as e:  # a bad artifact or input: its one line, as heldout_vs_jpeg.py does
        raise SystemExit(str(e)) from None
