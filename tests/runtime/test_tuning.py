"""CPU graph variants chosen by measurement (fsqdeploy.backends.tuning): every candidate is checked
against the exported graph, the record is keyed by machine, runtime, threads and model, a foreign or
corrupt record is never trusted, a cached machine is never measured again, and a loaded codec runs
what the record chose with PyTorch's indices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fsqdeploy.artifact import Manifest
from fsqdeploy.backends import tuning
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.runtime.codec import Codec


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FSQDEPLOY_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_tuned_choice_is_equal_fastest_and_used(art64, runtime):
    pytest.importorskip(runtime)
    manifest = Manifest.load(art64.art)
    record = tuning.tune_artifact(manifest, runtime, threads=1)
    assert not record["cached"]
    for chosen in record["choice"].values():
        rows = chosen["candidates"]
        assert rows[0]["rewrites"] == [] and all(r["equal"] for r in rows[:1])
        fastest = min((r for r in rows if r["equal"]), key=lambda r: r["ms"])
        assert (chosen["rewrites"], chosen["ms"]) == (fastest["rewrites"], fastest["ms"])
    assert len(record["choice"]["decoder"]["candidates"]) >= 2  # its transposed convolutions have phase forms
    x = images_to_float(load_images("sample", 64).test[:256])
    with torch.no_grad():
        ref = art64.model.encode(torch.from_numpy(x)).numpy()
    with Codec.load(art64.art, runtime, threads=1) as codec:
        assert codec.encoder.tuned and codec.decoder.tuned
        assert codec.encoder.variant == ("+".join(record["choice"]["encoder"]["rewrites"]) or "none")
        assert np.array_equal(codec.encode(x), ref)  # batch 256: the tuned graph
        assert np.array_equal(codec.encode(x[:3]), ref[:3])  # small batches: the default graph


def test_a_cached_machine_is_never_measured_again(art32, monkeypatch):
    manifest = Manifest.load(art32.art)
    tuning.tune_artifact(manifest, "onnxruntime", threads=1)

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again")

    monkeypatch.setattr(tuning, "tune_graph", no_timing)
    assert tuning.tune_artifact(manifest, "onnxruntime", threads=1)["cached"]
    with pytest.raises(AssertionError, match="timed again"):  # another thread count is another key
        tuning.tune_artifact(manifest, "onnxruntime", threads=2)


@pytest.mark.parametrize("field, value", [
    (("cpu", "model"), "Another CPU"), (("cpu", "flags_sha256"), "0" * 64), (("runtime_version",), "0.0.1"),
    (("model_id",), "f" * 64), (("graphs", "encoder"), "e" * 64),
])
def test_a_record_from_another_machine_library_or_model_is_ignored(art32, field, value):
    manifest = Manifest.load(art32.art)
    tuning.tune_artifact(manifest, "onnxruntime", threads=1)
    path = next((tuning.cache_dir() / "tuning").glob("*.json"))
    record = json.loads(path.read_text())
    target = record["key"]
    for name in field[:-1]:
        target = target[name]
    target[field[-1]] = value
    path.write_text(json.dumps(record))
    assert tuning.cached_choice(manifest, "onnxruntime", 1) is None
    with Codec.load(art32.art, "onnxruntime", threads=1) as codec:
        assert not codec.encoder.tuned and codec.encoder.variant == "matmul+phase-ort"  # the defaults


@pytest.mark.parametrize("damage", ["{not json", json.dumps({"format": "fsqdeploy-cpu-tuning"}), ""])
def test_a_corrupt_record_is_rebuilt(art32, damage):
    manifest = Manifest.load(art32.art)
    first = tuning.tune_artifact(manifest, "onnxruntime", threads=1)
    path = next((tuning.cache_dir() / "tuning").glob("*.json"))
    path.write_text(damage)
    assert tuning.cached_choice(manifest, "onnxruntime", 1) is None
    again = tuning.tune_artifact(manifest, "onnxruntime", threads=1)
    assert not again["cached"] and again["key"] == first["key"]
    assert json.loads(path.read_text())["key"] == first["key"]


def test_a_spatial_model_tunes_threads_and_skips_identical_graphs(conv_exported):
    record = tuning.tune_artifact(Manifest.load(conv_exported.art), "onnxruntime")
    rows = record["choice"]["encoder"]["candidates"]
    # No rewrite applies to dynamic-size convolutions: one graph, timed at each thread count.
    assert {tuple(r["rewrites"]) for r in rows} == {()}
    assert sorted(r["threads"] for r in rows) == sorted(tuning.thread_options(None))
    with Codec.load(conv_exported.art, "onnxruntime") as codec:
        assert codec.encoder.tuned and codec.encoder.threads == record["choice"]["encoder"]["threads"]


def test_codec_load_with_tune_makes_the_record(art32):
    with Codec.load(art32.art, "onnxruntime", threads=1, tune=True) as codec:
        assert codec.encoder.tuned
    assert tuning.cached_choice(Manifest.load(art32.art), "onnxruntime", 1) is not None


def test_tune_command(cli, one_line_error, art32):
    code, out, err = cli("tune", art32.art, "--backends", "onnxruntime", "--threads", "1")
    assert code == 0, err
    assert "onnxruntime encoder:" in out and "measured in" in out and "onnxruntime decoder:" in out
    code, out, _ = cli("tune", art32.art, "--backends", "onnxruntime", "--threads", "1")
    assert "cached record" in out
    code, _, err = cli("tune", art32.art, "--backends", "tensorrt")
    one_line_error(code, err, "'tensorrt' is not a CPU runtime with graph variants")
    code, _, err = cli("tune", art32.art, "--threads", "0")
    one_line_error(code, err, "--threads must be at least 1")


def _large(runner):
    """The runner a batch of 256 reaches (a patch encoder is a BatchSizeSwitch)."""
    return getattr(runner, "large", runner)


def test_openvino_hints_are_timed_equal_recorded_and_applied(art32):
    pytest.importorskip("openvino")
    manifest = Manifest.load(art32.art)
    record = tuning.tune_artifact(manifest, "openvino", threads=2)
    x = images_to_float(load_images("sample", 32).test[:256])
    with torch.no_grad():
        ref = art32.model.encode(torch.from_numpy(x)).numpy()
    for chosen in record["choice"].values():
        rows = chosen["candidates"]
        assert rows[0]["hint"] == "LATENCY"  # the untuned baseline: what runs without a record
        # every rewrite is timed under each hint, and a throughput run computes the same thing
        for rewrites in {tuple(r["rewrites"]) for r in rows}:
            assert sorted(r["hint"] for r in rows if tuple(r["rewrites"]) == rewrites) == ["LATENCY", "THROUGHPUT"]
        assert all(r["equal"] for r in rows if r["hint"] == "THROUGHPUT" and not r["rewrites"])
        fastest = min((r for r in rows if r["equal"]), key=lambda r: r["ms"])
        assert (chosen["hint"], chosen["ms"]) == (fastest["hint"], fastest["ms"])
    with Codec.load(art32.art, "openvino", threads=2) as codec:
        for graph, runner in (("encoder", codec.encoder), ("decoder", codec.decoder)):
            assert _large(runner).applied["PERFORMANCE_HINT"] == record["choice"][graph]["hint"]
        assert np.array_equal(codec.encode(x), ref)


def test_openvino_applies_a_recorded_hint_and_ignores_a_foreign_one(art32):
    pytest.importorskip("openvino")
    manifest = Manifest.load(art32.art)
    tuning.tune_artifact(manifest, "openvino", threads=2)
    path = next((tuning.cache_dir() / "tuning").glob("*.json"))
    record = json.loads(path.read_text())
    for chosen in record["choice"].values():
        chosen["hint"] = "THROUGHPUT"  # whatever won here: the record, not the default, decides
    path.write_text(json.dumps(record))
    with Codec.load(art32.art, "openvino", threads=2) as codec:
        assert _large(codec.encoder).applied["PERFORMANCE_HINT"] == "THROUGHPUT"
        assert codec.decoder.applied["PERFORMANCE_HINT"] == "THROUGHPUT" and codec.decoder.tuned
    for damage in ({"hint": "TURBO"}, {"key_cpu": "Another CPU"}):
        broken = json.loads(json.dumps(record))
        if "hint" in damage:
            broken["choice"]["decoder"]["hint"] = damage["hint"]
        else:
            broken["key"]["cpu"]["model"] = damage["key_cpu"]
        path.write_text(json.dumps(broken))
        assert tuning.cached_choice(manifest, "openvino", 2) is None
        with Codec.load(art32.art, "openvino", threads=2) as codec:
            assert not codec.decoder.tuned and codec.decoder.applied["PERFORMANCE_HINT"] == "LATENCY"
