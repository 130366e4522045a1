"""onnx-graphsurgeon as every graph pass here uses it: import, select nodes by op type and domain,
mutate, then ``cleanup().toposort()`` and export.

``gs.export_onnx`` rebuilds the model from the graph alone, so ``export_graph`` copies back from
the source model what graphsurgeon does not carry or would change (onnx-graphsurgeon 0.6.1 with
onnx 1.23, checked by tests/test_onnxgraph.py):

- ``metadata_props`` of the model and of the graph: dropped by the export.
- The local functions (FSQQuantize, FSQDequantize): the quantizer's bit-exact definition. The
  export re-serializes them, and ``cleanup``/``toposort`` with their default
  ``recurse_functions=True`` edit their bodies (FSQDequantize's Constant moves). The passes here
  never recurse into them, and the source's functions travel verbatim.
- ``opset_import``: kept by the export, copied anyway so the custom domain keeps its version
  (graphsurgeon gives a domain it finds on a node, but not in the imports, version 1).
- ``value_info``: graphsurgeon exports a type for every tensor it knows one for, including the
  tensors a pass retyped. It is dropped: the exported graphs carry none, and every reader here
  infers shapes again.

``import_graph`` does not copy the model: graphsurgeon reads its initializers lazily, straight from
the source's TensorProtos. The passes therefore replace tensors (``Constant.values = ...``, new
``gs.Constant``) and never rename an imported one, and the source stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import onnx
import onnx_graphsurgeon as gs

# A node's domain as graphsurgeon reads it: None when the NodeProto leaves it unset.
STANDARD_DOMAINS = (None, "", "ai.onnx")


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """``graph`` cleaned up, sorted and exported, with the functions, opset imports, metadata and
    the other model fields of ``like`` (its source) copied back (see the module docstring)."""
    graph.cleanup(recurse_functions=False).toposort(recurse_functions=False)
    model = gs.export_onnx(graph, do_type_check=False)
    del model.functions[:]
    model.functions.extend(like.functions)
    del model.opset_import[:]
    model.opset_import.extend(like.opset_import)
    model.ir_version = like.ir_version
    model.producer_name, model.producer_version = like.producer_name, like.producer_version
    model.domain, model.model_version, model.doc_string = like.domain, like.model_version, like.doc_string
    stamp(model, metadata(like))
    model.graph.metadata_props.extend(like.graph.metadata_props)
    del model.graph.value_info[:]
    return model


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# -- selection -------------------------------------------------------------------------------------


def is_op(node: gs.Node, ops: str | Iterable[str], domain: str = "") -> bool:
    """``node`` is one of ``ops`` in ``domain`` ("" meaning the standard ONNX domain)."""
    wanted = (ops,) if isinstance(ops, str) else tuple(ops)
    in_domain = node.domain in STANDARD_DOMAINS if domain in STANDARD_DOMAINS else node.domain == domain
    return node.op in wanted and in_domain


def select(graph: gs.Graph, ops: str | Iterable[str], domain: str = "") -> list[gs.Node]:
    """The nodes of op type ``ops`` in ``domain``, in graph order."""
    return [n for n in graph.nodes if is_op(n, ops, domain)]


def producer_of(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def only_reader(tensor: gs.Tensor, op: str) -> gs.Node | None:
    """The node that reads ``tensor``, when it is the only reader and of op type ``op``."""
    readers = list(tensor.outputs)
    return readers[0] if len(readers) == 1 and readers[0].op == op else None


def upstream(graph: gs.Graph, tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes ``tensor`` is computed from (its producer and theirs), in graph order."""
    seen, todo = set(), [tensor]
    while todo:
        node = producer_of(todo.pop())
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            todo.extend(node.inputs)
    return [n for n in graph.nodes if id(n) in seen]


def downstream(graph: gs.Graph, tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes that read ``tensor`` directly or through other nodes, in graph order."""
    seen, todo = set(), [tensor]
    while todo:
        for node in todo.pop().outputs:
            if id(node) not in seen:
                seen.add(id(node))
                todo.extend(node.outputs)
    return [n for n in graph.nodes if id(n) in seen]


def add_node(graph: gs.Graph, op: str, name: str, inputs: Iterable[gs.Tensor], outputs: Iterable[gs.Tensor | str],
             **attrs: object) -> gs.Node:
    """Append a standard-domain node (new output tensors may be given by name); ``export_graph``'s
    ``toposort`` puts it in place."""
    out = [o if isinstance(o, gs.Tensor) else gs.Variable(o) for o in outputs]
    node = gs.Node(op, name=name, attrs=attrs, inputs=list(inputs), outputs=out)
    graph.nodes.append(node)
    return node


# -- the metadata stamp ----------------------------------------------------------------------------


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def stamp(model: onnx.ModelProto, values: Mapping[str, str], producer: tuple[str, str] | None = None
          ) -> onnx.ModelProto:
    """Replace ``model``'s metadata_props by ``values`` (in their order), and its producer name and
    version by ``producer`` when given; returns ``model``."""
    del model.metadata_props[:]
    for key, value in values.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    if producer is not None:
        model.producer_name, model.producer_version = producer
    return model
