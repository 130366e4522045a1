"""ART/manifest.json: its fields, reading it with clear errors, verifying and adding files."""

from __future__ import annotations

import json

import pytest

from fsqdeploy.artifact import Manifest, add_files, read_manifest, verify_files
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import sha256_file


def test_manifest_fields(exported):
    m, model = read_manifest(exported.art), exported.model
    assert m["format"] == "fsqdeploy-artifact" and m["format_version"] == 1
    assert m["model_id"] == m["checkpoint"]["sha256"] == sha256_file(exported.run / "model.safetensors")
    assert m["levels"] == model.levels and m["code_width"] == len(model.levels)
    assert m["latent_dim"] == model.config.latent_dim and m["image_size"] == model.config.image_size
    assert m["stages"] == model.config.stages and m["temperature"] == pytest.approx(0.1)
    assert m["opset"] == 18 and m["inline"] is False
    assert m["custom_domain"] == {"name": "fsqdeploy", "version": 1, "ops": ["FSQQuantize", "FSQDequantize"]}
    assert set(m["producer"]) >= {"fsqdeploy", "torch", "onnx", "onnxruntime"}
    s, w = model.config.image_size, model.code_width
    assert m["io"]["encoder"] == {
        "inputs": [{"name": "images", "dtype": "float32", "shape": ["batch", 3, s, s]}],
        "outputs": [{"name": "indices", "dtype": "int32", "shape": ["batch", w]}],
    }
    assert m["io"]["decoder"]["inputs"] == m["io"]["encoder"]["outputs"]
    assert sorted(m["files"]) == [
        "checkpoint/config.json", "checkpoint/model.safetensors", "decoder.onnx", "encoder.onnx"
    ]
    for name, entry in m["files"].items():
        path = exported.art / name
        assert entry == {"sha256": sha256_file(path), "size": path.stat().st_size}
    assert set(m["parity"]) >= {"data", "images", "batch_sizes", "index_agreement", "max_abs_error",
                                "adversarial_cases", "passed"}
    assert sorted(p.name for p in exported.art.iterdir()) == [
        "checkpoint", "decoder.onnx", "encoder.onnx", "manifest.json"
    ]
    # the PyTorch reference travels with the graphs, byte for byte
    for name in ("config.json", "model.safetensors"):
        assert (exported.art / "checkpoint" / name).read_bytes() == (exported.run / name).read_bytes()


def test_verify_files_finds_tampering_and_missing_files(art_copy):
    m = read_manifest(art_copy)
    assert verify_files(m, art_copy) == []
    data = bytearray((art_copy / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (art_copy / "encoder.onnx").write_bytes(bytes(data))
    (art_copy / "decoder.onnx").unlink()
    assert verify_files(m, art_copy) == ["encoder.onnx: sha256 differs from the manifest", "decoder.onnx: missing"]


def test_add_files_keeps_the_model_id(art_copy):
    before = read_manifest(art_copy)
    (art_copy / "engines").mkdir()
    (art_copy / "engines" / "encoder.fp16.plan").write_bytes(b"engine bytes")
    after = add_files(art_copy, ["engines/encoder.fp16.plan"], {"fp16": {"parity": {"passed": True}}})
    assert after["model_id"] == before["model_id"]
    assert after["files"]["engines/encoder.fp16.plan"]["size"] == 12
    assert read_manifest(art_copy) == after and verify_files(after, art_copy) == []
    assert [p.name for p in art_copy.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.mark.parametrize("names, updates, match", [
    (["../outside"], None, "must be a file inside"),
    (["manifest.json"], None, "must be a file inside"),
    (["absent.onnx"], None, "does not exist"),
    ([], {"model_id": "x"}, "cannot be changed"),
])
def test_add_files_refuses(art_copy, names, updates, match):
    before = (art_copy / "manifest.json").read_text()
    with pytest.raises(FSQDeployError, match=match):
        add_files(art_copy, names, updates)
    assert (art_copy / "manifest.json").read_text() == before


@pytest.mark.parametrize("damage, match", [
    (lambda art: (art / "manifest.json").unlink(), "manifest.json' is missing"),
    (lambda art: (art / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda art: (art / "manifest.json").write_text(json.dumps({"format": "other"})), "not an fsqdeploy artifact"),
    (lambda art: (art / "manifest.json").write_text(json.dumps({"format": "fsqdeploy-artifact",
                                                                 "format_version": 1})), "lacks"),
])
def test_read_manifest_errors(art_copy, damage, match):
    damage(art_copy)
    with pytest.raises(FSQDeployError, match=match):
        read_manifest(art_copy)


def test_read_manifest_missing_directory(tmp_path):
    with pytest.raises(FSQDeployError, match="does not exist"):
        read_manifest(tmp_path / "nope")


def test_an_unknown_architecture_is_refused(art_copy):
    """As the C++ reader refuses it: a manifest from a newer fsqdeploy is never read as a paper model."""
    path = art_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["arch"] = "transformer"
    path.write_text(json.dumps(manifest))
    with pytest.raises(FSQDeployError, match="names architecture 'transformer', which this fsqdeploy does not know"):
        Manifest.load(art_copy)
