"""The graphs the CPU runtimes are handed: the exported FP32 graphs with the exact rewrites of
fsqdeploy/onnxgraph/rewrites.py that suit each runtime's kernels, applied in memory at load time.

The files in the artifact stay as exported (TensorRT and the GPU providers read them as they are);
only summation order changes, so the results match the exported graph to float32 rounding and the
codec tests (tests/runtime/test_codec.py, test_bench.py) hold every backend to PyTorch's indices.

Why these rewrites: where the time went, per layer, when they were chosen (paper-shape model, batch
256, FP32, on a 2-core x86 machine; OpenVINO's PERF_COUNT profile and ONNX Runtime's profiler).
benchmarks/backends.py measures the backends on yours.

- Encoder, both runtimes: the last convolution (128 -> 256 channels, 4x4 -> 2x2) took ~45% of the
  encoder (6.7 of 14 ms in OpenVINO): convolution kernels tile the output's rows and columns, and
  with two of each they idle. As one MatMul ([batch, 2048] x [2048, 1024], the same multiply-adds)
  the encoder drops to ~10.5 ms in both (``tiny_convs_as_matmul``).
- Decoder, ONNX Runtime: its CPU ConvTranspose kernel is its slowest (~36 ms for the decoder);
  every ConvTranspose(k4, s2, p1) as a 3x3 phase convolution + interleave: ~18 ms. The last
  layer's 12 phase outputs are padded to 16, which INT8 needs (2x faster) and FP32 does not mind, so
  calibration and this module share one form (``transposed_convs_for_onnxruntime``).
- Decoder, OpenVINO: its ConvTranspose runs well where there are many output channels, but the last
  layer (32 -> 3 channels) vectorises over 3 of 16 lanes (4.7 ms for 4% of the multiply-adds), and
  the Sigmoid after it runs on that padded channel layout (2.8 ms). The phase form of that layer
  alone (12 output channels, Sigmoid fused) takes the decoder from ~15.5 to ~11 ms (BF16: 16 -> 4.6
  ms); the phase form of every layer is slower (~18.5 ms), since a 3x3 phase convolution does 2.25x
  the multiply-adds of the ConvTranspose it replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import onnx

from fsqdeploy.artifact import Manifest, graph_file
from fsqdeploy.backends.base import BatchSizeSwitch, Runner

# From this many images on, the encoder's tiny convolutions run faster as MatMuls (docstring).
MATMUL_MIN_BATCH = 16


def default_rewrites(runtime: str, large_batches: bool = True) -> tuple[str, ...]:
    """The rules above, as fsqdeploy.backends.tuning names the rewrites: what runs without a tuning
    record for this machine. The MatMul form only for large batches."""
    from fsqdeploy.backends.tuning import DEFAULTS

    return tuple(r for r in DEFAULTS[runtime] if large_batches or r != "matmul")


def for_onnxruntime(model: onnx.ModelProto, large_batches: bool = True) -> onnx.ModelProto:
    """The exported encoder or decoder as ONNX Runtime's CPU provider runs it fastest, on batches of
    ``MATMUL_MIN_BATCH`` images or more when ``large_batches``, on fewer otherwise."""
    from fsqdeploy.backends.tuning import apply

    return apply(model, "onnxruntime", default_rewrites("onnxruntime", large_batches))


def for_openvino(model: onnx.ModelProto, large_batches: bool = True) -> onnx.ModelProto:
    """The exported encoder or decoder, functions inlined (OpenVINO does not read ONNX local functions),
    as OpenVINO's CPU plugin runs it fastest, in FP32 and BF16 alike; ``large_batches`` as above."""
    from fsqdeploy.backends.tuning import apply

    return apply(model, "openvino", default_rewrites("openvino", large_batches))


@cache
def tuned_graph_bytes(path: str, sha256: str, runtime: str, rewrites: tuple[str, ...]) -> bytes:
    """The exported graph at ``path`` (``sha256`` keys the cache) with ``rewrites`` for ``runtime``."""
    from fsqdeploy.backends.tuning import apply

    return apply(onnx.load(path), runtime, rewrites).SerializeToString()


# A CPU runner from (graph loader, thread count, performance hint); None: the runtime's defaults.
MakeRunner = Callable[[Callable[[], bytes], "int | None", "str | None"], Runner]


def cpu_runners(make: MakeRunner, manifest: Manifest, runtime: str, threads: int | None = None
                ) -> tuple[Runner, Runner]:
    """Encoder and decoder runners of a CPU runtime on its tuned FP32 graphs: this machine's tuning
    record where ``fsqdeploy tune`` made one (fsqdeploy.backends.tuning), else the rules above. A
    patch model's encoder is two runners switched by batch size, because its MatMul rewrite pays off
    only on large batches (the record is measured at batch 256: small batches keep the rules)."""
    from fsqdeploy.backends.tuning import chosen_variant

    def pick(graph: str, large_batches: bool) -> Runner:
        chosen = chosen_variant(manifest, runtime, threads, graph) if large_batches else None
        rewrites = default_rewrites(runtime, large_batches) if chosen is None else chosen.rewrites
        name = graph_file(graph)
        source = partial(tuned_graph_bytes, str(manifest.path(name)), manifest.sha256(name), runtime, rewrites)
        # The record was measured at ``threads`` when the caller named a count, else it chose one.
        made = make(source, threads if chosen is None else chosen.threads, None if chosen is None else chosen.hint)
        made.variant, made.tuned = "+".join(rewrites) or "none", chosen is not None
        return made

    if manifest.spatial:
        # Height and width are dynamic, so no convolution has the static size the MatMul rewrite
        # needs: one runner serves every shape.
        return pick("encoder", True), pick("decoder", True)
    switch = BatchSizeSwitch(pick("encoder", False), pick("encoder", True), MATMUL_MIN_BATCH)
    return switch, pick("decoder", True)
