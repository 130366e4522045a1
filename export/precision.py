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
adds a dependency for what is twenty lines of graph surgery here. The pass selects the conv part by
graph structure (the ancestors of the first stage's input in the encoder, the descendants of the
FSQDequantize output in the decoder), converts only ops it knows to be FP16-safe, and refuses
anything else with a message.

``compare_fp16`` measures what FP16 costs on ONNX Runtime CPU: index agreement of the FP16 encoder
with the FP32 one on the parity images, and the FP16 decoder's image error. ONNX Runtime's CPU
provider has float16 kernels for few ops and inserts casts around the others, so there every op
rounds its output to float16 but computes in float32, as TensorRT's FP16 kernels (which accumulate
in float32) do; the numbers are the expectation for a GPU, not a proof.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fsqdeploy.artifact import DECODER_FILE, ENCODER_FILE, IMAGES, INDICES, graph_file
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.onnxgraph.graph import (
    consumer_index,
    quantizer_precision_problems,
    split_graph,
    tensor_types,
    toposort,
    validate,
)

PRECISIONS = ("fp32", "fp16")
# Ops whose float16 form computes the same function as their float32 form, up to rounding.
FP16_SAFE_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid",
    "Tanh", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Constant", "Cast",
})


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise FSQDeployError(f"export: precision {precision!r} is not supported. "
                             f"Note: use one of {', '.join(PRECISIONS)}")


# -- where the quantizer is ------------------------------------------------------------------------


# -- the conversion --------------------------------------------------------------------------------


def _to_fp16(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor)
    with np.errstate(over="ignore"):
        half = array.astype(np.float16)
    if not np.isfinite(half[np.isfinite(array)]).all():
        raise FSQDeployError(f"precision: '{tensor.name}' holds values beyond float16's range (65504); "
                             "this model cannot run in FP16. Note: export with --precision fp32")
    return numpy_helper.from_array(half, name)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with its conv part in float16 and its quantizer untouched (see above)."""
    split = split_graph(model)
    types = tensor_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes = list(g.node)
    region = split.conv
    inits = {t.name: t for t in g.initializer}
    readers_of = consumer_index(nodes)
    graph_outputs = {o.name for o in g.output}

    unsupported = sorted({nodes[i].op_type for i in region if nodes[i].domain not in ("", "ai.onnx")
                          or nodes[i].op_type not in FP16_SAFE_OPS})
    if unsupported:
        raise FSQDeployError(f"precision: no FP16 rule for {', '.join(unsupported)} in the {split.kind}. "
                             "Note: export --precision fp32")

    def is_float32(name: str) -> bool:
        return types.get(name) == TensorProto.FLOAT

    new_inits: dict[str, onnx.TensorProto] = {}
    casts_in: dict[str, onnx.NodeProto] = {}

    def half_input(name: str) -> str:
        """The float16 stand-in for a float32 input of the conv part."""
        if name in inits:
            if all(i in region for i in readers_of.get(name, [])):
                inits[name].CopyFrom(_to_fp16(inits[name], name))  # only the conv part reads it
                return name
            half = f"{name}/fp16"
            new_inits.setdefault(half, _to_fp16(inits[name], half))
            return half
        half = f"{name}/fp16"
        if name not in casts_in:
            casts_in[name] = helper.make_node("Cast", [name], [half], name=f"to_fp16/{name}", to=TensorProto.FLOAT16)
        return half

    produced = {o for i in region for o in nodes[i].output}
    for i in sorted(region):
        n = nodes[i]
        for k, x in enumerate(n.input):
            if x and x not in produced and is_float32(x):
                n.input[k] = half_input(x)
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(_to_fp16(a.t, a.t.name))
                elif a.name in ("value_float", "value_floats"):
                    raise FSQDeployError("precision: a scalar float Constant in the conv part (a bug)")
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16

    # Float outputs of the conv part read outside it (or graph outputs) keep their names and
    # float32 type through a Cast; inside the conv part they are float16 under a new name.
    casts_out = []
    for x in sorted(produced):
        outside = [j for j in readers_of.get(x, []) if j not in region]
        if not is_float32(x) or not (outside or x in graph_outputs):
            continue
        half = f"{x}/fp16"
        for i in region:
            n = nodes[i]
            n.output[:] = [half if o == x else o for o in n.output]
            n.input[:] = [half if y == x else y for y in n.input]
        casts_out.append(helper.make_node("Cast", [half], [x], name=f"to_fp32/{x}", to=TensorProto.FLOAT))

    g.initializer.extend(new_inits.values())
    available = [v.name for v in g.input] + [t.name for t in g.initializer]
    ordered = toposort([*casts_in.values(), *nodes, *casts_out], available)
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
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
        meta = {p.key: p.value for p in converted.metadata_props}
        meta["precision"] = precision
        del converted.metadata_props[:]
        for key, value in meta.items():
            converted.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        out[graph_file(name.removesuffix(".onnx"), precision)] = converted
    return out


# -- what FP16 costs, measured on ONNX Runtime CPU -------------------------------------------------


def compare_fp16(graphs32: dict[str, Any], graphs16: dict[str, Any], images: np.ndarray, batch: int = 256
                 ) -> dict[str, Any]:
    """Index agreement of the FP16 encoder with the FP32 encoder, and the FP16 decoder's error on the
    FP32 encoder's indices; graphs are file paths or ModelProtos keyed by FP32 file name."""
    from fsqdeploy.backends.onnxruntime import ort_session

    enc32, enc16 = ort_session(graphs32[ENCODER_FILE]), ort_session(graphs16[ENCODER_FILE])
    dec32, dec16 = ort_session(graphs32[DECODER_FILE]), ort_session(graphs16[DECODER_FILE])
    equal, max_error, squared, pixels = [], 0.0, 0.0, 0
    for start in range(0, len(images), batch):
        x = np.ascontiguousarray(images[start : start + batch], dtype=np.float32)
        idx32 = enc32.run([INDICES], {IMAGES: x})[0]
        idx16 = enc16.run([INDICES], {IMAGES: x})[0]
        equal.append(idx32 == idx16)
        img32 = dec32.run([IMAGES], {INDICES: idx32})[0]
        img16 = dec16.run([IMAGES], {INDICES: idx32})[0]
        diff = (img16.astype(np.float64) - img32.astype(np.float64))
        max_error = max(max_error, float(np.abs(diff).max()))
        squared += float((diff**2).sum())
        pixels += diff.size
    same = np.concatenate(equal)
    mse = squared / pixels if pixels else 0.0
    return {
        "images": int(len(images)),
        "index_agreement": float(same.mean()),
        "index_mismatches": int((~same).sum()),
        "images_with_flips": int((~same).any(axis=1).sum()),
        "decoder_max_abs_error": max_error,
        "decoder_psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else None,  # None: identical
    }


def fp16_rounding_graph(model16: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 graph that computes what ``model16`` computes on an FP16 device: every float16
    tensor becomes a float32 tensor rounded to float16 (Cast to float16 and back after the op that
    makes it), every float16 weight its exact float32 value. Each op thus reads float16 values,
    computes in float32 and stores float16, as TensorRT's FP16 kernels (float32 accumulation) do.
    ONNX Runtime keeps such explicit cast pairs, whereas it runs chains of float16 ops that lack
    CPU kernels in float32 without rounding between them."""
    out = onnx.ModelProto()
    out.CopyFrom(model16)
    g = out.graph
    types = tensor_types(model16)
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    nodes = []
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT16:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT16:
                    a.i = TensorProto.FLOAT
        nodes.append(n)
        for k, o in enumerate(n.output):
            if o and types.get(o) == TensorProto.FLOAT16:
                exact = f"{o}/exact"
                n.output[k] = exact
                nodes += [helper.make_node("Cast", [exact], [f"{o}/half"], name=f"round/{o}", to=TensorProto.FLOAT16),
                          helper.make_node("Cast", [f"{o}/half"], [o], name=f"widen/{o}", to=TensorProto.FLOAT)]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    validate(out, "precision")
    return out
