"""ONNX graph knowledge every stage shares: the FSQ op names, where the quantizer sits, checks.

The exported graphs carry the quantizer as ``fsqdeploy::FSQQuantize`` / ``FSQDequantize`` local
functions (export/onnx_export.py writes them); everything here finds them by op type and domain,
or by structure once they are inlined, never by tensor names read off a viewer. Producers and
readers come from onnx-graphsurgeon's graph (surgery.py), not from indices built here.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.onnxgraph.surgery import downstream, import_graph, only_reader, producer_of, select, upstream

DOMAIN = "fsqdeploy"
DOMAIN_VERSION = 1
QUANTIZE_OP = "FSQQuantize"
DEQUANTIZE_OP = "FSQDequantize"
# Internal tensor names of the exported graphs (the I/O names live in fsqdeploy.artifact).
LATENT, DECODER_INPUT = "latent", "decoder_input"
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with the FSQ functions expanded into standard ops and no custom domain."""
    import onnx.inliner

    inlined = onnx.inliner.inline_local_functions(model)
    kept = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined


def validate(model: onnx.ModelProto, component: str) -> onnx.ModelProto:
    """onnx.checker full check and strict, type-checked shape inference; returns the inferred model."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FSQDeployError(f"{component}: the ONNX checker rejects the graph ({first})") from None


@dataclass(frozen=True)
class QuantizerStage:
    """Where one FSQ stage sits in a graph: its input latent, thresholds initializer and indices."""

    latent: str
    thresholds: str
    indices: str


def find_quantizer_stages(model: onnx.ModelProto) -> list[QuantizerStage]:
    """The stages in graph order, found by op type in both forms: FSQQuantize nodes, or (after
    inlining) each GreaterOrEqual fed by an Unsqueeze and followed by Cast -> ReduceSum."""
    return quantizer_stages(import_graph(model))


def quantizer_stages(graph: gs.Graph) -> list[QuantizerStage]:
    """find_quantizer_stages on an imported graph."""
    fsq = select(graph, QUANTIZE_OP, DOMAIN)
    if fsq:
        return [QuantizerStage(n.inputs[0].name, n.inputs[1].name, n.outputs[0].name) for n in fsq]
    stages = []
    for ge in (n for n in graph.nodes if n.op == "GreaterOrEqual"):
        unsqueeze = producer_of(ge.inputs[0])
        cast = only_reader(ge.outputs[0], "Cast")
        reduce = cast and only_reader(cast.outputs[0], "ReduceSum")
        if unsqueeze is not None and unsqueeze.op == "Unsqueeze" and reduce:
            stages.append(QuantizerStage(unsqueeze.inputs[0].name, ge.inputs[1].name, reduce.outputs[0].name))
    return stages


# -- where the quantizer is ------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizerSplit:
    """A graph cut in two at one float32 tensor: the conv part and the quantizer part, as node
    positions in ``model.graph.node`` (which is also the order of the imported graph's nodes)."""

    kind: str  # "encoder" | "decoder"
    boundary: str  # the encoder's first stage input (latent) or the decoder's FSQDequantize output
    conv: frozenset[int]  # node positions of the conv part
    quantizer: frozenset[int]  # node positions of the quantizer part


def split_graph(model: onnx.ModelProto) -> QuantizerSplit:
    """Find the quantizer by structure, in both forms (FSQ functions or inlined): an encoder has
    quantizer stages and the quantizer is everything downstream of the first stage's input; a
    decoder's quantizer is everything upstream of ``decoder_input``."""
    return split_nodes(import_graph(model))


def split_nodes(graph: gs.Graph) -> QuantizerSplit:
    """split_graph on an imported graph; positions index ``graph.nodes``."""
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    tensors = graph.tensors()
    stages = quantizer_stages(graph)
    if stages:
        boundary = stages[0].latent
        quantizer = {id(n) for n in downstream(graph, tensors[boundary])}
        # Inputless nodes (Constants of an inlined quantizer) belong to the part that reads them.
        for n in graph.nodes:
            readers = [r for o in n.outputs for r in o.outputs]
            if not n.inputs and readers and all(id(r) in quantizer for r in readers):
                quantizer.add(id(n))
        kind = "encoder"
    else:
        deq = select(graph, DEQUANTIZE_OP, DOMAIN)
        boundary = deq[0].outputs[0].name if deq else DECODER_INPUT
        if boundary not in tensors or producer_of(tensors[boundary]) is None:
            raise FSQDeployError("precision: the graph has neither FSQ quantizer stages nor a decoder_input tensor")
        quantizer = {id(n) for n in upstream(graph, tensors[boundary])}
        kind = "decoder"
    quantizer_at = frozenset(position[i] for i in quantizer)
    return QuantizerSplit(kind, boundary, frozenset(range(len(graph.nodes))) - quantizer_at, quantizer_at)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the main graph, after strict shape inference."""
    inferred = validate(model, "precision")
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def quantizer_tensors(model: onnx.ModelProto, split: QuantizerSplit | None = None) -> set[str]:
    """Every main-graph tensor the quantizer reads or writes (initializers included)."""
    split = split or split_graph(model)
    nodes = model.graph.node
    return {x for i in split.quantizer for x in [*nodes[i].input, *nodes[i].output] if x}


def quantizer_precision_problems(model: onnx.ModelProto) -> list[str]:
    """Float tensors of the quantizer that are not float32 (must be []), checked on the graph."""
    split = split_graph(model)
    types = tensor_types(model)
    bad = sorted(t for t in quantizer_tensors(model, split)
                 if types.get(t) in FLOAT_TYPES and types[t] != TensorProto.FLOAT)
    return [f"quantizer tensor '{t}' is {TensorProto.DataType.Name(types[t]).lower()}, not float32" for t in bad]
