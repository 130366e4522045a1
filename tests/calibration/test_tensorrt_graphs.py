"""The INT8 graphs for TensorRT: symmetric int8 Q/DQ on the layers' inputs, nothing rewritten, the
quantizer and the image-reading layer in float, accurate on the sample test split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from fsqdeploy.artifact import read_manifest, verify_files
from fsqdeploy.backends.onnxruntime import ort_session as session
from fsqdeploy.calibration.quantize import layers
from fsqdeploy.calibration.tensorrt_graphs import TENSORRT_FILES
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.onnxgraph.graph import find_quantizer_stages


@pytest.fixture(scope="module")
def calibrated(calibrated_copy):
    return calibrated_copy("percentile")


def graph(art, name):
    return onnx.load(str(art / f"{name}.onnx")), onnx.load(str(art / TENSORRT_FILES[name]))


def test_written_recorded_and_listed(calibrated):
    manifest = read_manifest(calibrated)
    assert set(TENSORRT_FILES.values()) <= set(manifest["files"]) and verify_files(manifest, calibrated) == []
    assert manifest["int8"]["tensorrt"]["files"] == list(TENSORRT_FILES.values())
    record = json.loads((calibrated / "calibration.json").read_text())
    trt = record["tensorrt"]
    assert trt["settings"]["target"] == "tensorrt" and trt["settings"]["activation_type"] == "int8"
    assert set(TENSORRT_FILES.values()) <= set(record["files"])


@pytest.mark.parametrize("name", ["encoder", "decoder"])
def test_only_symmetric_int8_that_tensorrt_reads(calibrated, name):
    fp32, trt = graph(calibrated, name)
    inits = {t.name: t for t in trt.graph.initializer}
    qdq = [n for n in trt.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.data_type == TensorProto.INT8, node.name  # TensorRT's parser refuses UINT8 and INT32
        assert not numpy_helper.to_array(zero).any(), node.name  # and non-zero zero points
        if node.op_type == "DequantizeLinear":  # its input is a QuantizeLinear's output, never a constant
            assert node.input[0] not in inits, node.name
    # Weights: float initializers behind a per-channel Q/DQ pair; biases float.
    weight_q = [n for n in qdq if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    assert weight_q and all(inits[n.input[0]].data_type == TensorProto.FLOAT for n in weight_q)
    assert all(numpy_helper.to_array(inits[n.input[1]]).size > 1 for n in weight_q)
    # Nothing rewritten: the same layers, ConvTranspose included, with Q/DQ on their inputs only.
    assert [n.op_type for n in layers(trt)] == [n.op_type for n in layers(fp32)]
    producers = {o: n for n in trt.graph.node for o in n.output}
    quantized_outputs = [n.name for n in layers(trt) if any(c.input[0] == n.output[0] and c.op_type ==
                                                           "QuantizeLinear" for c in trt.graph.node)]
    assert quantized_outputs == []
    int8_layers = [n for n in layers(trt) if producers.get(n.input[0]) is not None
                   and producers[n.input[0]].op_type == "DequantizeLinear"]
    # encoder: convolutions 2-4 (the first reads the images); decoder: the head Gemm and 3 ConvTransposes
    assert len(int8_layers) == (3 if name == "encoder" else 4)
    if name == "decoder":
        assert "ConvTranspose" in {n.op_type for n in int8_layers}


def test_quantizer_and_image_layer_stay_float(calibrated):
    fp32, trt = graph(calibrated, "encoder")
    assert [f.SerializeToString() for f in trt.functions] == [f.SerializeToString() for f in fp32.functions]
    (stage,) = find_quantizer_stages(trt)
    producers = {o: n for n in trt.graph.node for o in n.output}
    assert producers[producers[stage.latent].input[0]].op_type != "DequantizeLinear"
    first = layers(trt)[0]
    assert first.input[0] == "images"  # reads the images directly, no Q/DQ in between


def test_accurate_on_the_sample_test_split(calibrated):
    x = images_to_float(load_images("sample", 32).test[:256])
    fp32, trt = graph(calibrated, "encoder")
    idx32 = session(fp32).run(None, {"images": x})[0]
    idx8 = session(trt).run(None, {"images": x})[0]
    agreement = float(np.mean(idx8 == idx32))
    assert agreement >= 0.99, agreement
    record = json.loads((calibrated / "calibration.json").read_text())
    assert record["tensorrt"]["results"]["index_agreement"] >= 0.99
    assert record["tensorrt"]["results"]["psnr_delta"] >= -0.5


def test_check_lints_both_int8_pairs_and_catches_what_tensorrt_refuses(calibrated, tmp_path):
    from fsqdeploy.artifact import add_files
    from fsqdeploy.export.check import check_artifact

    report = check_artifact(calibrated, fp16=False)
    rows = {f.check: f.status for f in report.findings}
    for name in ("encoder.int8.onnx", "decoder.int8.onnx", *TENSORRT_FILES.values()):
        assert rows[f"{name}: quantizer float"] == "pass" and rows[f"{name}: onnx checker"] == "pass"
    assert rows["encoder.int8.trt.onnx: TensorRT Q/DQ"] == rows["decoder.int8.trt.onnx: TensorRT Q/DQ"] == "pass"
    assert report.passed

    # ONNX Runtime's uint8 form where TensorRT's should be: check says why TensorRT would refuse it.
    art = tmp_path / "art"
    shutil.copytree(calibrated, art)
    shutil.copyfile(art / "encoder.int8.onnx", art / "encoder.int8.trt.onnx")
    add_files(art, ["encoder.int8.trt.onnx"])
    report = check_artifact(art, fp16=False)
    bad = next(f for f in report.findings if f.check == "encoder.int8.trt.onnx: TensorRT Q/DQ")
    assert bad.status == "fail" and "uint8 zero point (TensorRT reads int8 only)" in bad.detail
    assert not report.passed
