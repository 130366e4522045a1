"""Training throughput on this machine: whole optimisation steps (forward, loss, backward, Adam) in
FP32 and under bfloat16 autocast (what ``--amp`` does: the quantizer stays FP32), side by side.

    python benchmarks/train_throughput.py [--arch conv|paper] [--steps 40] [--threads N]

conv (default): the default conv codec on the default batch of random crops (16 x 64 px, as
``fsqdeploy train`` draws them); paper: the paper-shape FSQ-VAE on batches of 128 sample patches.
Prints the median step time and its spread for each precision, the bfloat16 / FP32 ratio, and
whether ``fsqdeploy train`` would autocast on this CPU (it does where the CPU has bfloat16
instructions: oneDNN emulates bfloat16 elsewhere, and the ratio shows what that costs; try it with
ONEDNN_MAX_CPU_ISA=AVX512_CORE or AVX2 set).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fsqdeploy import FSQVAE
from fsqdeploy.config import ModelConfig
from fsqdeploy.runtime.bench.machine import machine_info
from fsqdeploy.train.conv_loop import autocast_bf16
from fsqdeploy.train.losses import fsq_vae_loss


def batches(arch: str, batch_size: int) -> tuple[ModelConfig, Callable[[int], torch.Tensor]]:
    if arch == "paper":
        from fsqdeploy.data import load_images
        from fsqdeploy.images import images_to_float

        images = load_images("sample", 32).train
        return ModelConfig(), lambda step: torch.from_numpy(images_to_float(
            images[torch.randint(0, len(images), (batch_size,)).numpy()]))
    from fsqdeploy.data import sample_photos
    from fsqdeploy.train.commands import ARCH_DEFAULTS, model_config
    from fsqdeploy.train.crops import random_crops

    cfg, photos = model_config("conv", ARCH_DEFAULTS["conv"]), sample_photos()
    return cfg, lambda step: random_crops(photos.train, batch_size, cfg.image_size, 0, step)


def step_times(arch: str, batch_size: int, bf16: bool, warmup: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    cfg, draw = batches(arch, batch_size)
    model = FSQVAE(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stages, recon = list(model.quantizer.stages), "bce" if arch == "paper" else "mse"
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        x = draw(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = fsq_vae_loss(out.logits.float(), x, stages, out.stages, 1.0, recon).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=("conv", "paper"), default="conv")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=0, help="0: 16 (conv) or 128 (paper)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or (128 if args.arch == "paper" else 16)
    machine = machine_info(torch.get_num_threads())
    print(f"machine: {machine['cpu']} ({', '.join(machine['cpu_features']) or 'no listed features'}), torch "
          f"{torch.__version__}, {machine['threads']} threads; {args.arch}, batch {batch}")
    medians = {}
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        ms = sorted(1e3 * t for t in step_times(args.arch, batch, bf16, args.warmup, args.steps))
        medians[name] = statistics.median(ms)
        print(f"{name:>14}: median {medians[name]:.1f} ms per step, {batch * 1e3 / medians[name]:.0f} images/s "
              f"(p10 {ms[len(ms) // 10]:.1f}, p90 {ms[len(ms) * 9 // 10]:.1f} ms)")
    here = autocast_bf16(torch.device("cpu"), amp=True)
    print(f"bf16 / fp32 step time: {medians['bf16 autocast'] / medians['fp32']:.2f}x; fsqdeploy train --amp "
          + ("autocasts here (the CPU has bfloat16 instructions)" if here else
             "trains in FP32 here (no bfloat16 instructions)"))


if __name__ == "__main__":
    main()
