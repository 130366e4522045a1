"""Every CPU backend side by side on one artifact: PyTorch eager, ONNX Runtime, OpenVINO FP32 and BF16.

    python benchmarks/backends.py [ART] [--run RUN] [--seconds 1] [--threads N] [--batch-sizes 1,64,256]

Without ART it exports RUN, or, without RUN, trains a paper-shape model (default channels and
latent) for one epoch on the sample photos and exports that: its speed is the real model's, its
fidelity a fresh model's. Timing and fidelity come from fsqdeploy.runtime.bench (the same code as
``fsqdeploy bench``); this script only lays the numbers out as ratios against PyTorch eager, with
BF16's index agreement beside its speed. Run it twice on a shared machine: p50 is robust to a
few slow calls, not to a neighbour that takes a core for the whole run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fsqdeploy.runtime.bench import STAGES, BackendSpec, BenchSettings, Gates, parse_batch_sizes, run_bench

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


def side_by_side(report: dict[str, Any]) -> str:
    """One line per (batch, stage): each backend's p50 in ms and its speed-up over PyTorch eager."""
    labels = [s.label for s in BACKENDS if any(
        (r["backend"], r["precision"]) == (s.backend, s.precision) for r in report["results"])]
    p50 = {(BackendSpec(r["backend"], r["precision"]).label, r["batch_size"], r["stage"]): r["latency_ms"]["p50"]
           for r in report["results"] if r["device"] == "cpu"}  # not the torch:cuda row bench adds on a GPU
    width = 22
    lines = [f"{'batch':>5}  {'stage':<9}" + "".join(f"{label:>{width}}" for label in labels),
             f"{'':>5}  {'':<9}" + "".join(f"{'p50 ms (x torch)':>{width}}" for _ in labels)]
    for batch in report["settings"]["batch_sizes"]:
        for stage in STAGES:
            base = p50.get(("torch", batch, stage))
            cells = []
            for label in labels:
                ms = p50[(label, batch, stage)]
                ratio = f" ({base / ms:5.2f}x)" if base else ""
                cells.append(f"{ms:>10.3f}{ratio}")
            lines.append(f"{batch:>5}  {stage:<9}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def fidelity_lines(report: dict[str, Any]) -> str:
    """Each backend's agreement with PyTorch, BF16's next to its speed-up over OpenVINO FP32."""
    p50 = {(r["backend"], r["precision"], r["batch_size"], r["stage"]): r["latency_ms"]["p50"]
           for r in report["results"]}
    largest = max(report["settings"]["batch_sizes"])
    lines = []
    for f in report["fidelity"]:
        label = BackendSpec(f["backend"], f["precision"]).label
        line = (f"{label:<14} indices equal {100 * f['index_agreement']:8.4f}%  images with a flip "
                f"{100 * f['flipped_image_share']:6.2f}%  PSNR vs torch "
                f"{min(f['roundtrip_psnr_vs_reference'], 100):6.2f} dB  decoder max err {f['max_abs_error']:.1e}")
        if f["precision"] != "fp32" and ("openvino", "fp32", largest, "roundtrip") in p50:
            speed = p50[("openvino", "fp32", largest, "roundtrip")] / p50[(f["backend"], f["precision"], largest,
                                                                            "roundtrip")]
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
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--images", type=int, default=512, help="fidelity set size")
    args = parser.parse_args()

    settings = BenchSettings(backends=BACKENDS, batch_sizes=parse_batch_sizes(args.batch_sizes), data=None,
                             images=args.images, warmup=args.warmup, seconds=args.seconds, threads=args.threads,
                             gates=Gates(min_index_agreement_reduced=0.0, min_psnr_vs_reference=0.0),
                             baselines=False)
    with tempfile.TemporaryDirectory(prefix="fsq-backends-") as tmp:
        art = args.art or quick_artifact(Path(tmp), args.run)
        report = run_bench(art, settings, progress=lambda msg: print(msg, file=sys.stderr))
    m, a = report["machine"], report["artifact"]
    v = m["versions"]
    print(f"{m['cpu']} ({', '.join(m['cpu_features']) or 'no AVX2'}), {m['threads']} threads; torch {v['torch']}, "
          f"onnxruntime {v['onnxruntime']}, openvino {v['openvino']}")
    print(f"model {a['model_id'][:12]}: {a['image_size']} px, {a['code_width']} indices, levels "
          f"{sorted(set(a['levels']))}, {a['bits_per_image']} bits/image; "
          f"{report['settings']['seconds']:g} s per measurement after {args.warmup} warm-up calls, wall clock")
    print()
    print(side_by_side(report))
    print()
    print(fidelity_lines(report))


if __name__ == "__main__":
    main()
