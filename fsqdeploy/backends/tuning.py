"""CPU graph variants chosen by measurement on the machine that runs them, as TensorRT picks tactics.

The exact rewrites of fsqdeploy/onnxgraph/rewrites.py (tiny convolutions as one MatMul, transposed
convolutions as phase convolutions) pay off on some CPUs and shapes and lose on others: the rules in
cpu_graphs.py were measured on one machine. ``tune_artifact`` times every candidate combination of
them for each graph of an artifact on this machine, keeps the fastest one whose output equals the
exported graph's (encoder: every index equal; decoder: within the parity gate's 1e-5, since a rewrite
reorders sums), and caches the choice in ``$FSQDEPLOY_CACHE_DIR`` (default ``~/.cache/fsqdeploy``)
under a key of everything that decides the timing and the result: the CPU model and its flags, the
runtime and its version, the thread count, the model and the graphs' sha256. A record whose key
differs, or that does not parse, is never trusted: it is ignored, and tuning writes a new one.

Without a record, the defaults (cpu_graphs.py's rules) apply; they are exact on any CPU, only
possibly slower. With a record, every later load on that machine uses it (``Codec.load``,
``fsqdeploy compress``, ``bench``), so tuning is never repeated for a cached machine.

Timing: each candidate's session is built once, warmed up, then the candidates run in alternating
blocks (benchmarks/backends.py's method) and each one's median is its time, so drift on a shared
machine lands on every candidate alike. Inputs: a patch model's encoder at batch 256 (the size where
the MatMul form was measured to pay; smaller batches keep the default graph), its decoder at 256; a
spatial model's graphs on one 512 x 768 image.

Runtime settings are a family too: the thread count (every core, or one), and for OpenVINO its
performance hint (``PERFORMANCE_HINT``: LATENCY, one stream over all the threads, what runs without
a record; THROUGHPUT, the streams OpenVINO picks for the threads, of which one request uses one).
Which wins depends on the CPU's cores and caches and on the graph, so it is timed like the rewrites,
held to the same equality, and recorded beside them (``hint``); the OpenVINO backend compiles with it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fsqdeploy.artifact import GRAPHS, IMAGES, INDICES, Manifest, graph_file
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_json_atomic
from fsqdeploy.onnxgraph.graph import inline_functions
from fsqdeploy.onnxgraph.rewrites import (
    tiny_convs_as_matmul,
    transposed_convs_for_onnxruntime,
    transposed_to_phase_convs,
)

TUNING_FORMAT = "fsqdeploy-cpu-tuning"
TUNING_VERSION = 2  # 2: OpenVINO performance hints are tuned and recorded
DECODER_TOLERANCE = 1e-5  # the export parity gate's: a rewrite reorders sums, never more
PATCH_BATCH = 256
SPATIAL_SHAPE = (512, 768)
BLOCKS, BLOCK_CALLS, WARMUP = 5, 2, 1
OPENVINO_LANES = 16  # OpenVINO's CPU convolutions vectorise over 16 float32 output channels

# Each rewrite family, by name, as an exact graph -> graph function.
REWRITES: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "matmul": lambda m: tiny_convs_as_matmul(m)[0],
    "phase-ort": lambda m: transposed_convs_for_onnxruntime(m)[0],
    "phase-narrow": lambda m: transposed_to_phase_convs(m, max_out_channels=OPENVINO_LANES - 1)[0],
    "phase-all": lambda m: transposed_to_phase_convs(m)[0],
}
# The families each runtime's candidates combine (at most one phase form at a time).
FAMILIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "onnxruntime": (("matmul",), ("phase-ort",)),
    "openvino": (("matmul",), ("phase-narrow", "phase-all")),
}
# cpu_graphs.py's rules: what runs without a tuning record (large batches for a patch encoder).
DEFAULTS: dict[str, tuple[str, ...]] = {"onnxruntime": ("matmul", "phase-ort"), "openvino": ("matmul", "phase-narrow")}
# Each runtime's performance hints, the default first (None: the runtime has no such setting).
HINTS: dict[str, tuple[str | None, ...]] = {"onnxruntime": (None,), "openvino": ("LATENCY", "THROUGHPUT")}


@dataclass(frozen=True)
class Variant:
    """What a tuning record chose for one graph: its rewrites, thread count and performance hint."""

    rewrites: tuple[str, ...]
    threads: int
    hint: str | None


def candidates(runtime: str) -> list[tuple[str, ...]]:
    """Every combination of the runtime's families, none of them applied first."""
    options = [(None, *family) for family in FAMILIES[runtime]]
    return [tuple(r for r in combo if r) for combo in itertools.product(*options)]


def apply(model: onnx.ModelProto, runtime: str, rewrites: Sequence[str]) -> onnx.ModelProto:
    """The graph as ``runtime`` is handed it: OpenVINO reads no ONNX local functions, so inlined."""
    if runtime == "openvino":
        model = inline_functions(model)
    for name in rewrites:
        model = REWRITES[name](model)
    return model


# -- the cache -------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("FSQDEPLOY_CACHE_DIR") or Path.home() / ".cache" / "fsqdeploy")


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in (platform.processor(), platform.machine()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return {"model": model, "machine": platform.machine(), "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()}


def _runtime_version(runtime: str) -> str:
    if runtime == "openvino":
        import openvino

        return str(openvino.__version__)
    import onnxruntime

    return str(onnxruntime.__version__)


def tuning_key(manifest: Manifest, runtime: str, threads: int | None) -> dict[str, Any]:
    """Everything a timing or a result depends on; a record is used only under exactly this key."""
    return {
        "cpu": _cpu(),
        "runtime": runtime,
        "runtime_version": _runtime_version(runtime),
        "threads": threads,  # None: the thread count is tuned too
        "model_id": manifest.model_id,
        "graphs": {g: manifest.sha256(graph_file(g)) for g in GRAPHS},
        "procedure": TUNING_VERSION,
    }


def _record_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / "tuning" / f"{digest[:32]}.json"


def cached_choice(manifest: Manifest, runtime: str, threads: int | None) -> dict[str, Any] | None:
    """The record for this machine, runtime, thread count and model, or None: a missing, corrupt or
    foreign one (its stored key differs) is not trusted."""
    key = tuning_key(manifest, runtime, threads)
    try:
        record = json.loads(_record_path(key).read_text())
        if record.get("format") != TUNING_FORMAT or record.get("key") != key:
            return None
        for graph in GRAPHS:
            chosen = record["choice"][graph]
            if (not set(chosen["rewrites"]) <= set(REWRITES) or int(chosen["threads"]) < 1
                    or chosen["hint"] not in HINTS[runtime]):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


# -- timing ----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    rewrites: tuple[str, ...]
    threads: int
    hint: str | None
    run: Callable[[], np.ndarray]
    output: np.ndarray
    times_ms: list[float]


def _inputs(manifest: Manifest, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if manifest.spatial:
        return rng.random((1, 3, *SPATIAL_SHAPE), dtype=np.float32)
    s = manifest.image_size
    return rng.random((PATCH_BATCH, 3, s, s), dtype=np.float32)


def _runner(runtime: str, model: onnx.ModelProto, threads: int | None, hint: str | None = None) -> Any:
    data = model.SerializeToString()
    if runtime == "openvino":
        from fsqdeploy.backends.openvino import OpenVINORunner

        return OpenVINORunner(lambda: data, "fp32", threads, hint or HINTS[runtime][0])
    from fsqdeploy.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(lambda: data, "onnxruntime", threads)


def rotating_blocks(runs: Sequence[Callable[[], object]], *, blocks: int, block_calls: int, warmup: int
                    ) -> list[list[float]]:
    """For each of ``runs``, one time per round in ms: the median of a block of ``block_calls`` calls.

    Every run is warmed up, then ``blocks`` rounds each run one block of every run in turn, the order
    rotating from round to round, so drift and a neighbour's load on a shared machine land on every
    run alike and a ratio taken per round compares the same stretch of time. The tuner and the
    benchmarks (runtime/bench/timing.py) both time this way."""
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for r in range(blocks):
        for i in order[r % len(order):] + order[: r % len(order)]:
            block = []
            for _ in range(block_calls):
                start = time.perf_counter()
                runs[i]()
                block.append(1e3 * (time.perf_counter() - start))
            times[i].append(statistics.median(block))
    return times


def tune_graph(runtime: str, graph: str, model: onnx.ModelProto, feed: np.ndarray, threads: int | None
               ) -> dict[str, Any]:
    """Every candidate on ``feed``: its time and whether it equals the untuned graph; the fastest equal one."""
    name, out = (IMAGES, INDICES) if graph == "encoder" else (INDICES, IMAGES)
    # A rewrite that finds nothing to rewrite (a spatial model's convolutions have no static size
    # for the MatMul form) leaves the graph as it was: such a candidate is the same graph, not timed.
    graphs: dict[bytes, tuple[str, ...]] = {}
    for rewrites in candidates(runtime):
        graphs.setdefault(apply(model, runtime, rewrites).SerializeToString(), rewrites)
    cands, runners = [], []
    try:
        for rewrites, (count, hint) in itertools.product(graphs.values(), settings_options(runtime, threads)):
            runner = _runner(runtime, apply(model, runtime, rewrites), count, hint)
            runner.activate()
            runners.append(runner)

            def run(runner: Any = runner) -> np.ndarray:
                return runner.infer({name: feed})[out]

            cands.append(Candidate(rewrites, count, hint, run, run(), []))
        for c, ms in zip(cands, rotating_blocks([c.run for c in cands], blocks=BLOCKS, block_calls=BLOCK_CALLS,
                                                warmup=WARMUP)):
            c.times_ms.extend(ms)
    finally:
        for runner in runners:
            runner.deactivate()
    baseline = cands[0].output  # no rewrite, all threads, default hint: the exported graph as the defaults run it
    rows = []
    for c in cands:
        if graph == "encoder":
            equal = bool(np.array_equal(c.output, baseline))
        else:
            equal = bool(np.abs(c.output.astype(np.float64) - baseline).max() <= DECODER_TOLERANCE)
        rows.append({"rewrites": list(c.rewrites), "threads": c.threads, "hint": c.hint,
                     "ms": statistics.median(c.times_ms), "equal": equal})
    best = min((r for r in rows if r["equal"]), key=lambda r: r["ms"])  # the untuned graph always qualifies
    return {"rewrites": best["rewrites"], "threads": best["threads"], "hint": best["hint"], "ms": best["ms"],
            "untuned_ms": rows[0]["ms"], "candidates": rows}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_options(threads: int | None) -> list[int]:
    """The thread counts to time: the caller's when it named one, else every core and one (a small
    graph can lose more to the threads' hand-offs than it gains; measured, not assumed)."""
    return [threads] if threads else sorted({usable_cores(), 1}, reverse=True)


def settings_options(runtime: str, threads: int | None) -> list[tuple[int, str | None]]:
    """(thread count, performance hint) pairs to time, the defaults' first. A throughput hint on one
    thread is one stream of one thread, the latency hint's graph run: not timed twice."""
    return [(count, hint) for count in thread_options(threads) for hint in HINTS[runtime]
            if hint is None or hint == HINTS[runtime][0] or count > 1]


def tune_artifact(manifest: Manifest, runtime: str, threads: int | None = None, *, force: bool = False
                  ) -> dict[str, Any]:
    """The tuning record for this machine (cached, or measured now and cached); ``force``: measure again."""
    if runtime not in FAMILIES:
        raise FSQDeployError(f"tune: {runtime!r} has no CPU graph variants. Note: use one of {', '.join(FAMILIES)}")
    if not force and (record := cached_choice(manifest, runtime, threads)) is not None:
        return {**record, "cached": True}
    started = time.perf_counter()
    images = _inputs(manifest)
    encoder = onnx.load(str(manifest.require(graph_file("encoder"), "tune")))
    decoder = onnx.load(str(manifest.require(graph_file("decoder"), "tune")))
    choice = {"encoder": tune_graph(runtime, "encoder", encoder, images, threads)}
    indices = _runner(runtime, apply(encoder, runtime, ()), threads)
    with indices:
        feed = indices.infer({IMAGES: images})[INDICES]
    choice["decoder"] = tune_graph(runtime, "decoder", decoder, feed, threads)
    key = tuning_key(manifest, runtime, threads)
    record = {"format": TUNING_FORMAT, "key": key, "choice": choice,
              "inputs": list(images.shape), "seconds": time.perf_counter() - started}
    path = _record_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return {**record, "cached": False}


def chosen_variant(manifest: Manifest, runtime: str, threads: int | None, graph: str) -> Variant | None:
    """The cached choice for one graph, or None (then the defaults apply)."""
    record = cached_choice(manifest, runtime, threads)
    if record is None:
        return None
    chosen = record["choice"][graph]
    return Variant(tuple(chosen["rewrites"]), int(chosen["threads"]), chosen["hint"])
