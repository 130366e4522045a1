"""ONNX graph knowledge every stage shares: the FSQ op names, where the quantizer sits, checks.

The exported graphs carry the quantizer as ``fsqdeploy::FSQQuantize`` / ``FSQDequantize`` local
functions (export/onnx_export.py writes them); everything here finds them by op type and domain,
or by structure once they are inlined, never by tensor names read off a viewer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from fsqdeploy.errors import FSQDeployError

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
    nodes = list(model.graph.node)
    fsq = [n for n in nodes if n.domain == DOMAIN and n.op_type == QUANTIZE_OP]
    if fsq:
        return [QuantizerStage(n.input[0], n.input[1], n.output[0]) for n in fsq]
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def only_consumer(tensor: str, op_type: str) -> onnx.NodeProto | None:
        found = readers.get(tensor, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    stages = []
    for ge in (n for n in nodes if n.op_type == "GreaterOrEqual"):
        unsqueeze = producer.get(ge.input[0])
        cast = only_consumer(ge.output[0], "Cast")
        reduce = cast and only_consumer(cast.output[0], "ReduceSum")
        if unsqueeze is not None and unsqueeze.op_type == "Unsqueeze" and reduce:
            stages.append(QuantizerStage(unsqueeze.input[0], ge.input[1], reduce.output[0]))
    return stages



# -- where the quantizer is ------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A graph cut in two at one float32 tensor: the conv part and the quantizer part."""

    kind: str  # "encoder" | "decoder"
    boundary: str  # the encoder's first stage input (latent) or the decoder's FSQDequantize output
    conv: frozenset[int]  # node positions of the conv part
    quantizer: frozenset[int]  # node positions of the quantizer part


def producer_index(nodes: Sequence[onnx.NodeProto]) -> dict[str, int]:
    return {o: i for i, n in enumerate(nodes) for o in n.output if o}


def consumer_index(nodes: Sequence[onnx.NodeProto]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            if x:
                out.setdefault(x, []).append(i)
    return out


def ancestors(nodes: Sequence[onnx.NodeProto], tensor: str) -> set[int]:
    producer, seen, todo = producer_index(nodes), set(), [tensor]
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in seen:
            seen.add(i)
            todo.extend(nodes[i].input)
    return seen


def descendants(nodes: Sequence[onnx.NodeProto], tensor: str) -> set[int]:
    readers_of, seen, todo = consumer_index(nodes), set(), [tensor]
    while todo:
        for i in readers_of.get(todo.pop(), []):
            if i not in seen:
                seen.add(i)
                todo.extend(nodes[i].output)
    return seen


def split_graph(model: onnx.ModelProto) -> Split:
    """Find the quantizer by structure, in both forms (FSQ functions or inlined): an encoder has
    quantizer stages and the quantizer is everything downstream of the first stage's input; a
    decoder's quantizer is everything upstream of ``decoder_input``."""
    nodes = list(model.graph.node)
    stages = find_quantizer_stages(model)
    every = set(range(len(nodes)))
    if stages:
        boundary = stages[0].latent
        quantizer = descendants(nodes, boundary)
        # Inputless nodes (Constants of an inlined quantizer) belong to the part that reads them.
        readers_of = consumer_index(nodes)
        for i, n in enumerate(nodes):
            readers = [j for o in n.output for j in readers_of.get(o, [])]
            if not n.input and readers and all(j in quantizer for j in readers):
                quantizer.add(i)
        return Split("encoder", boundary, frozenset(every - quantizer), frozenset(quantizer))
    deq = [n for n in nodes if n.domain == DOMAIN and n.op_type == DEQUANTIZE_OP]
    boundary = deq[0].output[0] if deq else DECODER_INPUT
    if boundary not in producer_index(nodes):
        raise FSQDeployError("precision: the graph has neither FSQ quantizer stages nor a decoder_input tensor")
    quantizer = ancestors(nodes, boundary)
    return Split("decoder", boundary, frozenset(every - quantizer), frozenset(quantizer))


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the main graph, after strict shape inference."""
    inferred = validate(model, "precision")
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def quantizer_tensors(model: onnx.ModelProto, split: Split | None = None) -> set[str]:
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


def toposort(nodes: Sequence[onnx.NodeProto], available: Iterable[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is produced before it is read (stable otherwise)."""
    known, placed, out = set(available) | {""}, [False] * len(nodes), []
    progress = True
    while progress and len(out) < len(nodes):
        progress = False
        for i, n in enumerate(nodes):
            if not placed[i] and all(x in known for x in n.input):
                placed[i], progress = True, True
                out.append(n)
                known.update(n.output)
    if len(out) != len(nodes):
        raise FSQDeployError("precision: the converted graph has a cycle or an unknown input (a bug)")
    return out
