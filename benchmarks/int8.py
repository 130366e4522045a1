"""INT8 (QDQ) against FP32 on ONNX Runtime CPU: index agreement, decoded PSNR and round-trip latency.

    fsqdeploy train --arch paper --data sample --epochs 10 --out /tmp/t10
    fsqdeploy export /tmp/t10 --out /tmp/a10
    python benchmarks/int8.py /tmp/a10 [--methods minmax,entropy,percentile] [--types] [--sensitivity]

For each method, a copy of ART is calibrated (``fsqdeploy.calibration.calibrate_artifact``, the
code behind ``fsqdeploy calibrate``); agreement and PSNR are its record's numbers on the test split.
Latency is one round trip (``Codec.encode`` then ``Codec.decode``) of a batch of test images through
``Codec.load(ART, "onnxruntime", precision=...)``, so FP32 and INT8 pay the same input checks.
The machine is shared: every codec is timed in turn within each repetition (interleaved), the
table shows the median over repetitions of each codec's median, and the ratio is computed per
repetition (FP32 / INT8 of the same repetition) and then its median taken, so load that comes
and goes hits both sides of a ratio alike.

``--types`` adds minmax with int8 activations (S8S8) next to uint8 (U8S8). The FP32 codec is the
one users get: ONNX Runtime on the graphs fsqdeploy/backends/cpu_graphs.py rewrites for its CPU kernels.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fsqdeploy.artifact import read_manifest
from fsqdeploy.calibration.pipeline import calibrate_artifact
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.runtime.codec import Codec


def round_trip_ms(run, x: np.ndarray, inner: int) -> float:
    times = []
    for _ in range(inner):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("art", type=Path)
    parser.add_argument("--methods", default="minmax,entropy,percentile")
    parser.add_argument("--data", default=None, help="calibration data spec (default: the export's)")
    parser.add_argument("--samples", type=int, default=None, help="default: 512, or the whole train split")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    parser.add_argument("--sensitivity", action="store_true")
    parser.add_argument("--types", action="store_true", help="also minmax with int8 activations (S8S8)")
    args = parser.parse_args()
    threads = args.threads or None

    work = Path(tempfile.mkdtemp(prefix="fsqdeploy-int8-bench-"))
    try:
        variants = [(m, m, "uint8") for m in args.methods.split(",")]
        if args.types:
            variants.append(("minmax s8s8", "minmax", "int8"))
        results = {}
        for label, method, act in variants:
            art = work / label.replace(" ", "_")
            shutil.copytree(args.art, art)
            result = calibrate_artifact(art, data=args.data, method=method, samples=args.samples,
                                        sensitivity=args.sensitivity, activation_type=act)
            results[label] = (art, result)
            print(f"calibrated {label}: {result.seconds:.1f} s, INT8 layers "
                  f"{sum(len(v) for v in result.record['int8_layers'].values())}", flush=True)

        manifest = read_manifest(args.art)
        test = load_images(results[variants[0][0]][1].record["data"]["source"], int(manifest["image_size"])).test
        x = images_to_float(np.resize(test, (args.batch, *test.shape[1:])))  # repeats the split if it is short
        runners = {"fp32": Codec.load(args.art, "onnxruntime", threads=threads)}
        for label, (art, _) in results.items():
            runners[label] = Codec.load(art, "onnxruntime", precision="int8", threads=threads)
        calls = {label: (lambda batch, c=c: c.decode(c.encode(batch))) for label, c in runners.items()}
        for call in calls.values():  # warm up: first runs allocate and pick kernels
            call(x)
        times: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(args.reps):
            for label, call in calls.items():
                times[label].append(round_trip_ms(call, x, args.inner))

        import onnxruntime

        print(f"\nmachine: {platform.processor() or platform.machine()}, onnxruntime {onnxruntime.__version__}, "
              f"threads {threads or 'default'}; round trip of {args.batch} images, {args.reps} interleaved "
              f"repetitions x {args.inner} runs; agreement and PSNR on the test split")
        fp32 = statistics.median(times["fp32"])
        head = f"{'':24s} {'agreement':>9s} {'PSNR fp32':>9s} {'PSNR int8':>9s} {'delta':>6s} " \
               f"{'fp32 ms':>8s} {'this ms':>8s} {'speed-up':>8s}  targets"
        print(head)
        for label in calls:
            ms = statistics.median(times[label])
            ratio = statistics.median(f / t for f, t in zip(times["fp32"], times[label]))
            if label in results:
                r = results[label][1].record["results"]
                met = r["targets_met"] and ratio >= 2
                print(f"{label:24s} {100 * r['index_agreement']:8.2f}% {r['psnr_fp32']:9.2f} {r['psnr_int8']:9.2f} "
                      f"{r['psnr_delta']:+6.2f} {fp32:8.1f} {ms:8.1f} {ratio:7.2f}x  {'all met' if met else 'NOT met'}")
            else:
                print(f"{label:24s} {'':9s} {'':9s} {'':9s} {'':6s} {fp32:8.1f} {ms:8.1f} {ratio:7.2f}x")
        for c in runners.values():
            c.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
