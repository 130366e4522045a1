"""Graph surgery on onnx-graphsurgeon (fsqdeploy/onnxgraph/surgery.py): what survives a round trip,
selection and traversal, the metadata stamp, and where the quantizer is found."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from fsqdeploy.artifact import DECODER_FILE, ENCODER_FILE
from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.export.fp16 import convert_to_fp16
from fsqdeploy.onnxgraph.graph import DOMAIN, QUANTIZE_OP, find_quantizer_stages, split_graph, validate
from fsqdeploy.onnxgraph.surgery import (
    add_node,
    downstream,
    export_graph,
    import_graph,
    metadata,
    select,
    stamp,
    upstream,
)


def _load(exported, name: str) -> onnx.ModelProto:
    return onnx.load(str(exported.art / name))


@pytest.mark.parametrize("fixture", ["art64", "art64_inline"])
@pytest.mark.parametrize("name", [ENCODER_FILE, DECODER_FILE])
def test_a_round_trip_keeps_functions_opsets_metadata_and_outputs(request, fixture, name):
    model = _load(request.getfixturevalue(fixture), name)
    before = model.SerializeToString()
    out = export_graph(import_graph(model), like=model)
    assert model.SerializeToString() == before  # the source is read, never edited
    assert [f.SerializeToString() for f in out.functions] == [f.SerializeToString() for f in model.functions]
    assert list(out.opset_import) == list(model.opset_import)
    assert metadata(out) == metadata(model) and metadata(out)["graph"] == name.removesuffix(".onnx")
    assert (out.producer_name, out.producer_version, out.ir_version) == \
        (model.producer_name, model.producer_version, model.ir_version)
    nodes = [(n.name, n.op_type) for n in out.graph.node]
    assert Counter(nodes) == Counter((n.name, n.op_type) for n in model.graph.node)
    if fixture == "art64":  # toposort moves only the inlined quantizer's inputless Constants forward
        assert nodes == [(n.name, n.op_type) for n in model.graph.node]
    validate(out, "test")
    feed = ({"images": np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32)} if name == ENCODER_FILE
            else {"indices": np.random.default_rng(0).integers(0, 5, (8, 16)).astype(np.int32)})
    np.testing.assert_array_equal(ort_session(out).run(None, feed)[0], ort_session(model).run(None, feed)[0])


def test_graphsurgeon_alone_drops_the_metadata_and_edits_function_bodies(art64):
    """Why export_graph copies them back: gs.export_onnx rebuilds the model from the graph alone,
    and cleanup/toposort by default recurse into the local functions."""
    model = _load(art64, DECODER_FILE)
    graph = gs.import_onnx(model)
    graph.cleanup().toposort()
    plain = gs.export_onnx(graph)
    assert metadata(model) and not plain.metadata_props
    (body,), (sorted_body,) = model.functions, plain.functions
    assert [n.op_type for n in sorted_body.node] != [n.op_type for n in body.node]
    assert Counter(n.op_type for n in sorted_body.node) == Counter(n.op_type for n in body.node)


def _tiny() -> onnx.ModelProto:
    """x -> Relu -> a -> FSQQuantize-like custom op -> b; a -> Neg -> c; outputs b, c."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("b", "c")]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Neg", ["a"], ["c"], name="neg"),
             helper.make_node(QUANTIZE_OP, ["a"], ["b"], name="custom", domain=DOMAIN)]
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs),
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)])


def test_select_by_op_type_and_domain_and_walk_both_ways():
    graph = import_graph(_tiny())
    assert [n.name for n in select(graph, ("Relu", "Neg"))] == ["relu", "neg"]
    assert select(graph, QUANTIZE_OP) == []  # the standard domain has no such op
    assert [n.name for n in select(graph, QUANTIZE_OP, DOMAIN)] == ["custom"]
    tensors = graph.tensors()
    assert [n.name for n in downstream(graph, tensors["x"])] == ["relu", "neg", "custom"]
    assert [n.name for n in upstream(graph, tensors["b"])] == ["relu", "custom"]  # graph order
    assert upstream(graph, tensors["x"]) == []


def test_export_drops_what_no_output_needs_and_sorts_what_was_appended():
    model = _tiny()
    graph = import_graph(model)
    tensors = graph.tensors()
    (neg,) = select(graph, "Neg")
    neg.outputs.clear()  # a new Abs computes c instead; the Neg is left computing nothing
    add_node(graph, "Abs", "abs", [tensors["a"]], [tensors["c"]])
    graph.nodes.insert(0, graph.nodes.pop())  # appended anywhere: toposort puts it after its input
    out = export_graph(graph, like=model)
    assert [n.name for n in out.graph.node] in (["relu", "abs", "custom"], ["relu", "custom", "abs"])
    assert list(out.opset_import) == list(model.opset_import)


def test_stamp_replaces_metadata_in_order_and_sets_the_producer():
    model = _tiny()
    stamp(model, {"graph": "encoder", "levels": "8"})
    stamp(model, {**metadata(model), "precision": "fp16"}, producer=("fsqdeploy", "9.9"))
    assert [(p.key, p.value) for p in model.metadata_props] == \
        [("graph", "encoder"), ("levels", "8"), ("precision", "fp16")]
    assert (model.producer_name, model.producer_version) == ("fsqdeploy", "9.9")
    stamp(model, {})
    assert not model.metadata_props and model.producer_name == "fsqdeploy"


def test_the_quantizer_split_in_both_forms(art64, art64_inline):
    """The same quantizer found in the FSQ-function graph and in the inlined one."""
    enc, flat = _load(art64, ENCODER_FILE), _load(art64_inline, ENCODER_FILE)
    split, flat_split = split_graph(enc), split_graph(flat)
    assert split.kind == flat_split.kind == "encoder" and split.boundary == flat_split.boundary == "latent"
    quantizer = Counter(enc.graph.node[i].op_type for i in split.quantizer)
    assert quantizer == Counter({QUANTIZE_OP: 2, "Add": 1, "Gather": 1, "Sub": 1, "Mul": 1, "Concat": 1})
    flat_ops = Counter(flat.graph.node[i].op_type for i in flat_split.quantizer)
    assert flat_ops["GreaterOrEqual"] == flat_ops["ReduceSum"] == 2 and QUANTIZE_OP not in flat_ops
    assert split.conv | split.quantizer == set(range(len(enc.graph.node))) and not split.conv & split.quantizer
    # Every conv-part node comes before the quantizer in the exported (sorted) graph.
    assert max(split.conv) < min(split.quantizer)
    assert len(find_quantizer_stages(enc)) == len(find_quantizer_stages(flat)) == 2
    dec = split_graph(_load(art64, DECODER_FILE))
    assert dec.kind == "decoder" and len(dec.quantizer) == 1


def test_the_fp16_conversion_leaves_its_source_alone(art64):
    """graphsurgeon reads initializers straight from the source's TensorProtos: converting one
    in place must not reach back into the model it came from."""
    model = _load(art64, ENCODER_FILE)
    before = model.SerializeToString()
    half = convert_to_fp16(model)
    assert model.SerializeToString() == before
    weights = {t.name: t for t in half.graph.initializer}
    source = {t.name: t for t in model.graph.initializer}
    conv_weight = next(n.input[1] for n in half.graph.node if n.op_type == "Conv")
    assert (weights[conv_weight].data_type, source[conv_weight].data_type) == (TensorProto.FLOAT16, TensorProto.FLOAT)
    np.testing.assert_array_equal(numpy_helper.to_array(weights[conv_weight]),
                                  numpy_helper.to_array(source[conv_weight]).astype(np.float16))
