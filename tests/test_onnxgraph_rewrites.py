"""The exact graph rewrites behind the INT8 graphs and the CPU runtimes' graphs, checked against the graphs
they replace."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fsqdeploy.backends.onnxruntime import ort_session as session
from fsqdeploy.onnxgraph.rewrites import (
    conv_as_matmul,
    tiny_convs_as_matmul,
    transposed_convs_for_onnxruntime,
    transposed_to_phase_convs,
)


def single_op_model(op: str, x_shape: list, w: np.ndarray, b: np.ndarray | None, relu: bool,
                    **attrs) -> onnx.ModelProto:
    """x -> one Conv or ConvTranspose [-> Relu] -> output, with constant weights."""
    inputs = ["x", "w"] + (["b"] if b is not None else [])
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    nodes = [helper.make_node(op, inputs, ["y"], name="layer", **attrs)]
    if relu:
        nodes.append(helper.make_node("Relu", ["y"], ["out"], name="relu"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *x_shape])],
                              [helper.make_tensor_value_info("out" if relu else "y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return session(model).run(None, {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize("cin,cout,side,bias,relu", [(8, 4, 4, True, True), (16, 3, 8, True, False),
                                                     (3, 5, 5, False, True), (32, 16, 2, True, True)])
def test_phase_convolutions_equal_the_transposed_convolution(cin, cout, side, bias, relu):
    rng = np.random.default_rng(cin * cout)
    w = rng.standard_normal((cin, cout, 4, 4)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    model = single_op_model("ConvTranspose", [cin, side, side], w, b, relu, kernel_shape=[4, 4], strides=[2, 2],
                            pads=[1, 1, 1, 1])
    rewritten, count = transposed_to_phase_convs(model)
    assert count == 1
    ops = [n.op_type for n in rewritten.graph.node]
    assert "ConvTranspose" not in ops and ops[:2] == (["Conv", "Relu"] if relu else ["Conv", "Transpose"])
    onnx.checker.check_model(rewritten, full_check=True)
    x = rng.standard_normal((5, cin, side, side)).astype(np.float32)
    ref, got = outputs(model, x), outputs(rewritten, x)
    assert got.shape == ref.shape == (5, cout, 2 * side, 2 * side)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_the_exported_decoder_keeps_its_output(art32):
    model = onnx.load(str(art32.art / "decoder.onnx"))
    rewritten, count = transposed_to_phase_convs(model)
    assert count == 3  # four layers; the first is folded into the head Gemm by the export
    assert transposed_to_phase_convs(rewritten)[1] == 0
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 8, (64, 16)).astype(np.int32)
    assert np.abs(outputs(rewritten, indices) - outputs(model, indices)).max() <= 1e-5
    assert [f.name for f in rewritten.functions] == [f.name for f in model.functions]


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [4, 4], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [0, 0, 0, 0]},
    {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2]},
    {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1], "group": 2},
], ids=["stride1", "kernel3", "pads0", "output_padding", "dilation", "group"])
def test_other_transposed_convolutions_are_left_alone(attrs):
    k = attrs["kernel_shape"][0]
    w = np.ones((4, 4 // attrs.get("group", 1), k, k), np.float32)
    model = single_op_model("ConvTranspose", [4, 4, 4], w, None, False, **attrs)
    rewritten, count = transposed_to_phase_convs(model)
    assert count == 0 and rewritten == model


@pytest.mark.parametrize("cin,cout,side,k,stride,pad", [(32, 32, 4, 4, 2, 1), (8, 6, 5, 3, 1, 1), (16, 8, 8, 4, 2, 1)])
def test_a_small_convolution_as_one_matmul(cin, cout, side, k, stride, pad):
    rng = np.random.default_rng(side)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    model = single_op_model("Conv", [cin, side, side], w, b, True, kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4)
    rewritten, name = conv_as_matmul(model, "layer")
    assert name == "layer/as_matmul"
    assert [n.op_type for n in rewritten.graph.node] == ["Reshape", "MatMul", "Reshape", "Add", "Relu"]
    x = rng.standard_normal((3, cin, side, side)).astype(np.float32)
    ref = outputs(model, x)
    assert np.abs(outputs(rewritten, x) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_convolutions_whose_dense_form_costs_too_much_stay():
    w = np.ones((4, 4, 3, 3), np.float32)
    big = single_op_model("Conv", [4, 16, 16], w, None, False, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    grouped = single_op_model("Conv", [4, 4, 4], np.ones((4, 2, 3, 3), np.float32), None, False,
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)
    for model in (big, grouped):
        rewritten, name = conv_as_matmul(model, "layer")
        assert name is None and rewritten == model


def test_phase_rewrite_limited_to_few_output_channels(art32):
    model = onnx.load(str(art32.art / "decoder.onnx"))
    couts = [numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == n.input[1])).shape[1]
             for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert couts == [16, 8, 3]
    rewritten, count = transposed_to_phase_convs(model, max_out_channels=15)
    assert count == 2 and [n.op_type for n in rewritten.graph.node].count("ConvTranspose") == 1
    indices = np.random.default_rng(1).integers(0, 8, (32, 16)).astype(np.int32)
    assert np.abs(outputs(rewritten, indices) - outputs(model, indices)).max() <= 1e-5


def test_only_convolutions_with_a_tiny_output_become_matmuls(art32):
    model = onnx.load(str(art32.art / "encoder.onnx"))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    rewritten, count = tiny_convs_as_matmul(model)
    assert count == 1  # 32 px: only the last convolution (4x4 -> 2x2) costs no more as a MatMul
    left = [n.name for n in rewritten.graph.node if n.op_type == "Conv"]
    assert left == convs[:-1] and f"{convs[-1]}/as_matmul" in [n.name for n in rewritten.graph.node]
    images = np.random.default_rng(2).random((32, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(outputs(rewritten, images), outputs(model, images))


@pytest.mark.parametrize("cout,relu", [(3, False), (3, True), (5, True), (4, False)])
def test_padded_phase_outputs_are_sliced_off_again(cout, relu):
    rng = np.random.default_rng(cout)
    w = rng.standard_normal((8, cout, 4, 4)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    model = single_op_model("ConvTranspose", [8, 5, 5], w, b, relu, kernel_shape=[4, 4], strides=[2, 2],
                            pads=[1, 1, 1, 1])
    rewritten, applied = transposed_convs_for_onnxruntime(model)
    assert len(applied) == 1
    conv = next(n for n in rewritten.graph.node if n.op_type == "Conv")
    filters = next(t for t in rewritten.graph.initializer if t.name == conv.input[1]).dims[0]
    assert filters == 16 * -(-4 * cout // 16)  # 4 * cout phases, padded up to whole blocks of 16
    assert ("Slice" in [n.op_type for n in rewritten.graph.node]) == (4 * cout != 16)
    onnx.checker.check_model(rewritten, full_check=True)
    x = rng.standard_normal((3, 8, 5, 5)).astype(np.float32)
    ref = outputs(model, x)
    assert np.abs(outputs(rewritten, x) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
