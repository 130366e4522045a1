"""The exported graphs: FSQQuantize/FSQDequantize as local functions of standard ops, graph hygiene,
the --inline form, opsets, and what ONNX Runtime's optimizer makes of the quantizer."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fsqdeploy import __version__
from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.export.onnx_export import export_graphs
from fsqdeploy.fileio import sha256_file
from fsqdeploy.onnxgraph.graph import DEQUANTIZE_OP, DOMAIN, QUANTIZE_OP, find_quantizer_stages, validate

QUANTIZE_BODY = {"Constant", "Unsqueeze", "GreaterOrEqual", "Cast", "ReduceSum"}
DEQUANTIZE_BODY = {"Constant", "Cast", "Sub", "Div", "Mul", "Split", "Add"}


def load(exported, name: str) -> onnx.ModelProto:
    return onnx.load(str(exported.art / name))


def is_standard(node: onnx.NodeProto, opset: int) -> bool:
    return node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type, opset)


def test_quantizer_is_one_fsqquantize_node_per_stage(exported):
    enc, q = load(exported, "encoder.onnx"), exported.model.quantizer
    nodes = [n for n in enc.graph.node if n.op_type == QUANTIZE_OP]
    assert len(nodes) == len(q.stages)
    assert {o.domain: o.version for o in enc.opset_import} == {"": 18, DOMAIN: 1}
    for k, (node, stage) in enumerate(zip(nodes, q.stages)):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == DOMAIN
        assert attrs["levels"] == stage.level_list() and attrs["stage"] == k
        assert attrs["temperature"] == pytest.approx(0.1)
        thresholds = next(t for t in enc.graph.initializer if t.name == node.input[1])
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(thresholds),
                                      stage.tables(torch.device("cpu"))[0].numpy())


def test_functions_are_made_of_standard_ops(exported):
    for name, op, body in (("encoder.onnx", QUANTIZE_OP, QUANTIZE_BODY),
                           ("decoder.onnx", DEQUANTIZE_OP, DEQUANTIZE_BODY)):
        model = load(exported, name)
        (fn,) = [f for f in model.functions if f.name == op]
        assert fn.domain == DOMAIN and len(model.functions) == 1
        assert {n.op_type for n in fn.node} <= body
        assert all(is_standard(n, 18) for n in fn.node)
        # Outside the function every node is standard too, except the calls to it.
        assert all(is_standard(n, 18) or (n.domain, n.op_type) == (DOMAIN, op) for n in model.graph.node)
    dec = load(exported, "decoder.onnx")
    assert [n.op_type for n in dec.graph.node][0] == DEQUANTIZE_OP


def test_graph_hygiene_and_metadata(exported):
    manifest_sha = sha256_file(exported.run / "model.safetensors")
    for name in ("encoder.onnx", "decoder.onnx"):
        model = load(exported, name)
        validate(model, "test")  # full checker + strict type-checked shape inference
        ops = [n.op_type for n in model.graph.node]
        assert not {"BatchNormalization", "Dropout", "Identity", "Constant", "Shape"} & set(ops), ops
        for v in [*model.graph.input, *model.graph.output]:
            t = v.type.tensor_type
            assert t.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT32)
            dims = list(t.shape.dim)
            assert dims[0].dim_param == "batch" and all(d.HasField("dim_value") for d in dims[1:])
        meta = {p.key: p.value for p in model.metadata_props}
        m = exported.model
        assert meta["fsqdeploy_version"] == __version__
        assert meta["levels"] == ",".join(map(str, m.levels))
        assert meta["latent_dim"] == str(m.config.latent_dim) and meta["image_size"] == str(m.config.image_size)
        assert float(meta["temperature"]) == pytest.approx(0.1) and meta["stages"] == str(m.config.stages)
        assert meta["checkpoint_sha256"] == manifest_sha
        # No torch stack traces or local paths left in the file.
        assert b"stack_trace" not in (exported.art / name).read_bytes()
    # BatchNorm folded: one Conv weight + bias per encoder conv layer, no separate BN tensors.
    enc = load(exported, "encoder.onnx")
    assert sum(n.op_type == "Conv" for n in enc.graph.node) == len(exported.model.config.channels)
    assert not [t.name for t in enc.graph.initializer if "running" in t.name or "bn" in t.name.lower()]


def test_inline_graphs_have_no_custom_domain_and_equal_outputs(art64, art64_inline):
    for name in ("encoder.onnx", "decoder.onnx"):
        flat = load(art64_inline, name)
        assert not flat.functions
        assert [o.domain for o in flat.opset_import] == [""]
        assert all(is_standard(n, 18) for n in flat.graph.node)
    assert len(find_quantizer_stages(load(art64_inline, "encoder.onnx"))) == 2
    x = np.random.default_rng(1).random((16, 3, 64, 64), dtype=np.float32)
    idx = [ort_session(a.art / "encoder.onnx").run(None, {"images": x})[0] for a in (art64, art64_inline)]
    np.testing.assert_array_equal(idx[0], idx[1])
    images = [ort_session(a.art / "decoder.onnx").run(None, {"indices": idx[0]})[0] for a in (art64, art64_inline)]
    np.testing.assert_array_equal(images[0], images[1])


@pytest.mark.parametrize("opset", [17, 20])
def test_other_opsets_export_and_agree(art32, opset):
    graphs = export_graphs(art32.model, opset, inline=False, checkpoint_sha256="0" * 64)
    enc = graphs["encoder.onnx"]
    assert {o.domain: o.version for o in enc.opset_import}[""] == opset
    assert enc.functions[0].opset_import[0].version == opset
    x = np.random.default_rng(2).random((8, 3, 32, 32), dtype=np.float32)
    got = ort_session(enc).run(None, {"images": x})[0]
    np.testing.assert_array_equal(got, art32.model.encode(torch.from_numpy(x)).numpy())


def test_ort_optimizer_keeps_the_quantizer_ops(art64, tmp_path):
    """With every ORT optimization on, the quantizer and residual ops survive unfused, in order."""
    for name, expected in (
        ("encoder.onnx", ["Unsqueeze", "GreaterOrEqual", "Cast", "ReduceSum", "Add", "Gather", "Sub", "Mul",
                          "Unsqueeze", "GreaterOrEqual", "Cast", "ReduceSum", "Concat"]),
        ("decoder.onnx", ["Cast", "Sub", "Div", "Mul", "Split", "Add"]),
    ):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # ORT warns that the saved graph is hardware specific
        opts.optimized_model_filepath = str(tmp_path / name)
        ort.InferenceSession(str(art64.art / name), opts, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(str(tmp_path / name)).graph.node]
        it = iter(ops)
        assert all(op in it for op in expected), ops  # `expected` is a subsequence of the graph
        assert all(n.domain in ("", "ai.onnx") or "Conv" in n.op_type or n.op_type.startswith("Reorder")
                   for n in onnx.load(str(tmp_path / name)).graph.node)
