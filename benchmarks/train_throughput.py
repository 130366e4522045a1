"""Training throughput (images/s) of the paper-shape FSQ-VAE on this machine, batch 128.

    python benchmarks/train_throughput.py [--steps 60] [--threads N]

Times whole optimisation steps (forward, loss, backward, Adam) on sample images after a warm-up,
and prints the median and the spread, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from fsqdeploy import FSQVAE
from fsqdeploy.config import ModelConfig
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.train.losses import fsq_vae_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FSQVAE(ModelConfig()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = load_images("sample", 32).train
    stages = list(model.quantizer.stages)
    times = []
    for step in range(args.warmup + args.steps):
        idx = torch.randint(0, len(images), (args.batch_size,)).numpy()
        start = time.perf_counter()
        x = torch.from_numpy(images_to_float(images[idx]))
        out = model(x)
        loss = fsq_vae_loss(out.logits, x, stages, out.stages, 0.5).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    ips = [args.batch_size / t for t in times]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"train step, batch {args.batch_size}: median {statistics.median(ips):.0f} images/s "
          f"(p10 {sorted(ips)[len(ips) // 10]:.0f}, p90 {sorted(ips)[len(ips) * 9 // 10]:.0f})")


if __name__ == "__main__":
    main()
