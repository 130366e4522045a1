"""The INT8 graphs: QDQ nodes around the layers, the FSQ quantizer and the layer feeding it untouched."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fsqdeploy.backends.onnxruntime import ort_session as session
from fsqdeploy.calibration.pipeline import calibrate_artifact
from fsqdeploy.calibration.quantize import QuantSettings, layers, protected_nodes, quantize_graph
from fsqdeploy.calibration.sensitivity import keep_worst_in_float
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.model import FSQVAE
from fsqdeploy.onnxgraph.graph import find_quantizer_stages

QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def calibrated(calibrated_copy):
    return calibrated_copy("minmax")


def graphs(art, name):
    return onnx.load(str(art / f"{name}.onnx")), onnx.load(str(art / f"{name}.int8.onnx"))


def same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    x, y = numpy_helper.to_array(a), numpy_helper.to_array(b)
    return a.data_type == b.data_type and x.shape == y.shape and x.tobytes() == y.tobytes()


def quantized_weights(model):
    """Layer name -> (int8 weight initializer, its scale) for every layer whose weight is dequantized."""
    inits = {t.name: t for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    found = {}
    for layer in layers(model):
        node = dq.get(layer.input[1])
        if node is not None and node.input[0] in inits:
            found[layer.name] = (inits[node.input[0]], numpy_helper.to_array(inits[node.input[1]]))
    return found


def test_every_layer_outside_the_quantizer_is_int8_per_channel_unless_slower(calibrated):
    # This model's channels are 8, 16, 32, 32: the encoder's first two convolutions have 3 and 8 input
    # channels and stay in float, as does the decoder's last phase convolution (8 input channels).
    # The record says why.
    record = json.loads((calibrated / "calibration.json").read_text())
    for name, count, slow in (("encoder", 2, 2), ("decoder", 3, 1)):
        _, int8 = graphs(calibrated, name)
        weights = quantized_weights(int8)
        assert len(weights) == count, sorted(weights)
        for_speed = {n for n, why in record["float_nodes"][name].items() if "input channels" in why}
        assert len([n for n in layers(int8) if n.name in for_speed]) == slow, for_speed
        for weight, scale in weights.values():
            assert weight.data_type == TensorProto.INT8
            assert scale.size > 1  # one scale per output channel
        activations = [n for n in int8.graph.node if n.op_type == "QuantizeLinear"]
        assert activations and all(n.input[0] != "indices" for n in activations)
    _, dec8 = graphs(calibrated, "decoder")
    assert "ConvTranspose" not in {n.op_type for n in dec8.graph.node}  # ONNX Runtime has no INT8 kernel for it


def test_the_quantizer_and_the_layer_feeding_it_stay_float(calibrated):
    enc, enc8 = graphs(calibrated, "encoder")
    assert [f.SerializeToString() for f in enc8.functions] == [f.SerializeToString() for f in enc.functions]
    inits, inits8 = ({t.name: t for t in m.graph.initializer} for m in (enc, enc8))
    (stage,) = find_quantizer_stages(enc8)
    assert same_tensor(inits8[stage.thresholds], inits[stage.thresholds])
    fsq = [n for n in enc.graph.node if n.op_type == "FSQQuantize"]
    assert [n for n in enc8.graph.node if n.op_type == "FSQQuantize"] == fsq
    # No QDQ node reads or writes the latent, the indices or anything in between.
    region = {stage.latent, stage.indices}
    assert not [n.name for n in enc8.graph.node if n.op_type in QDQ and region & {*n.input, *n.output}]
    # The Gemm computing the latent: the same float weights, and a float input that no DequantizeLinear produced.
    producers = {o: n for n in enc8.graph.node for o in n.output}
    head = producers[stage.latent]
    assert head.op_type == "Gemm" and head.name in protected_nodes(enc, "encoder")
    assert all(same_tensor(inits8[i], inits[i]) for i in head.input[1:])
    assert producers[head.input[0]].op_type not in QDQ
    dec, dec8 = graphs(calibrated, "decoder")
    assert [f.SerializeToString() for f in dec8.functions] == [f.SerializeToString() for f in dec.functions]


def test_the_quantizer_is_bit_exact_on_the_int8_latent(calibrated):
    """Whatever latent the INT8 layers compute, the indices are FSQ's of exactly that latent."""
    _, enc8 = graphs(calibrated, "encoder")
    (stage,) = find_quantizer_stages(enc8)
    enc8.graph.output.append(helper.make_tensor_value_info(stage.latent, TensorProto.FLOAT, None))
    x = images_to_float(load_images("sample", 32).test[:256])
    indices, latent = session(enc8).run(["indices", stage.latent], {"images": x})
    model = FSQVAE.load(calibrated / "checkpoint")
    expected = model.quantizer.indices(torch.from_numpy(latent)).numpy()
    np.testing.assert_array_equal(indices, expected)


def test_inlined_quantizers_are_found_and_kept_float(tmp_path, art64_inline):
    art = tmp_path / "art"
    shutil.copytree(art64_inline.art, art)
    result = calibrate_artifact(art, samples=128, batch_size=32, eval_images=64)
    enc8 = onnx.load(str(art / "encoder.int8.onnx"))
    assert not enc8.functions and len(find_quantizer_stages(enc8)) == 2
    kept = result.record["float_nodes"]["encoder"]
    ops = {n.name: n.op_type for n in enc8.graph.node}
    assert {"GreaterOrEqual", "ReduceSum", "Gather", "Concat", "Gemm"} <= {ops[n] for n in kept if n in ops}
    for stage in find_quantizer_stages(enc8):
        assert not [n.name for n in enc8.graph.node if n.op_type in QDQ and stage.latent in {*n.input, *n.output}]


def test_sensitivity_keeps_the_worst_layer_in_float(trained_art):
    """The greedy pass against a stand-in score: one layer ruins the target, so it alone goes back to float."""
    model = onnx.load(str(trained_art / "encoder.onnx"))
    protected = protected_nodes(model, "encoder")
    bad = layers(model)[1].name
    ranges = {"images": (0.0, 1.0)} | {o: (0.0, 4.0) for n in model.graph.node for o in n.output}

    def bad_is_int8(m: onnx.ModelProto) -> bool:
        return bad in quantized_weights(m)

    scores, kept = keep_worst_in_float(model, ranges, QuantSettings(), protected,
                                       score=lambda m: 0.0 if bad_is_int8(m) else 1.0,
                                       meets=lambda m: not bad_is_int8(m))
    assert scores[0].layer == bad and scores[0].score == 0.0 and list(kept) == [bad]
    assert kept[bad][0] == bad and [n.op_type for n in model.graph.node if n.name in kept[bad]] == ["Conv", "Relu"]
    assert bad in quantized_weights(quantize_graph(model, ranges, QuantSettings(), protected))
