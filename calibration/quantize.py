"""QDQ quantization of the exported graphs with ONNX Runtime, the FSQ quantizer kept in float.

Two steps, kept apart so a calibration record can replay the second without the first:

1. ``collect_ranges``: run the FP32 graph over calibration batches and reduce each activation to a
   range (``onnxruntime.quantization.create_calibrator``: MinMax, Entropy or Percentile).
2. ``quantize_graph``: insert QuantizeLinear/DequantizeLinear pairs from those ranges
   (``quantize_static`` in QDQ format, per-channel INT8 weights), leaving ``float_nodes`` alone.

What stays in float, always (``protected_nodes``): in the encoder, every node downstream of the
first stage's latent (the FSQQuantize nodes and the residual Add/Gather/Sub/Mul/Concat chain) and
the layer feeding the quantizer, back to the nearest Conv/Gemm/MatMul (the final Gemm): the indices
are decided by comparisons against thresholds only ~0.03 apart, so the latent must be computed in
float; quantizing that Gemm alone costs ~28% of the indices on a trained paper-shape model. In the
decoder, every node upstream of the first layer (FSQDequantize). The FSQ functions themselves are
copied through unchanged, so the quantizer is the same standard-op float computation as in the FP32
graph, bit exact given the same latent. For speed (``slow_in_int8``): convolutions with fewer than
16 input channels (the encoder's first), where ONNX Runtime's INT8 convolution is slower than its
FP32 one.

Types: activations uint8 (asymmetric), weights int8 (symmetric, per output channel), reduce_range
off. On x86 CPUs with AVX512-VNNI, whose dot-product instruction multiplies unsigned by signed
bytes, U8S8 is ONNX Runtime's native path; S8S8 gives the same indices (ReLU outputs are
non-negative, so the asymmetric uint8 and int8 grids coincide) and was not faster where measured
(benchmarks/int8.py --types; docs/calibration.md). reduce_range exists for CPUs without VNNI, whose U8S8 kernels can
saturate 16-bit intermediates; with VNNI it only throws away one bit.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.onnxgraph.graph import quantizer_stages
from fsqdeploy.onnxgraph.surgery import downstream, import_graph, is_op, only_reader, producer_of, select, upstream

METHODS = ("minmax", "entropy", "percentile")
# The layers INT8 is for. ConvTranspose appears only in the TensorRT graphs (tensorrt_graphs.py):
# the ONNX Runtime graphs have it rewritten into convolutions first.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that carry INT8 between layers: Relu is absorbed into the range of the layer before it, and
# the reshapes and transposes of the decoder's phase interleave move bytes, not values.
QUANTIZED_OPS = (*LAYER_OPS, "Relu", "Reshape", "Transpose")
# Only ops that change values need ranges: a Reshape or Transpose output reuses its input's scale.
CALIBRATED_OPS = (*LAYER_OPS, "Relu")
TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
BATCHES_PER_COLLECT = 8


@dataclass(frozen=True)
class QuantSettings:
    """Everything besides the data and the ranges that decides the INT8 graphs (stored in the record)."""

    method: str = "minmax"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    # Histogram methods. ONNX Runtime's entropy default (128 bins, 128 quantized bins) leaves the KL
    # search a single candidate, the full range, i.e. MinMax; 2048 bins is TensorRT's setting.
    histogram_bins: int = 2048
    entropy_quantized_bins: int = 128
    percentile: float = 99.999
    # "onnxruntime": asymmetric uint8 activations (a ReLU output's [0, max] fills the grid), INT8 carried
    # through Relu/Reshape/Transpose, int32 biases: ONNX Runtime's CPU form. "tensorrt": what TensorRT's
    # parser reads (tensorrt_graphs.py): zero points 0, float biases, weights as float initializers
    # with a Q/DQ pair, Q/DQ on the layers' inputs only (NVIDIA's placement; TensorRT fuses the next
    # layer's input scale into each layer's output, and a layer read by a float one hands it floats).
    target: str = "onnxruntime"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise FSQDeployError(f"calibrate: unknown method {self.method!r}. Note: use one of {', '.join(METHODS)}")
        if self.target not in ("onnxruntime", "tensorrt"):
            raise FSQDeployError(f"calibrate: unknown target {self.target!r}")
        for what, t in (("activation", self.activation_type), ("weight", self.weight_type)):
            if t not in TYPES:
                raise FSQDeployError(f"calibrate: unknown {what} type {t!r}. Note: use uint8 or int8")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- which nodes stay in float ---------------------------------------------------------------------


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name: ONNX Runtime's quantizer selects nodes by name."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type.lower()}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv/Gemm/MatMul nodes, in graph order."""
    return [n for n in model.graph.node if n.op_type in LAYER_OPS and n.domain in ("", "ai.onnx")]


def protected_nodes(model: onnx.ModelProto, graph: str) -> dict[str, str]:
    """Node name -> why it stays in float, for ``graph`` "encoder" or "decoder" (module docstring),
    in graph order."""
    g = import_graph(model)
    tensors = g.tensors()
    if graph == "encoder":
        stages = quantizer_stages(g)
        if not stages:
            raise FSQDeployError("calibrate: the encoder has no FSQ quantizer (FSQQuantize or its inlined body). "
                                 "Note: export it again with fsqdeploy export")
        latent = tensors[stages[0].latent]
        kept = {n.name: "FSQ quantizer" for n in downstream(g, latent)}
        node = producer_of(latent)
        while node is not None:  # back to the layer that computes the latent, through bias adds and reshapes
            kept[node.name] = "feeds the quantizer"
            node = None if is_op(node, LAYER_OPS) or not node.inputs else producer_of(node.inputs[0])
        return kept
    first = next(iter(select(g, LAYER_OPS)), None)
    if first is None:
        raise FSQDeployError("calibrate: the decoder has no Conv/Gemm/MatMul layer to quantize")
    return {n.name: "FSQ dequantizer" for n in upstream(g, first.inputs[0])}


# ONNX Runtime's INT8 convolution (QLinearConv) loses to its FP32 NCHWc convolution on a layer with
# few input channels (a short dot product per output). Measured while planning on a 2-core AVX512-VNNI CPU,
# batch 256, one Conv(k4, s2, p1) + Relu alone, FP32 against QDQ INT8: 3 -> 32 channels 1.2 vs 4.6
# ms, 8 -> 32 2.2 vs 2.8 ms, 16 -> 32 1.2 vs 1.1 ms, 32 -> 64 3.4 vs 1.9 ms. In the paper-shape
# encoder that is the first convolution: 4.4 ms in INT8, 0.8 ms in FP32.
MIN_INT8_INPUT_CHANNELS = 16


def slow_in_int8(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> why it stays in float, for every Conv (with a Relu after it) with fewer than
    ``MIN_INT8_INPUT_CHANNELS`` input channels: ONNX Runtime runs it faster in float."""
    groups = layer_groups(model)
    kept = {}
    for node in select(import_graph(model), "Conv"):
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if isinstance(weight, gs.Constant) and weight.shape[1] < MIN_INT8_INPUT_CHANNELS:
            why = f"{weight.shape[1]} input channels: faster in float"
            kept.update({name: why for name in groups[node.name]})
    return kept


def layer_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Layer name -> the layer and a Relu that reads only its output: they are quantized or kept in
    float together. In graph order."""
    groups = {}
    for layer in select(import_graph(model), LAYER_OPS):
        relu = only_reader(layer.outputs[0], "Relu")
        groups[layer.name] = [layer.name, relu.name] if relu is not None else [layer.name]
    return groups


# -- ranges ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice about pre-processing and prints histogram progress: not for our users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(None):
            yield
    finally:
        root.setLevel(level)


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def calibration_providers() -> list[str]:
    """CUDA when ONNX Runtime has it (calibration runs the FP32 graph on every batch), else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def collect_ranges(model: onnx.ModelProto, batches: Iterable[Mapping[str, np.ndarray]],
                   settings: QuantSettings) -> dict[str, tuple[float, float]]:
    """Tensor name -> (lowest, highest) over the calibration batches, by ``settings.method``."""
    from onnxruntime.quantization import CalibrationDataReader, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self, chunk: list[dict[str, np.ndarray]]) -> None:
            self.it = iter(chunk)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    extra: dict[str, Any] = {}
    if settings.method == "entropy":
        extra = {"num_bins": settings.histogram_bins, "num_quantized_bins": settings.entropy_quantized_bins}
    elif settings.method == "percentile":
        # symmetric=False: ReLU outputs keep their lower bound 0 instead of -max.
        extra = {"num_bins": settings.histogram_bins, "percentile": settings.percentile, "symmetric": False}
    with tempfile.TemporaryDirectory(prefix="fsqdeploy-calibrate-") as tmp, _quiet():
        source = Path(tmp) / "model.onnx"
        onnx.save(model, str(source))
        calibrator = create_calibrator(source, list(CALIBRATED_OPS), augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=_method(settings.method), providers=calibration_providers(),
                                       extra_options=extra)
        # The calibrator holds every intermediate output of one collect_data call in memory, and
        # merges ranges (MinMax) or histograms across calls: feed it a few batches at a time.
        remaining = iter(batches)
        while chunk := [dict(b) for b in itertools.islice(remaining, BATCHES_PER_COLLECT)]:
            calibrator.collect_data(Reader(chunk))
        data = calibrator.compute_data()
    return {name: tuple(float(np.asarray(v).reshape(-1)[0]) for v in t.range_value)  # type: ignore[misc]
            for name, t in data.data.items()}


# -- quantization ----------------------------------------------------------------------------------


def quantize_graph(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], settings: QuantSettings,
                   float_nodes: Iterable[str]) -> onnx.ModelProto:
    """The QDQ graph of ``model`` from recorded ``ranges``; the nodes named in ``float_nodes`` stay float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    for_tensorrt = settings.target == "tensorrt"
    # A MatMul's output stays float: the only MatMul is the encoder's last convolution, lowered by
    # onnx_rewrites.conv_as_matmul so that the latent's float Gemm gets a float input.
    extra: dict[str, Any] = {"OpTypesToExcludeOutputQuantization": list(LAYER_OPS) if for_tensorrt else ["MatMul"]}
    if for_tensorrt:
        extra.update(ActivationSymmetric=True, QuantizeBias=False, AddQDQPairToWeight=True)
    tensors = TensorsData(_method(settings.method), {
        name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()})
    with tempfile.TemporaryDirectory(prefix="fsqdeploy-quantize-") as tmp, _quiet():
        cache, out = Path(tmp) / "ranges.json", Path(tmp) / "int8.onnx"
        save_tensors_data(tensors, cache)
        quantize_static(
            model, out, None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(LAYER_OPS if for_tensorrt else QUANTIZED_OPS),
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            activation_type=getattr(QuantType, TYPES[settings.activation_type]),
            weight_type=getattr(QuantType, TYPES[settings.weight_type]),
            nodes_to_exclude=sorted(set(float_nodes)), calibrate_method=_method(settings.method),
            calibration_cache_path=cache,
            extra_options=extra,
        )
        return onnx.load(str(out))


def activation_scales(model: onnx.ModelProto) -> dict[str, dict[str, float]]:
    """Tensor name -> {"scale", "zero_point"} of every activation QuantizeLinear in a QDQ graph."""
    inits = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and node.input[1] in inits:
            scale = numpy_helper.to_array(inits[node.input[1]])
            zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else 0
            if np.size(scale) == 1:
                found[node.input[0]] = {"scale": float(scale), "zero_point": int(np.asarray(zero))}
    return found


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the layers of a QDQ graph whose weights are dequantized from INT8."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in layers(model) if len(n.input) > 1 and n.input[1] in dq_outputs]
