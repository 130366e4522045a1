"""FP16 graphs: convolutions and matrix products in float16, the quantizer in float32.

``fsqdeploy export RUN --out ART --precision fp16`` writes ``encoder.fp16.onnx`` and
``decoder.fp16.onnx`` beside the FP32 graphs. Precision lives in the graph, not in a builder flag
(TensorRT 11 builds strongly typed networks only), so each tensor's type below is what every
runtime computes in:

- The conv part of each graph (the encoder from ``images`` to ``latent``, the decoder from
  ``decoder_input`` to ``images``) holds float16 weights and activations. Its float32 inputs are
  cast to float16 where it starts, and its float16 outputs are cast back to float32 where it ends,
  under their original names, so the I/O stays float32 images and int32 indices.
- Everything else, the quantizer, stays as exported: the encoder's ``latent`` is float32 when the
  first FSQQuantize reads it, and the thresholds, the residual chain (Gather of the centres, Sub,
  Mul by the levels) and every later stage run in float32; the decoder's FSQDequantize runs in
  float32 and its output is cast to float16 after it. The comparison ``latent >= threshold``
  therefore stays exact: an FP16 graph changes an index only where the FP16 conv stack moved the
  latent itself across a threshold.

The conversion is a small pass of our own rather than onnxconverter-common's
``convert_float_to_float16``: that converter walks the main graph only, so it leaves the bodies of
the FSQ local functions alone while converting the initializers they read (the thresholds), and it
adds a dependency for what is one short onnx-graphsurgeon pass here. The pass selects the conv part
by graph structure (the ancestors of the first stage's input in the encoder, the descendants of the
FSQDequantize output in the decoder), converts only ops it knows to be FP16-safe, and refuses
anything else with a message.

``compare_fp16`` measures what FP16 costs on ONNX Runtime CPU: index agreement of the FP16 encoder
with the FP32 one on the parity images, and the FP16 decoder's image error. ONNX Runtime's CPU
provider has float16 kernels for few ops and inserts casts around the others, so there every op
rounds its output to float16 but computes in float32, as TensorRT's FP16 kernels (which accumulate
in float32) do; the numbers are the expectation for a GPU, not a proof.

FP16 risk (``fp16_risk``: ``fsqdeploy check``'s informational row and the manifest's
``fp16_risk``): an FP16 engine may evaluate ``latent >= threshold`` in half precision, whose 11
significant bits put a rounding error of up to 2^-11 relative on each side. A pre-rounding value u
(the latent fed to a stage's FSQQuantize) is *at risk* when, for its nearest threshold t,
``|u - t| <= 2^-10 * max(|u|, |t|, 2^-14)``: both u and t may round by half an FP16 ulp toward each
other (2^-14 is FP16's smallest normal, below which the ulp stops shrinking). The share at risk on
the test split says how many indices an FP16 engine could change.

``fp16_record`` is the manifest's ``fp16`` section (both measurements beside the risk), and
``describe_fp16`` the line ``fsqdeploy export`` prints for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, numpy_helper

from fsqdeploy.artifact import DECODER_FILE, ENCODER_FILE, IMAGES, graph_file
from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.compare import SessionCodec, compare, run
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.onnxgraph.graph import (
    find_quantizer_stages,
    quantizer_precision_problems,
    split_nodes,
    tensor_types,
    validate,
)
from fsqdeploy.onnxgraph.surgery import add_node, export_graph, import_graph, is_op, metadata, producer_of, stamp

PRECISIONS = ("fp32", "fp16")
# Ops whose float16 form computes the same function as their float32 form, up to rounding.
FP16_SAFE_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Abs", "Relu", "LeakyRelu", "Sigmoid",
    "Tanh", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Constant", "Cast",
})


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise FSQDeployError(f"export: precision {precision!r} is not supported. "
                             f"Note: use one of {', '.join(PRECISIONS)}")


# -- the conversion --------------------------------------------------------------------------------


def _to_fp16(array: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        half = array.astype(np.float16)
    if not np.isfinite(half[np.isfinite(array)]).all():
        raise FSQDeployError(f"precision: '{name}' holds values beyond float16's range (65504); "
                             "this model cannot run in FP16. Note: export with --precision fp32")
    return half


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with its conv part in float16 and its quantizer untouched (see above)."""
    types = tensor_types(model)
    graph = import_graph(model)
    split = split_nodes(graph)
    region = [graph.nodes[i] for i in sorted(split.conv)]
    inside = {id(n) for n in region}

    unsupported = sorted({n.op for n in region if not is_op(n, FP16_SAFE_OPS)})
    if unsupported:
        raise FSQDeployError(f"precision: no FP16 rule for {', '.join(unsupported)} in the {split.kind}. "
                             "Note: export --precision fp32")

    def is_float32(tensor: gs.Tensor) -> bool:
        return types.get(tensor.name) == TensorProto.FLOAT

    halves: dict[str, gs.Tensor] = {}

    def half_of(tensor: gs.Tensor) -> gs.Tensor:
        """The float16 stand-in for a float32 input of the conv part."""
        if tensor.name not in halves:
            if isinstance(tensor, gs.Constant) and all(id(r) in inside for r in tensor.outputs):
                tensor.values = _to_fp16(tensor.values, tensor.name)  # only the conv part reads it
                halves[tensor.name] = tensor
            elif isinstance(tensor, gs.Constant):
                halves[tensor.name] = gs.Constant(f"{tensor.name}/fp16", _to_fp16(tensor.values, tensor.name))
            else:
                halves[tensor.name] = add_node(graph, "Cast", f"to_fp16/{tensor.name}", [tensor],
                                               [f"{tensor.name}/fp16"], to=TensorProto.FLOAT16).outputs[0]
        return halves[tensor.name]

    produced = {t.name: t for n in region for t in n.outputs if not t.is_empty()}
    for n in region:
        for k, x in enumerate(list(n.inputs)):
            if not x.is_empty() and x.name not in produced and is_float32(x) and half_of(x) is not x:
                n.inputs[k] = half_of(x)
        if n.op == "Constant":
            value = n.attrs.get("value")
            if isinstance(value, gs.Constant) and value.dtype == np.float32:
                n.attrs["value"] = gs.Constant(value.name, _to_fp16(value.values, value.name))
            elif "value_float" in n.attrs or "value_floats" in n.attrs:
                raise FSQDeployError("precision: a scalar float Constant in the conv part (a bug)")
        if n.op == "Cast" and n.attrs.get("to") == TensorProto.FLOAT:
            n.attrs["to"] = TensorProto.FLOAT16

    # Float outputs of the conv part read outside it (or graph outputs) keep their names and
    # float32 type through a Cast; inside the conv part they are float16 under a new name.
    graph_outputs = {t.name for t in graph.outputs}
    for name, x in sorted(produced.items()):
        outside = [r for r in x.outputs if id(r) not in inside]
        if not is_float32(x) or not (outside or name in graph_outputs):
            continue
        half = gs.Variable(f"{name}/fp16")
        for n in [producer_of(x), *{id(r): r for r in x.outputs if id(r) in inside}.values()]:
            for io in (n.inputs, n.outputs):
                for k, y in enumerate(list(io)):
                    if y is x:
                        io[k] = half
        add_node(graph, "Cast", f"to_fp32/{name}", [half], [x], to=TensorProto.FLOAT)

    out = export_graph(graph, like=model)
    validate(out, "precision")
    problems = quantizer_precision_problems(out)
    if problems:  # the pass never touches the quantizer; this proves it on the result
        raise FSQDeployError(f"precision: {problems[0]} after the FP16 conversion (a bug)")
    return out


def convert_graphs(graphs: dict[str, onnx.ModelProto], precision: str) -> dict[str, onnx.ModelProto]:
    """{"encoder.fp16.onnx": ..., "decoder.fp16.onnx": ...} from the FP32 graphs keyed by file name."""
    check_precision(precision)
    if precision == "fp32":
        return {}
    out = {}
    for name, graph in graphs.items():
        converted = convert_to_fp16(graph)
        stamp(converted, {**metadata(converted), "precision": precision})
        out[graph_file(name.removesuffix(".onnx"), precision)] = converted
    return out


# -- what FP16 costs, measured on ONNX Runtime CPU -------------------------------------------------


def compare_fp16(graphs32: dict[str, Any], graphs16: dict[str, Any], images: np.ndarray, batch: int = 256
                 ) -> dict[str, Any]:
    """The FP16 graphs against the FP32 graphs on the same images, as ``fsqdeploy.compare``'s record:
    index agreement of the encoders, the FP16 decoder's error on the FP32 encoder's indices
    (``max_abs_error``, ``psnr_vs_reference``) and the round trips; graphs are file paths or
    ModelProtos keyed by FP32 file name."""
    fp32 = SessionCodec(ort_session(graphs32[ENCODER_FILE]), ort_session(graphs32[DECODER_FILE]))
    fp16 = SessionCodec(ort_session(graphs16[ENCODER_FILE]), ort_session(graphs16[DECODER_FILE]))
    reference = run(fp32, images, batch)
    return compare(reference, run(fp16, images, batch, reference_indices=reference.indices)).to_dict()


def fp16_rounding_graph(model16: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 graph that computes what ``model16`` computes on an FP16 device: every float16
    tensor becomes a float32 tensor rounded to float16 (Cast to float16 and back after the op that
    makes it), every float16 weight its exact float32 value. Each op thus reads float16 values,
    computes in float32 and stores float16, as TensorRT's FP16 kernels (float32 accumulation) do.
    ONNX Runtime keeps such explicit cast pairs, whereas it runs chains of float16 ops that lack
    CPU kernels in float32 without rounding between them."""
    types = tensor_types(model16)
    graph = import_graph(model16)
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant) and t.dtype == np.float16:
            t.values = t.values.astype(np.float32)
    for n in list(graph.nodes):
        value = n.attrs.get("value") if n.op == "Constant" else None
        if isinstance(value, gs.Constant) and value.dtype == np.float16:
            n.attrs["value"] = gs.Constant(value.name, value.values.astype(np.float32))
        if n.op == "Cast" and n.attrs.get("to") == TensorProto.FLOAT16:
            n.attrs["to"] = TensorProto.FLOAT
        for k, o in enumerate(list(n.outputs)):
            if types.get(o.name) == TensorProto.FLOAT16:
                n.outputs[k] = gs.Variable(f"{o.name}/exact")
                half = add_node(graph, "Cast", f"round/{o.name}", [n.outputs[k]], [f"{o.name}/half"],
                                to=TensorProto.FLOAT16).outputs[0]
                add_node(graph, "Cast", f"widen/{o.name}", [half], [o], to=TensorProto.FLOAT)
    out = export_graph(graph, like=model16)
    validate(out, "precision")
    return out


# -- the FP16 risk of the FP32 quantizer (fsqdeploy check's row, the manifest's fp16_risk) ---------

FP16_RELATIVE = 2.0**-10
FP16_SMALLEST_NORMAL = 2.0**-14


def fp16_at_risk(u: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean [N, D]: u lies within FP16 rounding error of its nearest finite threshold."""
    u64, t64 = u.astype(np.float64)[..., None], thresholds.astype(np.float64)[None]
    gap = np.where(np.isfinite(t64), np.abs(u64 - t64), np.inf)
    nearest = gap.argmin(-1)
    t = np.take_along_axis(np.broadcast_to(t64, gap.shape), nearest[..., None], -1)[..., 0]
    g = np.take_along_axis(gap, nearest[..., None], -1)[..., 0]
    scale = np.maximum(np.maximum(np.abs(u64[..., 0]), np.abs(t)), FP16_SMALLEST_NORMAL)
    return g <= FP16_RELATIVE * scale


def fp16_risk(encoder: onnx.ModelProto, images: np.ndarray, batch: int = 256) -> dict[str, Any]:
    """Share of pre-rounding values at FP16 risk, per stage and overall, on float images."""
    stages = find_quantizer_stages(encoder)
    inferred = validate(encoder, "check")
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    probe = onnx.ModelProto()
    probe.CopyFrom(encoder)
    del probe.graph.output[:]
    probe.graph.output.extend(known[s.latent] for s in stages)
    inits = {t.name: t for t in encoder.graph.initializer}
    thresholds = [numpy_helper.to_array(inits[s.thresholds]) for s in stages]
    session = ort_session(probe)
    counts = np.zeros(len(stages), np.int64)
    totals = np.zeros(len(stages), np.int64)
    for start in range(0, len(images), batch):
        latents = session.run(None, {IMAGES: images[start : start + batch]})
        for k, (u, t) in enumerate(zip(latents, thresholds)):
            counts[k] += int(fp16_at_risk(u, t).sum())
            totals[k] += u.size
    return {
        "images": int(len(images)),
        "definition": "|u - t| <= 2^-10 * max(|u|, |t|, 2^-14), t the nearest threshold",
        "stages": [{"stage": k, "values": int(n), "at_risk": int(c), "share": float(c / n) if n else 0.0}
                   for k, (c, n) in enumerate(zip(counts, totals))],
        "share": float(counts.sum() / totals.sum()) if totals.sum() else 0.0,
    }


# -- the manifest's fp16 record and its line in export's output ------------------------------------


def fp16_record(graphs: dict[str, onnx.ModelProto], graphs16: dict[str, onnx.ModelProto], images: np.ndarray,
                source: str) -> dict[str, Any]:
    """The manifest's ``fp16``: what FP16 costs against the FP32 graphs on ONNX Runtime CPU, as the
    files run there and with every FP16 tensor rounded (what an FP16 GPU computes), beside the FP16
    risk that ``fsqdeploy check`` reports for the FP32 quantizer (module docstring)."""
    as16 = {ENCODER_FILE: graphs16["encoder.fp16.onnx"], DECODER_FILE: graphs16["decoder.fp16.onnx"]}
    rounded = {name: fp16_rounding_graph(g) for name, g in as16.items()}
    risk = fp16_risk(graphs[ENCODER_FILE], images)
    return {
        "files": sorted(graphs16),
        "quantizer": "float32",
        "data": source,
        "images": int(len(images)),
        "onnxruntime_cpu": compare_fp16(graphs, as16, images),
        "fp16_rounding": compare_fp16(graphs, rounded, images),
        "fp16_risk": risk["share"],
    }


def describe_fp16(record: dict[str, Any]) -> str:
    """One line: FP16 index agreement with FP32 on ONNX Runtime CPU, and what check's risk predicts."""
    ort, rounded, risk = record["onnxruntime_cpu"], record["fp16_rounding"], record["fp16_risk"]
    psnr, identical = rounded["psnr_vs_reference"], rounded["max_abs_error"] == 0  # fsqdeploy.compare's names
    return (f"fp16 ({record['data']}, {record['images']} images, quantizer in FP32): indices "
            f"{100 * ort['index_agreement']:.3f}% equal to FP32 on ONNX Runtime CPU, "
            f"{100 * rounded['index_agreement']:.3f}% with every FP16 tensor rounded (expected on a GPU); "
            f"FP16 risk {100 * risk:.3f}% (fsqdeploy check) predicts >= {100 * (1 - risk):.3f}%; "
            f"decoder {'identical' if identical else f'{psnr:.1f} dB PSNR'} vs FP32")
