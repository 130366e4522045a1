"""Exporting a spatial (conv) model: graphs dynamic in height and width, the parity gate over
several sizes (whole photos, non-square crops, threshold probes), check, FP16 and INT8 on them,
and every CPU backend's indices equal to PyTorch's at every size tested."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from fsqdeploy import FSQDeployError
from fsqdeploy.artifact import GRID_HEIGHT, GRID_WIDTH, HEIGHT, WIDTH, Manifest, add_files
from fsqdeploy.config import tile_halos
from fsqdeploy.data import HELDOUT_PHOTOS, sample_photos
from fsqdeploy.export.check import check_artifact
from fsqdeploy.export.onnx_export import export_graphs
from fsqdeploy.export.parity import CROP_CELLS, run_parity, spatial_image_sets
from fsqdeploy.images import pad_to_multiple
from fsqdeploy.onnxgraph.graph import find_quantizer_stages
from fsqdeploy.runtime.codec import Codec

SIZES = [(8, 8), (40, 96), (96, 40), (200, 120), (64, 64)]


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_graphs_are_dynamic_in_height_and_width(conv_exported) -> None:
    enc = onnx.load(str(conv_exported.art / "encoder.onnx"))
    dec = onnx.load(str(conv_exported.art / "decoder.onnx"))
    width = conv_exported.model.code_width
    assert dims(enc.graph.input[0]) == ["batch", 3, HEIGHT, WIDTH]
    assert dims(enc.graph.output[0]) == ["batch", width, GRID_HEIGHT, GRID_WIDTH]
    assert dims(dec.graph.input[0]) == ["batch", width, GRID_HEIGHT, GRID_WIDTH]
    assert dims(dec.graph.output[0]) == ["batch", 3, HEIGHT, WIDTH]
    meta = {p.key: p.value for p in enc.metadata_props}
    assert meta["arch"] == "conv" and meta["downsample"] == "8"
    assert len(find_quantizer_stages(enc)) == 2  # the residual chain survives in grid form


def test_manifest_records_the_grid_and_the_tiling(conv_exported) -> None:
    m = Manifest.load(conv_exported.art)
    assert m.spatial and m.arch == "conv" and m.downsample == 8
    enc, dec = tile_halos(conv_exported.model.config)
    assert m.section("tiling") == {"encoder_halo": enc, "decoder_halo": dec}
    assert m.io["encoder"]["inputs"][0]["shape"] == ["batch", 3, HEIGHT, WIDTH]


def test_parity_ran_whole_photos_and_non_square_crops(conv_exported) -> None:
    p = Manifest.load(conv_exported.art).section("parity")
    photos = sample_photos().test
    wanted = [list(pad_to_multiple(ph, 8).shape[:2]) for ph in photos] + [[r * 8, c * 8] for r, c in CROP_CELLS]
    assert p["image_sizes"] == wanted
    assert any(h != w for h, w in p["image_sizes"])
    assert p["passed"] and p["index_agreement"] == 1.0 and p["adversarial_mismatches"] == 0
    assert p["images"] == len(HELDOUT_PHOTOS) + 7 * len(CROP_CELLS)
    assert p["adversarial_placements"] > 0


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_backends_equal_pytorch_at_every_size(conv_exported, backend) -> None:
    pytest.importorskip(backend)
    model = conv_exported.model
    with Codec.load(conv_exported.art, backend) as codec:
        for h, w in SIZES:
            x = np.random.default_rng(h * w).random((2, 3, h, w), dtype=np.float32)
            with torch.no_grad():
                ref = model.encode(torch.from_numpy(x)).numpy()
            got = codec.encode(x)
            assert got.shape == (2, model.code_width, h // 8, w // 8)
            assert np.array_equal(got, ref), (backend, h, w)
            decoded = codec.decode(ref.astype(np.int32))
            with torch.no_grad():
                want = model.decode(torch.from_numpy(ref)).numpy()
            assert np.abs(decoded - want).max() < 1e-5


def test_compressed_file_is_the_same_from_every_backend(conv_exported, tmp_path) -> None:
    from PIL import Image

    from fsqdeploy.runtime.compress import compress_file

    photo = sample_photos().test[2]  # chelsea, 300x451: neither side a multiple of 8
    src = tmp_path / "chelsea.png"
    Image.fromarray(photo).save(src)
    files = {}
    for backend in ("torch", "onnxruntime"):
        with Codec.load(conv_exported.art, backend) as codec:
            files[backend] = compress_file(codec, src, tmp_path / f"{backend}.fsq")
    assert (tmp_path / "torch.fsq").read_bytes() == (tmp_path / "onnxruntime.fsq").read_bytes()


def test_check_passes_and_catches_a_static_graph(conv_exported, tmp_path) -> None:
    report = check_artifact(conv_exported.art, data="sample", images=1)
    assert report.passed, [f for f in report.findings if f.status == "fail"]
    assert any(f.check == "encoder.fp16.onnx: quantizer FP32" and f.status == "pass" for f in report.findings)

    art = tmp_path / "art"
    shutil.copytree(conv_exported.art, art)
    enc = onnx.load(str(art / "encoder.onnx"))
    for d in enc.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_value = 64  # a graph fixed at 64x64 breaks the spatial contract
    onnx.save(enc, str(art / "encoder.onnx"))
    add_files(art, ["encoder.onnx"])
    report = check_artifact(art, fp16=False)
    failed = {f.check: f.detail for f in report.findings if f.status == "fail"}
    assert "encoder.onnx: I/O contract" in failed
    assert "must be dynamic on 'batch', 'height', 'width' only" in failed["encoder.onnx: I/O contract"]


def test_fp16_graphs_keep_the_grid(conv_exported) -> None:
    import onnxruntime as ort

    record = Manifest.load(conv_exported.art).section("fp16")
    assert record["images"] > 0 and record["onnxruntime_cpu"]["index_agreement"] > 0.9
    enc = ort.InferenceSession(str(conv_exported.art / "encoder.fp16.onnx"))
    out = enc.run(None, {"images": np.random.default_rng(0).random((1, 3, 40, 96), dtype=np.float32)})[0]
    assert out.dtype == np.int32 and out.shape == (1, conv_exported.model.code_width, 5, 12)


def test_gate_catches_a_threshold_one_ulp_off(conv_exported, tmp_path) -> None:
    """A threshold moved by one float32 ulp: images rarely notice, the boundary probes always do."""
    enc = onnx.load(str(conv_exported.art / "encoder.onnx"))
    stage = find_quantizer_stages(enc)[0]
    init = next(t for t in enc.graph.initializer if t.name == stage.thresholds)
    values = numpy_helper.to_array(init)
    assert values.ndim == 4 and values.shape[1:3] == (1, 1)  # [D, 1, 1, T]: broadcast over the grid
    moved = values.copy()
    moved[0, 0, 0, 0] = np.nextafter(moved[0, 0, 0, 0], np.float32(np.inf))
    init.CopyFrom(numpy_helper.from_array(moved, init.name))
    path = tmp_path / "encoder.onnx"
    onnx.save(enc, str(path))
    photos = sample_photos().test[:1]
    report = run_parity(conv_exported.model, path, conv_exported.art / "decoder.onnx",
                        spatial_image_sets(photos, 8), "sample")
    assert not report.passed and report.boundaries.mismatches > 0
    assert "boundary" in report.failure() and "sizes 400x600" in report.failure()


@pytest.mark.parametrize("linear_path", [False, True])
def test_single_stage_export_matches_in_memory(tmp_path, linear_path) -> None:
    """One stage, f = 4: no residual chain, a different grid factor; graphs straight from memory;
    with and without the linear path (its BatchNorm is folded into both paths)."""
    import onnxruntime as ort
    from conv_runs import make_conv_run

    model = make_conv_run(tmp_path, channels=(8, 8), stages=1, linear_path=linear_path)
    graphs = export_graphs(model, 18, inline=True, checkpoint_sha256="0" * 64)
    enc = ort.InferenceSession(graphs["encoder.onnx"].SerializeToString())
    dec = ort.InferenceSession(graphs["decoder.onnx"].SerializeToString())
    ops = {n.op_type for n in graphs["encoder.onnx"].graph.node}
    assert "BatchNormalization" not in ops
    for h, w in [(4, 4), (12, 20), (36, 8)]:
        x = np.random.default_rng(h).random((3, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = model.encode(torch.from_numpy(x))
            images = model.decode(ref).numpy()
        assert np.array_equal(enc.run(None, {"images": x})[0], ref.numpy())
        assert np.abs(dec.run(None, {"indices": ref.numpy().astype(np.int32)})[0] - images).max() < 1e-5


def test_calibration_reads_train_photos_only() -> None:
    from fsqdeploy.calibration.data import photo_patch_splits
    from fsqdeploy.images import uint8_patches

    splits = photo_patch_splits("sample", 32)
    held_out = np.concatenate([uint8_patches(p, 32)[0] for p in sample_photos().test])
    assert np.array_equal(splits.test, held_out)
    train = {bytes(t) for t in splits.train[:, :, :4, :4].reshape(len(splits.train), -1)}
    assert not {bytes(t) for t in held_out[:, :, :4, :4].reshape(len(held_out), -1)} & train


def test_export_of_a_conv_run_refuses_bad_parity_images(conv_run, tmp_path) -> None:
    from fsqdeploy.export.pipeline import export_artifact

    with pytest.raises(FSQDeployError, match="--parity-images must be at least 1"):
        export_artifact(conv_run, tmp_path / "a", opset=18, parity_images=0)
    assert not (tmp_path / "a").exists()


def test_calibrated_conv_graphs_stay_dynamic(conv_exported, tmp_path) -> None:
    import onnxruntime as ort

    from fsqdeploy.calibration.pipeline import calibrate_artifact

    art = tmp_path / "art"
    shutil.copytree(conv_exported.art, art)
    calibrate_artifact(art, samples=64, batch_size=32, eval_images=64)
    record = json.loads((art / "manifest.json").read_text())["int8"]
    assert record["data"] == "sample" and record["samples"] == 64
    enc = ort.InferenceSession(str(art / "encoder.int8.onnx"))
    out = enc.run(None, {"images": np.random.default_rng(1).random((1, 3, 48, 24), dtype=np.float32)})[0]
    assert out.shape == (1, conv_exported.model.code_width, 6, 3)
