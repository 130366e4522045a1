"""What needs a CUDA GPU but not TensorRT: the PyTorch reference on the GPU and bench's GPU clock.

Marked ``gpu``; they skip with the reason where torch sees no CUDA device, and run in
scripts/gpu_check.sh on a lent GPU machine (which has no TensorRT, so the TensorRT tests skip
there while these run).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.runtime import Codec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to PyTorch"),
]


def test_the_gpu_reference_agrees_with_the_cpu_reference(art32):
    """Same checkpoint on both devices: indices equal but where a latent lies within the two devices'
    rounding differences of a threshold, and the decoders agree to float32 rounding on the same indices."""
    images = images_to_float(load_images("sample", 32).test[:256])
    with Codec.load(art32.art, "torch") as cpu, Codec.load(art32.art, "torch", device="cuda") as gpu:
        idx_cpu, idx_gpu = cpu.encode(images), gpu.encode(images)
        agreement = float((idx_cpu == idx_gpu).mean())
        error = float(np.abs(cpu.decode(idx_cpu) - gpu.decode(idx_cpu)).max())
    assert agreement >= 0.999, agreement
    assert error < 1e-4, error


def test_bench_times_the_gpu_reference_with_cuda_events(art32):
    from fsqdeploy.runtime import bench
    from fsqdeploy.runtime.bench import BackendSpec

    settings = bench.BenchSettings(backends=[BackendSpec("torch"), BackendSpec("onnxruntime")], batch_sizes=[1, 64],
                                   warmup=1, iters=3, images=64, baselines=False, tile_size=0)
    report = bench.run_bench(art32.art, settings)
    gpu_rows = [r for r in report["results"] if r["backend"] == "torch" and r.get("device") == "cuda"]
    assert gpu_rows and all(r["timing"] == "cuda-events" for r in gpu_rows)
    assert all(r["latency_ms"]["p50"] > 0 for r in gpu_rows)
    assert all(r["timing"] == "wall" for r in report["results"] if r["backend"] == "onnxruntime")


def test_conv_training_on_cuda_uses_mixed_precision_with_an_fp32_quantizer(tmp_path):
    """A few bfloat16-autocast steps on the GPU: the latent reaching the quantizer is float32, the loss
    is finite, and the saved checkpoint reloads on the CPU with the same indices as on the GPU."""
    from fsqdeploy import FSQVAE
    from fsqdeploy.config import ModelConfig, TrainConfig
    from fsqdeploy.data import sample_photos
    from fsqdeploy.fsq import parse_levels
    from fsqdeploy.train.conv_loop import train_conv

    cfg = ModelConfig(arch="conv", image_size=32, channels=(8, 8, 8), latent_dim=4, levels=parse_levels("8,5,5,5", 4))
    seen: list[torch.dtype] = []
    original = FSQVAE.forward

    def spy(self, images):
        out = original(self, images)
        seen.extend(s.bounded.dtype for s in out.stages)
        return out

    FSQVAE.forward = spy
    try:
        model = train_conv(cfg, TrainConfig(steps=4, eval_every=2, batch_size=4, recon_loss="mse", quant_weight=0.0,
                                            entropy_weight=0.0, temperature_schedule="constant", epochs=0),
                           tmp_path, photos=sample_photos(), device=torch.device("cuda"))
    finally:
        FSQVAE.forward = original
    assert seen and all(dtype == torch.float32 for dtype in seen)
    x = torch.rand(1, 3, 64, 96)
    agreement = float((model.encode(x.cuda()).cpu() == FSQVAE.load(tmp_path, "cpu").encode(x)).float().mean())
    assert agreement >= 0.999, agreement  # devices may differ by an ulp next to a threshold, as above
