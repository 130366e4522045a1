"""TensorRT's version rules and the timing cache, as fsqdeploy applies them (docs/tensorrt.md).

Pure Python where the rule is ours (version-compatible engines, the lint tables); elsewhere the
strict stand-in tensorrt (tests/trt_standin.py) at TensorRT 10 and 11. The stand-in proves
fsqdeploy's side of each call, not TensorRT's behaviour: none of this has run on TensorRT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from fsqdeploy.artifact import DECODER_FILE, ENCODER_FILE, Manifest, verify_files
from fsqdeploy.backends.tensorrt import check_sidecar, version_compatible_runs, version_compatible_runtimes
from fsqdeploy.backends.tensorrt_env import tensorrt_major, version_tuple
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export import trt_ops
from fsqdeploy.export.check import check_artifact, trt_problems
from fsqdeploy.export.tensorrt.build import build_engines
from fsqdeploy.export.tensorrt.network import create_network, parser_graph
from fsqdeploy.export.tensorrt.options import BuildOptions

OPTIONS = BuildOptions(max_batch=8, opt_batch=8)

# -- strongly typed, by TensorRT's major version ------------------------------------------------------


@pytest.mark.parametrize("version", ["10.0.1.6", "10.13.0.35", "10.16.1.11"])
def test_tensorrt_10_sets_the_strongly_typed_flag_and_checks_it(fake_trt, version):
    trt = fake_trt(version=version).module
    network = create_network(trt.Builder(trt.Logger()))
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert network._flags == 1 << int(flag) and network.get_flag(flag)


def test_tensorrt_10_that_does_not_report_strong_typing_is_one_line(fake_trt, monkeypatch):
    s = fake_trt()
    monkeypatch.setattr(s.classes["INetworkDefinition"], "get_flag", lambda self, flag: False)
    with pytest.raises(FSQDeployError, match=r"^tensorrt: TensorRT 10\.13\.0\.35 did not make the network strongly "
                                             r"typed, .*Note: reinstall TensorRT"):
        create_network(s.module.Builder(s.module.Logger()))


@pytest.mark.parametrize("flag_answer", [False, True])
def test_tensorrt_11_is_strongly_typed_without_the_deprecated_flag(fake_trt, flag_answer):
    """kSTRONGLY_TYPED is ignored in 11 (NvInfer.h); whatever get_flag answers, the version decides."""
    trt = fake_trt(version="11.1.0.5", strongly_typed_flag=flag_answer).module
    network = create_network(trt.Builder(trt.Logger()))
    assert network._flags == 0


@pytest.mark.parametrize("version", ["9.3.0.1", "8.6.1.6", "unknown"])
def test_tensorrt_before_10_does_not_build(fake_trt, version):
    trt = fake_trt(version=version).module
    with pytest.raises(FSQDeployError, match=rf"^tensorrt: TensorRT {version} cannot build fsqdeploy's strongly "
                                             r"typed engines\. Note: install TensorRT 10\.0 or newer"):
        create_network(trt.Builder(trt.Logger()))


def test_tensorrt_major():
    class Module:
        __version__ = "11.4.0.106"

    assert tensorrt_major(Module) == 11 and tensorrt_major(object()) == 0


def test_engines_build_on_tensorrt_11(art_copy, fake_trt):
    """The whole build on the TensorRT 11 stand-in, whose get_flag(STRONGLY_TYPED) answers False
    (what broke the build before), with its enum values (VERSION_COMPATIBLE is 12) and inspector JSON."""
    s = fake_trt(version="11.1.0.5")
    options = BuildOptions(max_batch=8, opt_batch=8, version_compatible=True)
    summary = build_engines(art_copy, ["fp32"], options)
    for graph in ("encoder", "decoder"):
        sidecar = check_sidecar(art_copy / f"{graph}.fp32.plan", s.facts, precision="fp32")
        assert sidecar["tensorrt_version"] == "11.1.0.5" and sidecar["strongly_typed"] and sidecar["version_compatible"]
        assert sidecar["quantizer"]["engine"]["passed"] and sidecar["quantizer"]["network_layers"] >= 4
    assert [c._set for c in s.configs] == [{12}, {12}] and all(c._cleared == {6} for c in s.configs)
    assert summary["fp32"]["timing_cache"] == "new"


@pytest.mark.parametrize("version", ["10.13.0.35", "11.1.0.5"])
def test_the_engine_check_cannot_see_inside_a_fused_layer(art_copy, fake_trt, version):
    """What docs/tensorrt.md says of check 4: a Myelin {ForeignNode[...]} that fuses the latent's
    producer with the quantizer lists only its boundary tensors, so an FP16 latent inside it passes
    the inspector's check. The guarantee is strong typing, checked on the network before the build."""
    fake_trt(version=version, inspector="foreign", fp16_latent=True)
    summary = build_engines(art_copy, ["fp32"], OPTIONS)
    assert summary["fp32"]["engines"]["encoder"]["quantizer"]["engine"]["passed"]  # not seen
    layers = json.loads((art_copy / "encoder.fp32.plan.layers.json").read_text())["Layers"]
    fused = [layer for layer in layers if layer["Name"].startswith("{ForeignNode[")]
    assert len(fused) == 1 and "fsq_quantizer/" in fused[0]["Metadata"]
    assert "latent" not in {t["Name"] for layer in layers for t in [*layer["Inputs"], *layer["Outputs"]]}
    fake_trt(version=version, inspector="foreign", fp16_quantizer_layer=True)
    with pytest.raises(FSQDeployError, match="the quantizer must run in FP32"):
        build_engines(art_copy, ["fp32"], OPTIONS)


# -- version-compatible engines ----------------------------------------------------------------------


@pytest.mark.parametrize("built, here, runs", [
    ("10.3.0.26", "10.3.0.26", True),
    ("10.3.0.26", "10.8.0.43", True),  # a later runtime of the same major
    ("10.8.0.43", "10.8.0.42", False),  # an older build of the same release
    ("10.9.0.1", "10.8.0.43", False),  # an older runtime: never
    ("11.0.0.1", "11.1.0.5", True),  # "compatible with TensorRT 11.1 and later 11.x versions"
    ("10.3.0.26", "11.0.0.1", True),  # "engines built with TensorRT 10 work with TensorRT 11"
    ("10.16.1.11", "11.4.0.106", True),
    ("11.1.0.5", "10.16.1.11", False),  # "do not work with older runtimes"
    ("8.6.1.6", "9.3.0.1", True),  # "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10"
    ("8.6.1.6", "10.0.1.6", True),
    ("8.6.1.6", "11.1.0.5", False),  # "a TensorRT 8 engine cannot run with a TensorRT 11 runtime"
    ("9.3.0.1", "10.0.1.6", False),  # no other crossing is documented
    ("11.5.0.1", "12.0.0.1", False),
    ("8.5.3.1", "8.6.1.6", False),  # "the plan must be built with a version at least 8.6"
    ("8.6.1.6", "8.6.1.6", True),
    ("", "10.8.0.43", False),
    ("10.8.0.43", "", False),
])
def test_version_compatible_runs_as_tensorrt_documents(built, here, runs):
    assert version_compatible_runs(version_tuple(built), version_tuple(here)) is runs


@pytest.mark.parametrize("built, words", [
    ("10.9.0.1", "TensorRT 10.x from 10.9.0.1 on or TensorRT 11.x"),
    ("11.1.0.5", "TensorRT 11.x from 11.1.0.5 on"),
    ("8.6.1.6", "TensorRT 8.x from 8.6.1.6 on, TensorRT 9.x or TensorRT 10.x"),
    ("8.5.3.1", "no TensorRT (version compatibility starts with TensorRT 8.6)"),
    ("x", "TensorRT ?.x from x on"),
])
def test_where_a_version_compatible_engine_runs_in_words(built, words):
    assert version_compatible_runtimes(built) == words


def _engine(tmp_path: Path, **sidecar) -> Path:
    from fsqdeploy.fileio import sha256_file

    engine = tmp_path / "encoder.fp32.plan"
    engine.write_bytes(b"serialized engine")
    record = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA L4", "compute_capability": "8.9",
              "precision": "fp32", "profile": {"min": 1, "opt": 8, "max": 8}, "engine_sha256": sha256_file(engine),
              "version_compatible": False, "hardware_compatible": False, **sidecar}
    engine.with_name(engine.name + ".json").write_text(json.dumps(record))
    return engine


def test_a_tensorrt_10_engine_on_tensorrt_11(tmp_path):
    here = {"tensorrt_version": "11.1.0.5", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    assert check_sidecar(_engine(tmp_path, version_compatible=True), here)
    with pytest.raises(FSQDeployError, match=r"was built with TensorRT 10\.13\.0\.35, this is TensorRT 11\.1\.0\.5 "
                                             r"\(or build it with --version-compatible\)\. Note: rebuild it"):
        check_sidecar(_engine(tmp_path), here)


def test_the_runtime_loads_a_tensorrt_10_plan_on_tensorrt_11(fake_trt):
    """What check_sidecar lets through, the stand-in's runtime loads, with host code allowed."""
    s10 = fake_trt()
    plan = s10.plan({"images": ("FLOAT", [-1, 4])}, {"indices": ("INT32", [-1, 4])}, (1, 2, 4), version_compatible=True)
    s11 = fake_trt(version="11.1.0.5")
    runtime = s11.module.Runtime(s11.module.Logger())
    runtime.engine_host_code_allowed = True
    assert version_compatible_runs(version_tuple(s10.version), version_tuple(s11.version))
    assert runtime.deserialize_cuda_engine(plan) is not None


# -- the timing cache ----------------------------------------------------------------------------------


def _files(art: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()}


@pytest.mark.parametrize("mode, blob, message", [
    ("ok", b"not a timing cache", r"is not a timing cache TensorRT 10\.13\.0\.35 can read \(Error Code 1: "
                                  r"Serialization"),
    ("corrupt", b"++", r"is not a timing cache TensorRT 10\.13\.0\.35 can read"),
    ("mismatch", b"++", r"was made on another GPU or TensorRT version, and TensorRT 10\.13\.0\.35 refuses it here"),
])
def test_a_shared_timing_cache_tensorrt_refuses_is_one_line_and_kept(art_copy, fake_trt, tmp_path, mode, blob,
                                                                     message):
    shared = tmp_path / "shared.cache"
    shared.write_bytes(blob)
    before = _files(art_copy)
    s = fake_trt(cache=mode)
    with pytest.raises(FSQDeployError) as e:
        build_engines(art_copy, ["fp32"], BuildOptions(max_batch=8, opt_batch=8, timing_cache=shared))
    text = str(e.value)
    assert text.startswith(f"tensorrt: --timing-cache '{shared}' ") and "\n" not in text
    assert re.search(message, text), text
    assert text.endswith("Note: nothing was written; give each GPU and TensorRT version its own --timing-cache file, "
                         "or delete this one")
    assert shared.read_bytes() == blob and _files(art_copy) == before  # the shared file is never overwritten
    assert all(c._cache is None or c._cache_ignore_mismatch is False for c in s.configs)  # never mixed in


def test_a_shared_timing_cache_tensorrt_accepts_grows(art_copy, fake_trt, tmp_path):
    shared = tmp_path / "shared.cache"
    shared.write_bytes(b"++")  # a cache of this device ("ok": the stand-in accepts its own blobs)
    s = fake_trt()
    summary = build_engines(art_copy, ["fp32"], BuildOptions(max_batch=8, opt_batch=8, timing_cache=shared))
    assert shared.read_bytes() == b"++++" and summary["fp32"]["timing_cache"] == "reused"
    assert [c._cache_ignore_mismatch for c in s.configs] == [False, False]
    assert "timing.cache" not in Manifest.load(art_copy).files  # the user's cache stays outside ART


def test_a_new_shared_timing_cache_is_created(art_copy, fake_trt, tmp_path):
    shared = tmp_path / "new.cache"
    fake_trt()
    summary = build_engines(art_copy, ["fp32"], BuildOptions(max_batch=8, opt_batch=8, timing_cache=shared))
    assert shared.read_bytes() == b"++" and summary["fp32"]["timing_cache"] == "new"


# In the stand-in's "mismatch" and "corrupt" modes every non-empty blob is refused, the one the
# first engine's build just made included, so each engine starts a fresh cache (one measurement
# left); a blob that is not the stand-in's is refused in "ok" mode too, and then its own is accepted.
@pytest.mark.parametrize("mode, blob, left", [("mismatch", b"+++", b"+"), ("corrupt", b"+++", b"+"),
                                              ("ok", b"junk", b"++")])
def test_the_artifacts_own_foreign_cache_is_replaced(art_copy, fake_trt, mode, blob, left):
    """ART/timing.cache belongs to the engines being rebuilt for this machine: a fresh cache takes
    its place (the manifest says so), and the build goes on."""
    (art_copy / "timing.cache").write_bytes(blob)
    s = fake_trt(cache=mode)
    summary = build_engines(art_copy, ["fp32"], OPTIONS)
    assert (art_copy / "timing.cache").read_bytes() == left  # fresh, plus the measurements made since
    assert summary["fp32"]["timing_cache"] == "replaced"
    assert [c._cache_ignore_mismatch for c in s.configs] == [False, False]
    manifest = json.loads((art_copy / "manifest.json").read_text())
    assert verify_files(manifest, art_copy) == [] and manifest["tensorrt"]["fp32"]["timing_cache"] == "replaced"


def test_a_carried_over_foreign_cache_seeds_nothing_but_a_new_shared_file_is_written(art_copy, fake_trt, tmp_path):
    """--force carries the old ART's cache over (previous_cache); when TensorRT refuses it and the
    user's --timing-cache does not exist yet, the fresh cache goes to the user's file (nothing of
    theirs is overwritten) and the old one is left alone."""
    old = tmp_path / "old.cache"
    old.write_bytes(b"from another TensorRT")
    shared = tmp_path / "new.cache"
    fake_trt()
    summary = build_engines(art_copy, ["fp32"], BuildOptions(max_batch=8, opt_batch=8, timing_cache=shared),
                            previous_cache=old)
    assert summary["fp32"]["timing_cache"] == "replaced"
    assert shared.read_bytes() == b"++" and old.read_bytes() == b"from another TensorRT"


# -- fsqdeploy check --trt-version 11 ---------------------------------------------------------------------


def test_check_lints_for_tensorrt_11(cli, art64):
    code, out, err = cli("check", art64.art, "--trt-version", "11", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and report["trt_version"] == 11
    rows = {c["check"]: c for c in report["checks"]}
    for name in (ENCODER_FILE, DECODER_FILE):
        assert rows[f"{name}: TensorRT 11"]["status"] == "pass"


def _model(op: str, opset: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_the_tensorrt_11_table():
    assert trt_ops.supported_versions() == [8, 10, 11]
    assert trt_ops.SUPPORTED_OPS[10] < trt_ops.SUPPORTED_OPS[11]  # 11.0 removed no ONNX operator
    added = trt_ops.SUPPORTED_OPS[11] - trt_ops.SUPPORTED_OPS[10]
    assert {"Swish", "Attention", "RMSNormalization", "DeformConv"} <= added
    assert "DFT" not in trt_ops.SUPPORTED_OPS[11]  # 11.2 and later only
    assert trt_problems(_model("Relu", 24), 11) == []
    assert trt_problems(_model("Swish", 24), 10) == ["ops not supported by TensorRT 10: Swish",
                                                     "opset 24 is outside TensorRT 10's range 9..20"]
    assert trt_problems(_model("Relu", 25), 11) == ["opset 25 is outside TensorRT 11's range 9..24"]


def test_unknown_trt_version_names_the_known_ones(cli, one_line_error, art64):
    one_line_error(*cli("check", art64.art, "--trt-version", "12")[::2],
                   "check: TensorRT 12 is not known. Note: use one of 8, 10, 11")
    with pytest.raises(FSQDeployError, match="TensorRT 9 is not known"):
        check_artifact(art64.art, trt_version=9)


# -- the ONNX Runtime TensorRT provider reads what the native parser reads -----------------------------


def test_the_tensorrt_provider_reads_the_native_parsers_graph(art64):
    """tests/test_backends.py checks what reaches the provider (inlined bytes, options); this checks
    that it is the graph the native route's parser reads, node for node (only the quantizer's node
    names differ: the native route prefixes them to find them in TensorRT's layer information)."""
    from fsqdeploy.backends.onnxruntime import ONNXRUNTIME_TRT

    assert ONNXRUNTIME_TRT.inline_graphs
    encoder, decoder = ONNXRUNTIME_TRT.open(Manifest.load(art64.art), "fp32")
    for runner, name in ((encoder, ENCODER_FILE), (decoder, DECODER_FILE)):
        assert callable(runner.model)
        provider = onnx.load_model_from_string(runner.model())
        native = parser_graph(onnx.load(str(art64.art / name))).model
        assert not provider.functions and not native.functions
        assert [(n.op_type, list(n.input), list(n.output)) for n in provider.graph.node] == \
               [(n.op_type, list(n.input), list(n.output)) for n in native.graph.node]
