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

``--profile`` instead says where the time goes: the INT8 graphs ART holds (else a minmax copy is
calibrated first) against the FP32 graphs each runtime runs by default, per graph at ``--batch``,
in ONNX Runtime (its session profiler, each kernel's ``dur`` summed per op type; the profile file
is deleted) and OpenVINO (``PERF_COUNT``: each node's ``real_time`` summed per node type and the
kernel it ran, ``exec_type``, e.g. ``jit_avx2_I8``). Wall times are with the profiler on.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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


PROFILE_RUNS = 10  # timed runs per graph after one warm-up run
TOP_OPS = 6


def ort_profile(model: bytes, feed: dict[str, np.ndarray], threads: int | None, work: Path
                ) -> tuple[np.ndarray, float, collections.Counter]:
    """(output, wall ms per run, ms per run by op type) of one ONNX Runtime CPU session, set up as the
    codec's (inter-op 1, no spinning); the warm-up run is left out of both."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "ort-profile")
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    out = session.run(None, feed)[0]
    start = time.perf_counter()
    for _ in range(PROFILE_RUNS):
        session.run(None, feed)
    wall = 1e3 * (time.perf_counter() - start) / PROFILE_RUNS
    path = Path(session.end_profiling())
    try:
        events = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    runs = [e for e in events if e.get("name") == "model_run"]
    after_warmup = runs[0]["ts"] + runs[0]["dur"]
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > after_warmup:
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / PROFILE_RUNS
    return out, wall, per_op


def ov_profile(model: bytes, feed: dict[str, np.ndarray], threads: int | None
               ) -> tuple[float, collections.Counter]:
    """(wall ms per run, ms per run by "node type/kernel") of one OpenVINO CPU request with PERF_COUNT,
    compiled as the codec's default (LATENCY hint)."""
    import openvino as ov

    config: dict = {"PERF_COUNT": "YES", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    request = core.compile_model(core.read_model(model, b""), "CPU", config).create_infer_request()
    request.infer(feed)
    per_op: collections.Counter = collections.Counter()
    wall = 0.0
    for _ in range(PROFILE_RUNS):
        start = time.perf_counter()
        request.infer(feed)
        wall += time.perf_counter() - start
        for node in request.profiling_info:
            per_op[f"{node.node_type}/{node.exec_type}"] += node.real_time.total_seconds() * 1e3 / PROFILE_RUNS
    return 1e3 * wall / PROFILE_RUNS, per_op


def qdq_ms(per_op: collections.Counter) -> float:
    """Time in the (de)quantize steps themselves: ONNX Runtime's Q/DQ nodes, OpenVINO's FakeQuantize."""
    return sum(ms for name, ms in per_op.items() if name.split("/")[0] in QDQ_OPS)


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize")


def top_ops(per_op: collections.Counter) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in per_op.most_common(TOP_OPS) if ms >= 0.01)


def profile_rows(art: Path, int8_art: Path, batch: int, threads: int | None, work: Path) -> list[dict]:
    """One row per runtime and graph: FP32 and INT8 wall ms and the op types' ms of each."""
    import onnx

    from fsqdeploy.backends.cpu_graphs import for_onnxruntime, for_openvino
    from fsqdeploy.backends.tuning import apply

    manifest = read_manifest(art)
    test = load_images("sample", int(manifest["image_size"])).test
    x = images_to_float(np.resize(test, (batch, *test.shape[1:])))
    fp32 = {g: onnx.load(str(art / f"{g}.onnx")) for g in ("encoder", "decoder")}
    int8 = {g: onnx.load(str(int8_art / f"{g}.int8.onnx")) for g in ("encoder", "decoder")}
    indices, _, _ = ort_profile(for_onnxruntime(fp32["encoder"]).SerializeToString(), {"images": x}, threads, work)
    feeds = {"encoder": {"images": x}, "decoder": {"indices": indices}}
    rows = []
    for g in ("encoder", "decoder"):
        _, f_ms, f_ops = ort_profile(for_onnxruntime(fp32[g]).SerializeToString(), feeds[g], threads, work)
        _, i_ms, i_ops = ort_profile(int8[g].SerializeToString(), feeds[g], threads, work)
        rows.append({"runtime": "onnxruntime", "graph": g, "fp32_ms": f_ms, "int8_ms": i_ms,
                     "fp32_ops": f_ops, "int8_ops": i_ops})
    try:
        import openvino  # noqa: F401
    except ImportError:
        return rows
    for g in ("encoder", "decoder"):
        f_ms, f_ops = ov_profile(for_openvino(fp32[g]).SerializeToString(), feeds[g], threads)
        i_ms, i_ops = ov_profile(apply(int8[g], "openvino", ()).SerializeToString(), feeds[g], threads)
        rows.append({"runtime": "openvino", "graph": g, "fp32_ms": f_ms, "int8_ms": i_ms,
                     "fp32_ops": f_ops, "int8_ops": i_ops})
    return rows


def profile_table(rows: list[dict]) -> str:
    lines = [f"{'runtime':<12} {'graph':<8} {'FP32 ms':>8} {'INT8 ms':>8} {'speed-up':>8}  top op types (ms per run)"]
    for r in rows:
        lines.append(f"{r['runtime']:<12} {r['graph']:<8} {r['fp32_ms']:8.2f} {r['int8_ms']:8.2f} "
                     f"{r['fp32_ms'] / r['int8_ms']:7.2f}x  fp32: {top_ops(r['fp32_ops'])}")
        lines.append(f"{'':<12} {'':<8} {'':>8} {'':>8} {'':>8}  int8: {top_ops(r['int8_ops'])}; "
                     f"Q/DQ {qdq_ms(r['int8_ops']):.2f}")
    for runtime in dict.fromkeys(r["runtime"] for r in rows):
        own = [r for r in rows if r["runtime"] == runtime]
        f, i = sum(r["fp32_ms"] for r in own), sum(r["int8_ms"] for r in own)
        lines.append(f"{runtime:<12} {'both':<8} {f:8.2f} {i:8.2f} {f / i:7.2f}x")
    both = {rt: (sum(r["fp32_ms"] for r in rows if r["runtime"] == rt), sum(r["int8_ms"] for r in rows
                                                                          if r["runtime"] == rt))
            for rt in dict.fromkeys(r["runtime"] for r in rows)}
    best = min(both, key=lambda rt: both[rt][0])
    ort_int8 = both["onnxruntime"][1]
    lines.append(f"onnxruntime INT8 vs the best FP32 ({best}): {both[best][0] / ort_int8:.2f}x")
    return "\n".join(lines)


def profile(args: argparse.Namespace, threads: int | None, work: Path) -> None:
    int8_art = args.art
    if not read_manifest(args.art).get("int8"):
        int8_art = work / "minmax"
        shutil.copytree(args.art, int8_art)
        calibrate_artifact(int8_art, data=args.data, method="minmax", samples=args.samples)
    import onnxruntime

    print(f"machine: {_cpu_model()}, onnxruntime {onnxruntime.__version__}, threads {threads or 'default'}; "
          f"batch {args.batch}, {PROFILE_RUNS} profiled runs per graph after one warm-up; INT8 from {int8_art}")
    print(profile_table(profile_rows(args.art, int8_art, args.batch, threads, work)))


def _cpu_model() -> str:
    from fsqdeploy.runtime.bench.machine import machine_info

    info = machine_info(os.cpu_count() or 1)
    return f"{info['cpu']} ({', '.join(info['cpu_features']) or 'no AVX2'})"


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
    parser.add_argument("--profile", action="store_true", help="per-op-type time of INT8 vs FP32 in both runtimes")
    args = parser.parse_args()
    threads = args.threads or None
    manifest = read_manifest(args.art)  # a missing or foreign ART: its one line before any copy is made

    work = Path(tempfile.mkdtemp(prefix="fsqdeploy-int8-bench-"))
    try:
        if args.profile:
            profile(args, threads, work)
            return
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
    from fsqdeploy.errors import FSQDeployError

    try:
        main()
    except FSQDeployError as e:  # a bad artifact or input: its one line, as heldout_vs_jpeg.py does
        raise SystemExit(str(e)) from None
