"""Latency: clocks, the warm-up-then-time loop, and one result row per batch size, stage and I/O placement.

What is timed is the backend's inference (``runner.infer``): the Codec's input validation is the
same NumPy code for every backend, so it is left out. Warm-up calls are never recorded.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fsqdeploy.artifact import IMAGES, INDICES
from fsqdeploy.backends.tuning import rotating_blocks
from fsqdeploy.runtime.bench.machine import torch_has_cuda
from fsqdeploy.runtime.bench.settings import DEFAULT_SECONDS, MAX_ITERS, BackendSpec, BenchSettings
from fsqdeploy.runtime.codec import Codec

STAGES = ("encode", "decode", "roundtrip")
MIN_ITERS = 5  # a --seconds measurement always has at least this many samples


class Clock(Protocol):
    """Times one call in seconds; ``name`` goes into every result row as ``timing``."""

    name: str

    def __call__(self, fn: Callable[[], object]) -> float: ...


class WallClock:
    """Host wall-clock time: every CPU backend's calls are synchronous on the host."""

    name = "wall"

    def __call__(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


class CudaEventClock:
    """GPU time between two CUDA events recorded on torch's current stream around the call, waiting
    for the second. The GPU is idle when the first is recorded (the previous call was waited for), so
    host-side launch overhead is counted in full, and so is work the call leaves queued. A runtime that
    runs on a stream of its own and returns only when done (ONNX Runtime's GPU providers) is, on this
    clock, its host wall time."""

    name = "cuda-events"

    def __call__(self, fn: Callable[[], object]) -> float:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds


def clock_for(spec: BackendSpec, cuda: bool | None = None) -> Clock:
    """CUDA events for a row on the GPU when PyTorch has CUDA (``cuda``, default: ask torch); the host
    wall clock otherwise, e.g. onnxruntime-gpu beside a CPU build of PyTorch, which has no events."""
    events = spec.clock == CudaEventClock.name and (torch_has_cuda() if cuda is None else cuda)
    return CudaEventClock() if events else WallClock()


def measure(fn: Callable[[], object], clock: Clock, *, warmup: int, iters: int | None = None,
            seconds: float | None = None) -> list[float]:
    """Call ``fn`` ``warmup`` times unrecorded, then time it ``iters`` times, or for ``seconds``
    (at least MIN_ITERS calls). Returns each timed call's duration in seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if iters is not None:
        return [clock(fn) for _ in range(iters)]
    budget = DEFAULT_SECONDS if seconds is None else seconds
    started = time.perf_counter()
    while len(times) < MAX_ITERS and (len(times) < MIN_ITERS or time.perf_counter() - started < budget):
        times.append(clock(fn))
    return times


def latency_stats(times: Sequence[float], batch_size: int) -> dict[str, Any]:
    ms = np.asarray(times, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return {
        "latency_ms": {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean},
        "throughput_ips": batch_size / (mean / 1e3),
        "samples": len(times),
    }


def alternating_blocks(calls: Mapping[str, Mapping[str, Callable[[], object]]], stages: Sequence[str] = STAGES, *,
                       blocks: int, block_calls: int, warmup: int) -> dict[tuple[str, str], list[float]]:
    """(label, stage) -> one time per round in ms: per stage, every label's calls timed in rotating
    blocks (fsqdeploy.backends.tuning.rotating_blocks, the tuner's method), so a ratio of two labels
    taken per round (``round_ratios``) compares the same stretch of time."""
    labels = list(calls)
    times: dict[tuple[str, str], list[float]] = {}
    for stage in stages:
        rounds = rotating_blocks([calls[label][stage] for label in labels], blocks=blocks, block_calls=block_calls,
                                 warmup=warmup)
        times.update({(label, stage): ms for label, ms in zip(labels, rounds)})
    return times


def round_ratios(base: Sequence[float], own: Sequence[float]) -> tuple[float, float, float]:
    """Speed-up of ``own`` over ``base`` per round (same-round times): (median, min, max)."""
    ratios = [b / o for b, o in zip(base, own, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def cycle(array: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``array``, repeating it when it is shorter; C-contiguous."""
    return np.ascontiguousarray(array[np.arange(n) % len(array)])


def stage_calls(codec: Codec, images: np.ndarray, indices: np.ndarray) -> dict[str, Callable[[], object]]:
    """The three timed calls on one batch of host (NumPy) arrays, so a GPU backend's time includes
    the host<->device copies; the inputs are prepared once, outside the timing."""
    enc, dec = codec.encoder, codec.decoder
    images = np.ascontiguousarray(images, dtype=np.float32)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    return {
        "encode": lambda: enc.infer({IMAGES: images}),
        "decode": lambda: dec.infer({INDICES: indices}),
        "roundtrip": lambda: dec.infer({INDICES: enc.infer({IMAGES: images})[INDICES]}),
    }


def device_stage_calls(codec: Codec, images: np.ndarray, indices: np.ndarray
                       ) -> dict[str, Callable[[], object]] | None:
    """The three calls on GPU-resident torch tensors (no host copies), for runners that declare
    ``takes_device_tensors`` (TensorRT's ``infer_torch``); None for the others."""
    enc, dec = codec.encoder, codec.decoder
    if not (enc.takes_device_tensors and dec.takes_device_tensors and torch_has_cuda()):
        return None
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).cuda()
    idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int32)).cuda()
    return {
        "encode": lambda: enc.infer_torch(x),
        "decode": lambda: dec.infer_torch(idx),
        "roundtrip": lambda: dec.infer_torch(enc.infer_torch(x)),
    }


def measure_latency(codec: Codec, spec: BackendSpec, images: np.ndarray, indices: np.ndarray,
                    settings: BenchSettings, clock: Clock | None = None,
                    photo: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """One result row per batch size, stage and I/O placement; ``images``/``indices`` are cycled up to
    the batch. ``io`` is ``"host"`` (NumPy in and out: what an application pays, copies included)
    for every backend, plus ``"device"`` (GPU tensors in and out) where the runners take them.
    ``photo``: one whole image [1, 3, H, W] and its indices, timed at batch 1 after the batches (a
    spatial model's per-photo latency; ``scope: "photo"``, the batches' rows ``"patch"``). Every row's
    ``image_size`` is its input's [H, W]."""
    clock = clock or clock_for(spec)
    inputs = [("patch", batch, cycle(images, batch), cycle(indices, batch)) for batch in settings.batch_sizes]
    if photo is not None:
        inputs.append(("photo", 1, *photo))
    rows = []
    for scope, batch, x, idx in inputs:
        placements = [("host", stage_calls(codec, x, idx))]
        on_device = device_stage_calls(codec, x, idx)
        if on_device is not None:
            placements.append(("device", on_device))
        for placement, calls in placements:
            for stage in STAGES:
                times = measure(calls[stage], clock, warmup=settings.warmup, iters=settings.iters,
                                seconds=settings.timed_seconds)
                rows.append({"backend": spec.backend, "precision": spec.precision, "device": spec.placement,
                             "scope": scope, "batch_size": batch, "image_size": list(x.shape[2:]), "stage": stage,
                             "timing": clock.name, "io": placement, **latency_stats(times, batch)})
    return rows
