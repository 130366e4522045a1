"""Every CPU backend side by side on one artifact: PyTorch eager, ONNX Runtime, OpenVINO FP32 and BF16.

    python benchmarks/backends.py [ART] [--run RUN] [--seconds 1] [--threads N] [--batch-sizes 1,64,256]

Without ART it exports RUN, or, without RUN, trains a paper-shape model (default channels and
latent) for one epoch on the sample photos and exports that: its speed is the real model's, its
fidelity a fresh model's. Fidelity comes from fsqdeploy.runtime.bench (the same code as
``fsqdeploy bench``). Latency is measured here in alternating blocks: every backend's codec is
loaded once, then for each batch size and stage ``--blocks`` rounds each run a block of
``--block-calls`` calls of every backend in turn (the order rotating per round). A block's median is
its time; the ratio against PyTorch is taken per round (the same stretch of time for both) and the
table shows the median ratio with its spread over rounds (min-max), so drift and a neighbour's load
on a shared machine hit both sides of a ratio alike and a quoted ratio says how much it moves.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fsqdeploy.runtime.bench import STAGES, BackendSpec, BenchSettings, Gates, parse_batch_sizes, run_bench
from fsqdeploy.runtime.bench.timing import alternating_blocks, cycle, round_ratios, stage_calls

BACKENDS = [BackendSpec("torch"), BackendSpec("onnxruntime"), BackendSpec("openvino"), BackendSpec("openvino", "bf16")]


def quick_artifact(work: Path, run: Path | None) -> Path:
    """Export ``run``, or train the paper-shape model for one epoch on sample and export it."""
    from fsqdeploy.config import ModelConfig, TrainConfig
    from fsqdeploy.export.onnx_export import DEFAULT_OPSET
    from fsqdeploy.export.pipeline import export_artifact

    if run is None:
        from fsqdeploy.train.loop import train

        run = work / "run"
        started = time.perf_counter()
        train(ModelConfig(), TrainConfig(data="sample", epochs=1, device="cpu"), run)
        print(f"trained {run} (1 epoch on sample) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    art = work / "art"
    export_artifact(run, art, opset=DEFAULT_OPSET, parity_images=512)
    return art


def time_backends(art: Path, specs: list[BackendSpec], batch_sizes: list[int], *, blocks: int,
                       block_calls: int, warmup: int, threads: int | None) -> dict[tuple[str, int, str], list[float]]:
    """(label, batch, stage) -> one time per round (the median of a block of calls, in ms), with every
    backend's blocks of a round run back to back, in an order that rotates from round to round."""
    from fsqdeploy.data import load_images
    from fsqdeploy.images import images_to_float
    from fsqdeploy.runtime import Codec

    codecs = {}
    for spec in specs:
        try:
            codecs[spec.label] = Codec.load(art, spec.backend, precision=spec.precision, threads=threads)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run here is left out, with why
            print(f"{spec.label}: not timed ({type(e).__name__}: {str(e).splitlines()[0]})", file=sys.stderr)
    try:
        first = next(iter(codecs.values()))
        images = images_to_float(load_images("sample", first.image_size).test[:256])
        indices = first.encode(images)
        times: dict[tuple[str, int, str], list[float]] = {}
        for batch in batch_sizes:
            calls = {label: stage_calls(c, cycle(images, batch), cycle(indices, batch)) for label, c in codecs.items()}
            rounds = alternating_blocks(calls, STAGES, blocks=blocks, block_calls=block_calls, warmup=warmup)
            times.update({(label, batch, stage): ms for (label, stage), ms in rounds.items()})
        return times
    finally:
        for c in codecs.values():
            c.close()


def side_by_side(times: dict[tuple[str, int, str], list[float]], batch_sizes: list[int]) -> str:
    """One line per (batch, stage): each backend's median block time in ms and its median speed-up
    over PyTorch eager in the same round, with the spread of that ratio over the rounds."""
    labels = list(dict.fromkeys(label for label, _, _ in times))
    width = 30
    lines = [f"{'batch':>5}  {'stage':<9}" + "".join(f"{label:>{width}}" for label in labels),
             f"{'':>5}  {'':<9}" + "".join(f"{'ms  x torch (min-max)':>{width}}" for _ in labels)]
    for batch in batch_sizes:
        for stage in STAGES:
            base = times.get(("torch", batch, stage))
            cells = []
            for label in labels:
                own = times[(label, batch, stage)]
                cell = f"{statistics.median(own):8.3f}"
                if base:
                    ratio, low, high = round_ratios(base, own)
                    cell += f" {ratio:5.2f}x ({low:.2f}-{high:.2f})"
                cells.append(cell)
            lines.append(f"{batch:>5}  {stage:<9}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def fidelity_lines(report: dict[str, Any], times: dict[tuple[str, int, str], list[float]], largest: int) -> str:
    """Each backend's agreement with PyTorch, BF16's next to its speed-up over OpenVINO FP32."""
    lines = []
    for f in report["fidelity"]:
        label = BackendSpec(f["backend"], f["precision"]).label
        line = (f"{label:<14} indices equal {100 * f['index_agreement']:8.4f}%  images with a flip "
                f"{100 * f['flipped_image_share']:6.2f}%  PSNR vs torch "
                f"{min(f['roundtrip_psnr_vs_reference'], 100):6.2f} dB  decoder max err {f['max_abs_error']:.1e}")
        base, own = times.get(("openvino", largest, "roundtrip")), times.get((label, largest, "roundtrip"))
        if f["precision"] != "fp32" and base and own:
            speed = round_ratios(base, own)[0]
            line += f"  | roundtrip at batch {largest}: {speed:.2f}x OpenVINO FP32"
        lines.append(line)
    for k in report["skipped"]:
        lines.append(f"{BackendSpec(k['backend'], k['precision']).label:<14} skipped: {k['reason']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("art", nargs="?", type=Path, help="artifact directory (default: export one)")
    parser.add_argument("--run", type=Path, help="training run to export when no ART is given")
    parser.add_argument("--batch-sizes", default="1,64,256")
    parser.add_argument("--blocks", type=int, default=7, help="rounds of alternating blocks per measurement")
    parser.add_argument("--block-calls", type=int, default=10, help="calls per block")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--images", type=int, default=512, help="fidelity set size")
    args = parser.parse_args()

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    # bench gives the fidelity rows and the machine; its own one-stretch latency is not used here
    settings = BenchSettings(backends=BACKENDS, batch_sizes=[1], data=None, images=args.images, warmup=0, iters=1,
                             threads=args.threads, gates=Gates(min_index_agreement_reduced=0.0,
                                                               min_psnr_vs_reference=0.0),
                             baselines=False, tile_size=0)
    with tempfile.TemporaryDirectory(prefix="fsq-backends-") as tmp:
        art = args.art or quick_artifact(Path(tmp), args.run)
        report = run_bench(art, settings, progress=lambda msg: print(msg, file=sys.stderr))
        runnable = [s for s in BACKENDS if any((k["backend"], k["precision"]) == (s.backend, s.precision)
                                               for k in report["fidelity"])]
        times = time_backends(art, runnable, batch_sizes, blocks=args.blocks, block_calls=args.block_calls,
                                   warmup=args.warmup, threads=args.threads)
    m, a = report["machine"], report["artifact"]
    v = m["versions"]
    print(f"{m['cpu']} ({', '.join(m['cpu_features']) or 'no AVX2'}), {m['threads']} threads; torch {v['torch']}, "
          f"onnxruntime {v['onnxruntime']}, openvino {v['openvino']}")
    print(f"model {a['model_id'][:12]}: {a['image_size']} px, {a['code_width']} indices, levels "
          f"{sorted(set(a['levels']))}, {a['bits_per_image']} bits/image; {args.blocks} rounds of "
          f"{args.block_calls}-call blocks per measurement after {args.warmup} warm-up calls, wall clock")
    print()
    print(side_by_side(times, batch_sizes))
    print()
    print(fidelity_lines(report, times, max(batch_sizes)))


if __name__ == "__main__":
    main()
