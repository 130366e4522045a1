"""The parity gate: ONNX Runtime against PyTorch on random and real images, at and around every
decision threshold, and a gate that fails leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from fsqdeploy.artifact import ENCODER_FILE
from fsqdeploy.data import load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export import pipeline
from fsqdeploy.export.parity import (
    IMAGE_TOLERANCE,
    boundary_rows,
    compare_boundaries,
    compare_images,
    ort_session,
    residual_boundary_latents,
    stage_inputs,
    threshold_distance,
)
from fsqdeploy.images import images_to_float

CPU = torch.device("cpu")


def sessions(exported):
    return ort_session(exported.art / "encoder.onnx"), ort_session(exported.art / "decoder.onnx")


def test_parity_on_random_images(exported):
    s = exported.model.config.image_size
    x = np.random.default_rng(0).random((40, 3, s, s), dtype=np.float32)
    result = compare_images(exported.model, *sessions(exported), x, batch_sizes=(1, 7, 256))
    assert result.index_values == (40 + 40 + 40) * exported.model.code_width
    assert result.flipped_indices == 0 and result.index_agreement == 1.0
    assert result.max_abs_error <= IMAGE_TOLERANCE


def test_parity_on_real_images(exported):
    manifest = json.loads((exported.art / "manifest.json").read_text())
    p = manifest["parity"]
    assert p["passed"] and p["index_agreement"] == 1.0 and p["adversarial_mismatches"] == 0
    assert p["max_abs_error"] <= IMAGE_TOLERANCE and p["batch_sizes"] == [1, 7, 256]
    s = exported.model.config.image_size
    test = images_to_float(load_images("sample", s).test)
    assert p["images"] == min(256, len(test)) and p["data"] == "sample"
    result = compare_images(exported.model, *sessions(exported), test, batch_sizes=(256,))
    assert result.flipped_indices == 0 and result.max_abs_error <= IMAGE_TOLERANCE
    # Real images decode to something image-like (not NaN, inside [0, 1]).
    _, dec = sessions(exported)
    out = dec.run(None, {"indices": exported.model.encode(torch.from_numpy(test[:8])).numpy().astype(np.int32)})[0]
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0


def test_boundary_rows_sit_exactly_on_the_thresholds(art64):
    """The adversarial latents are real boundaries: one ulp below a threshold gives one index less."""
    for stage in art64.model.quantizer.stages:
        thresholds = stage.tables(CPU)[0].numpy()
        rows, placements = boundary_rows(thresholds)
        assert placements == 3 * sum(v - 1 for v in stage.level_list())
        idx = stage.indices_from_latent(torch.from_numpy(rows)).numpy().reshape(-1, 3, rows.shape[1])
        below, on, above = idx[:, 0], idx[:, 1], idx[:, 2]
        finite = np.isfinite(thresholds).T  # [T, D]
        assert (on - below)[finite].min() == 1 and (on == above)[finite].all()


def test_adversarial_boundaries_agree_exactly(exported):
    enc = onnx.load(str(exported.art / ENCODER_FILE))
    result = compare_boundaries(exported.model, enc)
    q = exported.model.quantizer
    assert result.mismatches == 0
    assert result.placements == sum(3 * sum(v - 1 for v in s.level_list()) for s in q.stages)
    assert result.inputs >= 2 * 3 * 7 and result.random == 256


def test_residual_boundary_latents_reach_the_second_stage_boundaries(art64):
    q = art64.model.quantizer
    z = residual_boundary_latents(q)
    u1 = stage_inputs(q, torch.from_numpy(z))[1].numpy()
    dist = threshold_distance(u1, q.stages[1].tables(CPU)[0].numpy())
    assert (dist == 0).mean() > 0.2 and np.median(dist) < 1e-7


def test_a_quantizer_off_by_the_tie_is_caught(art64):
    """Greater instead of GreaterOrEqual differs only exactly on a threshold: the gate must see it."""
    enc = onnx.load(str(art64.art / ENCODER_FILE))
    for node in enc.functions[0].node:
        if node.op_type == "GreaterOrEqual":
            node.op_type = "Greater"
    result = compare_boundaries(art64.model, enc)
    on_threshold = sum(sum(v - 1 for v in s.level_list()) for s in art64.model.quantizer.stages)
    assert result.mismatches >= on_threshold


def test_failed_gate_raises_and_writes_nothing(run64, tmp_path, monkeypatch):
    """Thresholds nudged by 1e-3 flip indices: the export fails with a report and leaves no files."""
    real = pipeline.export_graphs

    def nudged(*args, **kwargs):
        graphs = real(*args, **kwargs)
        for t in graphs[ENCODER_FILE].graph.initializer:
            if t.name.startswith("fsq_thresholds_"):
                t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) + np.float32(1e-3), t.name))
        return graphs

    monkeypatch.setattr(pipeline, "export_graphs", nudged)
    out = tmp_path / "parent" / "art"
    with pytest.raises(FSQDeployError, match=r"parity: .* indices in \d+ image\(s\) differ") as e:
        pipeline.export_artifact(run64, out, opset=18, parity_images=32)
    assert "nothing was written" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() and list((tmp_path / "parent").iterdir()) == []
