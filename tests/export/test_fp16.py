"""FP16 graphs (`export --precision fp16`): the conv parts in float16, the quantizer in float32,
the I/O unchanged, and what it costs in index agreement on ONNX Runtime CPU."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fsqdeploy.artifact import DECODER_FILE, ENCODER_FILE, io_contract, verify_files
from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.data import load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.check import io_problems
from fsqdeploy.export.fp16 import (
    compare_fp16,
    convert_graphs,
    convert_to_fp16,
    fp16_risk,
    fp16_rounding_graph,
)
from fsqdeploy.export.parity import boundary_rows, extract
from fsqdeploy.images import images_to_float
from fsqdeploy.onnxgraph.graph import quantizer_precision_problems, split_graph, tensor_types


def _graphs(exported) -> dict[str, onnx.ModelProto]:
    return {name: onnx.load(str(exported.art / name)) for name in (ENCODER_FILE, DECODER_FILE)}


def _fp16(exported) -> dict[str, onnx.ModelProto]:
    converted = convert_graphs(_graphs(exported), "fp16")
    return {ENCODER_FILE: converted["encoder.fp16.onnx"], DECODER_FILE: converted["decoder.fp16.onnx"]}


def _real_images(size: int, count: int = 512) -> np.ndarray:
    return images_to_float(load_images("sample", size).test[:count])


@pytest.mark.parametrize("fixture", ["art32", "art64", "art64_inline"])
def test_conv_part_is_fp16_and_quantizer_fp32(request, fixture):
    exported = request.getfixturevalue(fixture)
    for name, graph in _graphs(exported).items():
        half = convert_to_fp16(graph)
        types = tensor_types(half)
        split = split_graph(half)
        nodes = half.graph.node
        # Every weight of a convolution or matrix product is float16 ...
        weighted = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose", "Gemm")]
        assert weighted and all(types[n.input[1]] == TensorProto.FLOAT16 for n in weighted)
        assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in weighted)
        # ... every float tensor of the quantizer float32, and the I/O the contract's.
        assert quantizer_precision_problems(half) == []
        assert types[split.boundary] == TensorProto.FLOAT
        contract = io_contract(exported.model.config.image_size, exported.model.code_width)
        assert io_problems(half, contract[name.removesuffix(".onnx")]) == []
        # The boundary is a Cast between the float16 conv part and the float32 quantizer.
        casts = {n.output[0]: n for n in nodes if n.op_type == "Cast"}
        if split.kind == "encoder":
            assert casts[split.boundary].name == f"to_fp32/{split.boundary}"
        else:
            assert f"{split.boundary}/fp16" in casts


def test_quantizer_of_fp16_encoder_is_exact_at_every_threshold(art64):
    """The quantizer subgraph of the FP16 encoder, fed latents on and one ulp beside every
    threshold, computes PyTorch's indices exactly: it is float32, untouched by the conversion."""
    half = _fp16(art64)[ENCODER_FILE]
    q = art64.model.quantizer
    first, _ = boundary_rows(q.stages[0].tables(torch.device("cpu"))[0].numpy())
    rng = np.random.default_rng(0)
    rows = np.concatenate([first, rng.normal(0, 0.3, (256, q.latent_dim)).astype(np.float32)])
    chain = extract(half, ["latent"], ["indices"])
    got = ort_session(chain).run(None, {"latent": rows})[0]
    with torch.no_grad():
        want = q.indices(torch.from_numpy(rows)).numpy()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("fixture", ["art32", "art64"])
def test_fp16_agreement_is_bounded_by_the_fp16_risk(request, fixture):
    exported = request.getfixturevalue(fixture)
    graphs, half = _graphs(exported), _fp16(exported)
    images = _real_images(exported.model.config.image_size)
    risk = fp16_risk(graphs[ENCODER_FILE], images)["share"]
    on_ort = compare_fp16(graphs, half, images)
    rounded = compare_fp16(graphs, {k: fp16_rounding_graph(g) for k, g in half.items()}, images)
    for result in (on_ort, rounded):
        # Indices change only where the FP16 conv stack moves the latent across a threshold; the
        # share of latents that close (FP16 rounding distance) bounds it, with room for a few.
        assert result["images"] == len(images)
        assert 1 - result["index_agreement"] <= 3 * risk + 2 / (len(images) * exported.model.code_width)
        assert result["max_abs_error"] < 5e-3
    # Every FP16 tensor rounded: the decoded images are float16 numbers (up to the final cast).
    rounding = fp16_rounding_graph(half[DECODER_FILE])
    idx = ort_session(graphs[ENCODER_FILE]).run(None, {"images": images[:16]})[0]
    decoded = ort_session(rounding).run(None, {"indices": idx})[0]
    assert np.array_equal(decoded, decoded.astype(np.float16).astype(np.float32))


def test_conversion_refuses_what_it_does_not_know(art32):
    graphs = _graphs(art32)
    odd = onnx.ModelProto()
    odd.CopyFrom(graphs[DECODER_FILE])
    relu = next(n for n in odd.graph.node if n.op_type == "Relu")
    relu.op_type = "Softplus"  # not in the FP16-safe list
    with pytest.raises(FSQDeployError, match="no FP16 rule for Softplus"):
        convert_to_fp16(odd)

    big = onnx.ModelProto()
    big.CopyFrom(graphs[ENCODER_FILE])
    w = next(t for t in big.graph.initializer if t.name.endswith("weight"))
    array = numpy_helper.to_array(w).copy()
    array.flat[0] = 1e6
    w.CopyFrom(numpy_helper.from_array(array, w.name))
    with pytest.raises(FSQDeployError, match="beyond float16's range"):
        convert_to_fp16(big)

    with pytest.raises(FSQDeployError, match="neither FSQ quantizer stages nor a decoder_input"):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        bare = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
        split_graph(bare)


def test_export_cli_writes_fp16_graphs(cli, run32, tmp_path):
    out = tmp_path / "art"
    code, stdout, err = cli("export", run32, "--out", out, "--precision", "fp16", "--parity-images", "128")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"encoder.fp16.onnx", "decoder.fp16.onnx"} <= set(manifest["files"])
    assert verify_files(manifest, out) == []
    record = manifest["fp16"]
    assert record["quantizer"] == "float32" and record["images"] == 128 and record["data"] == "sample"
    for key in ("onnxruntime_cpu", "fp16_rounding"):
        assert 0.99 <= record[key]["index_agreement"] <= 1.0
        # fsqdeploy.compare's vocabulary: flipped images as a count and as a share of the images.
        r = record[key]
        assert isinstance(r["flipped_images"], int) and r["flipped_image_share"] == r["flipped_images"] / 128
        assert r["max_abs_error"] < 5e-3 and r["psnr_vs_reference"] >= r["roundtrip_psnr_vs_reference"] - 1e-9
    assert 0.0 <= record["fp16_risk"] < 0.01
    assert "fp16 (sample, 128 images, quantizer in FP32)" in stdout and "FP16 risk" in stdout
    meta = {p.key: p.value for p in onnx.load(str(out / "encoder.fp16.onnx")).metadata_props}
    assert meta["precision"] == "fp16" and meta["graph"] == "encoder"

    code, stdout, err = cli("check", out, "--json")
    assert code == 0, stdout + err
    report = json.loads(stdout)
    rows = {c["check"]: c for c in report["checks"]}
    assert rows["encoder.fp16.onnx: quantizer FP32"]["status"] == "pass"
    assert rows["decoder.fp16.onnx: I/O contract"]["status"] == "pass"
    assert "measured" in rows["quantizer FP16 risk"]["detail"]


def test_check_fails_an_fp16_graph_whose_quantizer_is_fp16(cli, run32, tmp_path):
    from fsqdeploy.artifact import add_files

    out = tmp_path / "art"
    assert cli("export", run32, "--out", out, "--precision", "fp16", "--parity-images", "32")[0] == 0
    graph = onnx.load(str(out / "encoder.fp16.onnx"))
    thresholds = next(t for t in graph.graph.initializer if t.name == "fsq_thresholds_0")
    thresholds.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(thresholds).astype(np.float16),
                                                thresholds.name))
    cast = next(n for n in graph.graph.node if n.name == "to_fp32/latent")
    cast.attribute[0].i = TensorProto.FLOAT16
    onnx.save(graph, str(out / "encoder.fp16.onnx"))
    add_files(out, ["encoder.fp16.onnx"])
    code, stdout, _ = cli("check", out, "--json")
    rows = {c["check"]: c for c in json.loads(stdout)["checks"]}
    assert code == 1 and rows["encoder.fp16.onnx: quantizer FP32"]["status"] == "fail"
    assert "float16, not float32" in rows["encoder.fp16.onnx: quantizer FP32"]["detail"]


def test_unknown_precision_is_one_line_and_writes_nothing(cli, one_line_error, run32, tmp_path):
    code, stdout, err = cli("export", run32, "--out", tmp_path / "art", "--precision", "bf16")
    one_line_error(code, err, "precision 'bf16' is not supported")
    assert list(tmp_path.iterdir()) == [] and stdout == ""
