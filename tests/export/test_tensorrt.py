"""TensorRT: what can be proven without a GPU runs everywhere (availability detection, one-line
errors that write nothing, the sidecar refusal, the graph the parser reads, the reading of
TensorRT's layer information); what needs a GPU is marked ``gpu`` and skips with the reason.

On a machine with an NVIDIA GPU, TensorRT and a CUDA build of torch: ``pytest -m gpu -v``
(docs/tensorrt.md says what to expect).
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from trt_standin import FAKE_FACTS

from fsqdeploy.artifact import DECODER_FILE, ENCODER_FILE, sidecar_path
from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.backends.tensorrt import TensorRTRunner, check_sidecar, engine_paths
from fsqdeploy.backends.tensorrt_env import tensorrt_unavailable_reason
from fsqdeploy.data import load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.fp16 import convert_to_fp16
from fsqdeploy.export.tensorrt.inspect import REDUCED_PRECISIONS, inspect_quantizer, tensor_precision
from fsqdeploy.export.tensorrt.network import QUANTIZER_PREFIX, parser_graph
from fsqdeploy.export.tensorrt.options import BuildOptions
from fsqdeploy.images import images_to_float

# -- without TensorRT: `export --trt` says what to install, exits 2 and writes nothing -------------


def _no_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


def _stubs_only(monkeypatch):
    # What `pip install --no-deps tensorrt-stubs` leaves: an importable, empty namespace package.
    stub = types.ModuleType("tensorrt")
    stub.__path__ = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", stub)


def _fake_trt_without_gpu(monkeypatch):
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.13.0.35"  # type: ignore[attr-defined]
    fake.Builder = fake.Runtime = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.version, "cuda", "12.4")  # a CUDA build of torch ...
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ... on a machine without a GPU


def _fake_trt_cpu_torch(monkeypatch):
    _fake_trt_without_gpu(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)


WITHOUT_TENSORRT = [
    (_no_module, 'tensorrt: TensorRT is not installed. Note: pip install "fsqdeploy[trt]"'),
    (_stubs_only, 'TensorRT is not installed (the \'tensorrt\' package has no TensorRT API'),
    (_fake_trt_without_gpu, "tensorrt: TensorRT is installed but no CUDA GPU is visible to PyTorch"),
    (_fake_trt_cpu_torch, "TensorRT is installed but this PyTorch is a CPU-only build"),
]


@pytest.mark.parametrize("simulate, message", WITHOUT_TENSORRT, ids=["missing", "stubs", "no-gpu", "cpu-torch"])
def test_export_trt_without_tensorrt_is_one_line_and_writes_nothing(cli, one_line_error, run32, tmp_path,
                                                                    monkeypatch, simulate, message):
    simulate(monkeypatch)
    out = tmp_path / "art"
    code, stdout, err = cli("export", run32, "--out", out, "--trt", "--precision", "fp16")
    one_line_error(code, err, message)
    assert stdout == "" and list(tmp_path.iterdir()) == []
    assert 'pip install "fsqdeploy[trt]"' in err or "GPU" in err


@pytest.mark.parametrize("simulate, message", WITHOUT_TENSORRT, ids=["missing", "stubs", "no-gpu", "cpu-torch"])
def test_unavailable_reason_and_runner(monkeypatch, tmp_path, simulate, message):
    from fsqdeploy.backends import get_backend

    simulate(monkeypatch)
    reason = tensorrt_unavailable_reason()
    assert reason and message.removeprefix("tensorrt: ").split(". Note")[0] in reason
    assert get_backend("tensorrt").unavailable_reason() == reason
    with pytest.raises(FSQDeployError, match="tensorrt: TensorRT is (not installed|installed but)"):
        TensorRTRunner(tmp_path / "encoder.fp16.plan").activate()


def test_this_machine_has_no_usable_tensorrt():
    """Here (no GPU, at most tensorrt-stubs) TensorRT must be reported unusable, never half-usable."""
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are usable here; the gpu tests cover this machine")
    assert "not installed" in reason or "GPU" in reason or "CPU-only" in reason


@pytest.mark.parametrize("args, message", [
    (["--max-batch", "64"], "--max-batch only applies to TensorRT engines. Note: add --trt"),
    (["--version-compatible"], "--version-compatible only applies to TensorRT engines"),
    # A value equal to the default is given all the same.
    (["--workspace", str(BuildOptions().workspace_mib)], "--workspace only applies to TensorRT engines"),
    (["--trt", "--min-batch", "8", "--max-batch", "4"], "1 <= --min-batch <= --opt-batch <= --max-batch"),
    (["--trt", "--opt-batch", "300"], "got 1, 300, 256"),
    (["--trt", "--optimization-level", "6"], "--optimization-level must be in 0..5"),
    (["--trt", "--workspace", "0"], "--workspace must be at least 1 MiB"),
    (["--trt", "--timing-cache", "/nonexistent/dir/t.cache"], "must be a file in an existing directory"),
])
def test_trt_option_errors_come_first(cli, one_line_error, run32, tmp_path, args, message):
    code, stdout, err = cli("export", run32, "--out", tmp_path / "art", *args)
    one_line_error(code, err, message)
    assert list(tmp_path.iterdir()) == []


def test_default_opt_batch_follows_the_range():
    from fsqdeploy.export.commands import export  # noqa: F401 - the CLI builds BuildOptions like this

    BuildOptions(min_batch=1, opt_batch=64, max_batch=256).check()
    BuildOptions(min_batch=128, opt_batch=128, max_batch=512).check()
    with pytest.raises(FSQDeployError, match="got 4, 2, 8"):
        BuildOptions(min_batch=4, opt_batch=2, max_batch=8).check()


def test_options_from_given_flags():
    """What the CLI passes: None is "not given"; without --opt-batch the default is clamped into the range."""
    assert BuildOptions.from_given() == BuildOptions.from_given(min_batch=None, timing_cache=None) == BuildOptions()
    assert BuildOptions.from_given(max_batch=32).profile == {"min": 1, "opt": 32, "max": 32}
    assert BuildOptions.from_given(min_batch=128, max_batch=512).profile == {"min": 128, "opt": 128, "max": 512}
    assert BuildOptions.from_given(opt_batch=300).opt_batch == 300  # given: kept, for check() to refuse
    given = BuildOptions.from_given(workspace_mib=512, optimization_level=0, version_compatible=True)
    assert (given.workspace_mib, given.optimization_level, given.version_compatible) == (512, 0, True)
    with pytest.raises(TypeError, match="workspace"):
        BuildOptions.from_given(workspace=512)


# -- the sidecar refusal (pure Python) --------------------------------------------------------------

FACTS = {"tensorrt_version": "10.8.0.43", "cuda_version": "12.6", "gpu_name": "NVIDIA L4",
         "compute_capability": "8.9"}


def _engine(tmp_path: Path, **sidecar) -> Path:
    engine = tmp_path / "encoder.fp16.plan"
    engine.write_bytes(b"serialized engine")
    from fsqdeploy.fileio import sha256_file

    record = {**FACTS, "precision": "fp16", "profile": {"min": 1, "opt": 64, "max": 256},
              "onnx_sha256": "0" * 64, "engine_sha256": sha256_file(engine),
              "version_compatible": False, "hardware_compatible": False, **sidecar}
    sidecar_path(engine).write_text(json.dumps(record))
    return engine


def test_sidecar_matching_machine_loads(tmp_path):
    assert check_sidecar(_engine(tmp_path), FACTS, precision="fp16")["gpu_name"] == "NVIDIA L4"


@pytest.mark.parametrize("sidecar, here, message", [
    ({"tensorrt_version": "10.3.0.26"}, {}, "built with TensorRT 10.3.0.26, this is TensorRT 10.8.0.43 (or build"),
    ({"compute_capability": "8.6", "gpu_name": "NVIDIA A10"}, {},
     "built for NVIDIA A10 (sm 8.6), this GPU is NVIDIA L4 (sm 8.9)"),
    # Version-compatible engines load on the same or a later TensorRT of the same major, or on the
    # next major TensorRT documents (10 -> 11), never on an older runtime (version_compatible_runs).
    ({"tensorrt_version": "10.9.0.1", "version_compatible": True}, {},
     "built with TensorRT 10.9.0.1, this is TensorRT 10.8.0.43 (a version-compatible engine runs on TensorRT 10.x "
     "from 10.9.0.1 on or TensorRT 11.x)"),
    # Was 10.3 on 11.0 (refused as "another major"): the 11.1 Engine Compatibility page says
    # "engines built with TensorRT 10 work with TensorRT 11", so that case now loads (below), and the
    # refusals across majors are the ones TensorRT refuses: 11 -> 10, 8 -> 11 ("No other combination
    # across major versions is supported. For example, a TensorRT 8 engine cannot run with a
    # TensorRT 11 runtime", 11.4 Support Matrix).
    ({"tensorrt_version": "11.0.0.1", "version_compatible": True}, {}, "runs on TensorRT 11.x from 11.0.0.1 on)"),
    ({"tensorrt_version": "8.6.1.6", "version_compatible": True}, {"tensorrt_version": "11.1.0.5"},
     "runs on TensorRT 8.x from 8.6.1.6 on, TensorRT 9.x or TensorRT 10.x)"),
    # Hardware-compatible engines run on Ampere or newer, not on Turing.
    ({"hardware_compatible": True}, {"compute_capability": "7.5", "gpu_name": "Tesla T4"},
     "hardware-compatible for Ampere and newer (sm 8.0+), this GPU is Tesla T4 (sm 7.5)"),
])
def test_sidecar_refuses_another_machine(tmp_path, sidecar, here, message):
    engine = _engine(tmp_path, **sidecar)
    with pytest.raises(FSQDeployError, match="rebuild it with fsqdeploy export RUN --out ART --trt") as e:
        check_sidecar(engine, {**FACTS, **here})
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("sidecar, here", [
    ({"tensorrt_version": "10.3.0.26", "version_compatible": True}, {}),
    ({"tensorrt_version": "10.3.0.26", "version_compatible": True}, {"tensorrt_version": "11.0.0.1"}),  # 10 -> 11
    ({"compute_capability": "8.0", "gpu_name": "NVIDIA A100", "hardware_compatible": True}, {}),
    ({"compute_capability": "8.9", "hardware_compatible": True}, {"compute_capability": "9.0", "gpu_name": "H100"}),
])
def test_portable_engines_relax_exactly_their_check(tmp_path, sidecar, here):
    assert check_sidecar(_engine(tmp_path, **sidecar), {**FACTS, **here})


@pytest.mark.parametrize("damage, message", [
    (lambda e: sidecar_path(e).unlink(), "encoder.fp16.plan.json' is missing"),
    (lambda e: e.unlink(), "encoder.fp16.plan' is missing"),
    (lambda e: sidecar_path(e).write_text("{"), "is not valid JSON"),
    (lambda e: sidecar_path(e).write_text('{"precision": "fp16"}'), "lacks tensorrt_version, gpu_name"),
    (lambda e: e.write_bytes(b"another engine"), "is not the engine its sidecar describes"),
])
def test_damaged_sidecar_or_engine(tmp_path, damage, message):
    engine = _engine(tmp_path)
    damage(engine)
    with pytest.raises(FSQDeployError, match="rebuild it") as e:
        check_sidecar(engine, FACTS)
    assert message in str(e.value)


def test_sidecar_precision_must_match(tmp_path):
    with pytest.raises(FSQDeployError, match="is a fp16 engine, fp32 was asked for"):
        check_sidecar(_engine(tmp_path), FACTS, precision="fp32")


def test_engine_paths_say_how_to_build(art64):
    manifest = json.loads((art64.art / "manifest.json").read_text())
    with pytest.raises(FSQDeployError, match="has no encoder.fp16.plan. Note: build it on this GPU with fsqdeploy "
                                             r"export .* --trt --precision fp16$"):
        engine_paths(art64.art, manifest, "fp16")
    with pytest.raises(FSQDeployError, match=r"--precision int8 \(after fsqdeploy calibrate\)"):
        engine_paths(art64.art, manifest, "int8")


# -- the graph the parser reads ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture, precision", [("art32", "fp32"), ("art64", "fp32"), ("art64", "fp16"),
                                                 ("art64_inline", "fp16")])
def test_parser_graph_is_inlined_named_and_computes_the_same(request, fixture, precision):
    exported = request.getfixturevalue(fixture)
    s = exported.model.config.image_size
    images = images_to_float(load_images("sample", s).test[:64])
    for name in (ENCODER_FILE, DECODER_FILE):
        graph = onnx.load(str(exported.art / name))
        if precision == "fp16":
            graph = convert_to_fp16(graph)
        prepared = parser_graph(graph)
        # No local function is left for the parser's function importer to bind by formal name.
        assert not prepared.model.functions and all(n.domain in ("", "ai.onnx") for n in prepared.model.graph.node)
        named = [n.name for n in prepared.model.graph.node if n.name.startswith(QUANTIZER_PREFIX)]
        assert set(named) == prepared.quantizer_nodes and len(named) >= 4
        if name == ENCODER_FILE:
            # Every stage's input is watched, the later stages' residual inputs included.
            stages = exported.model.config.stages
            assert "latent" in prepared.quantizer_float_tensors
            assert all(f"fsq_stage_input_{k}" in prepared.quantizer_float_tensors for k in range(1, stages))
            feed = {"images": images}
        else:
            assert "decoder_input" in prepared.quantizer_float_tensors
            feed = {"indices": ort_session(exported.art / ENCODER_FILE).run(None, {"images": images})[0]}
        want = ort_session(graph).run(None, feed)[0]
        got = ort_session(prepared.model).run(None, feed)[0]
        assert np.array_equal(got, want)


# -- reading TensorRT's layer information -----------------------------------------------------------


@pytest.mark.parametrize("entry, precision", [
    ({"Format/Datatype": "Row major linear FP32"}, "FP32"),
    ({"Format/Datatype": "Float"}, "FP32"),
    ({"Format/Datatype": "Half"}, "FP16"),
    ({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}, "FP16"),
    ({"Format/Datatype": "Int32"}, "INT32"),
    ({"Format/Datatype": "Bool"}, "BOOL"),
    ({"Format": "Row major linear (kLINEAR)", "DataType": "BFloat16"}, "BF16"),
    ({"Format": "Row major linear FP32 format (kLINEAR)", "DataType": "Float"}, "FP32"),
    ({"Format/Datatype": "Int8"}, "INT8"),
])
def test_tensor_precision_reads_trt10_and_trt11(entry, precision):
    assert tensor_precision({"Name": "t", **entry}) == precision


def _layer(name, metadata, inputs, outputs, key="Format/Datatype"):
    return {"Name": name, "LayerType": "x", "Metadata": metadata,
            "Inputs": [{"Name": n, key: t} for n, t in inputs], "Outputs": [{"Name": n, key: t} for n, t in outputs]}


def _info(key="Format/Datatype", latent="Float", compare="Float"):
    return {"Layers": [
        _layer("node_conv2d + node_relu", "[ONNX Layer: node_conv2d]\x1f[ONNX Layer: node_relu]",
               [("images/fp16", "Half")], [("relu", "Half")], key),
        # Myelin fuses the FP16 Gemm, the cast and the first quantizer ops: only its quantizer
        # tensors are checked (its conv side is FP16 by design).
        _layer("{ForeignNode[node_linear...fsq_quantizer/GreaterOrEqual_12]}",
               "[ONNX Layer: node_linear]\x1f[ONNX Layer: to_fp32/latent]\x1e"
               "[ONNX Layer: fsq_quantizer/Unsqueeze_11]\x1f[ONNX Layer: fsq_quantizer/GreaterOrEqual_12]",
               [("view_1", "Half")], [("latent", latent), ("reached__1", "Bool")], key),
        _layer("fsq_quantizer/fsq_residual_0", "[ONNX Layer: fsq_quantizer/fsq_residual_0 | Local Function: x]",
               [("latent", latent), ("(Unnamed Layer* 40) [Constant]_output", compare)],
               [("fsq_residual_0", compare)], key),
        _layer("fsq_quantizer/ReduceSum_14", "[ONNX Layer: fsq_quantizer/ReduceSum_14]",
               [("reached_i32__1", "Int32")], [("fsq_indices_0", "Int32")], key),
    ], "Bindings": ["images", "indices"]}


WATCHED = {"latent", "fsq_residual_0", "fsq_stage_input_1", "fsq_thresholds_0"}


@pytest.mark.parametrize("key", ["Format/Datatype", "DataType"])
def test_inspector_passes_an_fp32_quantizer(key):
    result = inspect_quantizer(json.dumps(_info(key)), WATCHED)
    assert result.passed, result.problems
    names = [layer["name"] for layer in result.layers]
    assert len(names) == 3 and names[0].startswith("{ForeignNode[")
    assert result.summary()["precisions"] == ["BOOL", "FP16", "FP32", "INT32"]  # FP16: the fused Gemm's input


@pytest.mark.parametrize("latent, compare, message", [
    ("Half", "Float", "has 'latent' in FP16"),
    ("Float", "Half", "layer 'fsq_quantizer/fsq_residual_0' has '(Unnamed Layer* 40) [Constant]_output' in FP16"),
    ("Float", "BFloat16", "in BF16"),
])
def test_inspector_fails_a_reduced_quantizer(latent, compare, message):
    result = inspect_quantizer(_info(latent=latent, compare=compare), WATCHED)
    assert not result.passed and any(message in p for p in result.problems), result.problems


def test_inspector_tolerates_names_only():
    """Layer information below detailed verbosity is a list of names: nothing to check, no crash."""
    result = inspect_quantizer({"Layers": ["fsq_quantizer/ReduceSum_14", "node_conv2d"]}, WATCHED)
    assert result.passed and result.layers == []


# -- on a GPU -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_art(tmp_path_factory, run64):
    """The 64 px two-stage model exported with FP16 graphs and FP32 + FP16 engines, profile 1/8/16
    (small, so that a batch of 40 runs in chunks)."""
    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT engines need an NVIDIA GPU with TensorRT: {reason}")
    from fsqdeploy.export.pipeline import export_artifact

    art = tmp_path_factory.mktemp("trt") / "art"
    export_artifact(run64, art, opset=18, parity_images=128, precisions=("fp32", "fp16"),
                    trt=BuildOptions(min_batch=1, opt_batch=8, max_batch=16, workspace_mib=1024))
    return art


def _reference(art: Path, count: int = 256):
    from fsqdeploy.runtime.bench import reference_outputs
    from fsqdeploy.runtime.codec import Codec

    images = images_to_float(load_images("sample", 64).test[:count])
    with Codec.load(art, "torch") as torch_codec:
        return reference_outputs(torch_codec, images)


def _fidelity(art: Path, precision: str, ref):
    from fsqdeploy.runtime.bench import BackendSpec, measure_fidelity
    from fsqdeploy.runtime.codec import Codec

    with Codec.load(art, "tensorrt", precision=precision) as codec:
        assert codec.encoder.precision == precision
        return measure_fidelity(codec, BackendSpec("tensorrt", precision), ref)


@pytest.mark.gpu
def test_fp32_engines_match_pytorch(gpu_art, run64):
    from fsqdeploy.export.parity import stage_inputs, threshold_distance
    from fsqdeploy.model import FSQVAE

    ref = _reference(gpu_art)
    row = _fidelity(gpu_art, "fp32", ref)
    # FP32 engines (TF32 off) compute the latent to ~1e-6 of PyTorch: indices are equal except for a
    # latent within that of a threshold, which the parity gate's images do not have.
    model = FSQVAE.load(run64)
    with torch.no_grad():
        us = stage_inputs(model.quantizer, model.encoder(torch.from_numpy(ref.images)))
    thresholds = [s.tables(torch.device("cpu"))[0].numpy() for s in model.quantizer.stages]
    distance = np.concatenate([threshold_distance(u.numpy(), t) for u, t in zip(us, thresholds)], axis=1)
    near = distance.min()
    print(f"tensorrt fp32: index agreement {row['index_agreement']:.6f}, decoder max error "
          f"{row['max_abs_error']:.2e}, nearest latent to a threshold {near:.2e}")
    if near > 1e-5:
        assert row["index_agreement"] == 1.0
    assert row["index_agreement"] >= 1 - 1 / ref.indices.size
    # Only a latent within float32 noise of a threshold may flip ([N, W], as the indices are).
    flips = round((1 - row["index_agreement"]) * ref.indices.size)
    assert distance.shape == ref.indices.shape and flips <= int((distance <= 1e-5).sum())
    assert row["max_abs_error"] <= 1e-4


@pytest.mark.gpu
def test_fp16_engines_within_the_fp16_risk(gpu_art):
    from fsqdeploy.export.fp16 import fp16_risk

    ref = _reference(gpu_art)
    row = _fidelity(gpu_art, "fp16", ref)
    risk = fp16_risk(onnx.load(str(gpu_art / ENCODER_FILE)), ref.images)["share"]
    manifest = json.loads((gpu_art / "manifest.json").read_text())
    print(f"tensorrt fp16: index agreement {row['index_agreement']:.6f} (FP16 risk {risk:.6f}, ONNX Runtime CPU "
          f"with FP16 rounding {manifest['fp16']['fp16_rounding']['index_agreement']:.6f}), PSNR vs FP32 "
          f"{row['roundtrip_psnr_vs_reference']:.1f} dB")
    # On ONNX Runtime CPU the FP16 graphs flip about 0.4x the at-risk share; TensorRT kernels may
    # accumulate in FP16 too, hence 3x, plus one index for small sets.
    assert 1 - row["index_agreement"] <= 3 * risk + 1 / ref.indices.size
    assert row["max_abs_error"] <= 5e-3 and row["roundtrip_psnr_vs_reference"] >= 40


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_quantizer_layers_run_in_fp32(gpu_art, precision):
    for graph in ("encoder", "decoder"):
        plan = gpu_art / f"{graph}.{precision}.plan"
        sidecar = json.loads(sidecar_path(plan).read_text())
        q = sidecar["quantizer"]
        assert q["network_layers"] >= 5 and q["engine"]["passed"], q
        assert q["engine"]["layers"] >= 1, "the layer information names no quantizer layer"
        prepared = parser_graph(onnx.load(str(gpu_art / sidecar["onnx_file"])))
        layers = json.loads(plan.with_name(plan.name + ".layers.json").read_text())
        again = inspect_quantizer(layers, prepared.quantizer_float_tensors)
        assert again.passed, again.problems
        precisions = {tensor_precision(t) for layer in layers["Layers"]
                      for t in [*layer.get("Inputs", []), *layer.get("Outputs", [])]}
        print(f"{plan.name}: {q['engine']['layers']} quantizer layers, tensor types {sorted(precisions)}")
        if precision == "fp32":  # strongly typed FP32: nothing anywhere below FP32 (TF32 is off too)
            assert not precisions & REDUCED_PRECISIONS
        assert sidecar["precision"] == precision and sidecar["strongly_typed"] and not sidecar["tf32"]


@pytest.mark.gpu
def test_profile_limits_and_chunks(gpu_art):
    from fsqdeploy.runtime.codec import Codec

    images = images_to_float(load_images("sample", 64).test[:40])
    with Codec.load(gpu_art, "tensorrt", precision="fp32") as codec:
        runner = codec.encoder
        assert (runner.min_batch, runner.max_batch) == (1, 16)
        whole = codec.encode(images)  # 40 > 16: chunks of 16, 16 and 8
        parts = np.concatenate([codec.encode(images[i : i + 10]) for i in range(0, 40, 10)])
        # Kernels may sum in another order for another batch size, so a latent within float32
        # noise of a threshold could flip; a chunking mistake would change whole rows.
        assert (whole == parts).mean() >= 0.999 and whole.shape == parts.shape == (40, 16)
        with pytest.raises(FSQDeployError, match="batch 17 is outside the engine profile 1..16"):
            runner.run_batch(torch.from_numpy(images[:17]).cuda())
        assert codec.encode(images[:0]).shape == (0, 16)


@pytest.mark.gpu
def test_cuda_graph_replays_give_the_same_result(gpu_art):
    images = torch.from_numpy(images_to_float(load_images("sample", 64).test[:12])).cuda()
    with TensorRTRunner(gpu_art / "encoder.fp16.plan") as graphs, \
            TensorRTRunner(gpu_art / "encoder.fp16.plan", use_cuda_graphs=False) as plain:
        first = graphs.infer_torch(images)
        again = [graphs.infer_torch(images) for _ in range(3)]
        assert graphs.captured_batch_sizes == [12] and graphs.graph_replays == 3
        want = plain.infer_torch(images)
        assert plain.graph_replays == 0
        for out in [first, *again]:
            assert torch.equal(out, want)


@pytest.mark.gpu
def test_tampered_sidecar_is_refused(gpu_art, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(gpu_art, art)
    plan = art / "encoder.fp16.plan"
    sidecar = json.loads(sidecar_path(plan).read_text())
    sidecar_path(plan).write_text(json.dumps({**sidecar, "tensorrt_version": "9.0.0.0"}))
    with pytest.raises(FSQDeployError, match="built with TensorRT 9.0.0.0, this is TensorRT .* rebuild"):
        TensorRTRunner(plan).activate()
    sidecar_path(plan).write_text(json.dumps({**sidecar, "compute_capability": "1.0", "gpu_name": "Tesla C870"}))
    with pytest.raises(FSQDeployError, match=r"built for Tesla C870 \(sm 1.0\), this GPU is"):
        TensorRTRunner(plan).activate()


@pytest.mark.gpu
def test_timing_cache_is_kept_and_reused(gpu_art, run64, tmp_path):
    from fsqdeploy.export.pipeline import export_artifact

    manifest = json.loads((gpu_art / "manifest.json").read_text())
    assert "timing.cache" in manifest["files"] and (gpu_art / "timing.cache").stat().st_size > 0
    cache = tmp_path / "shared.cache"
    export_artifact(run64, tmp_path / "a", opset=18, parity_images=32, trt=BuildOptions(timing_cache=cache))
    size = cache.stat().st_size
    export_artifact(run64, tmp_path / "b", opset=18, parity_images=32, trt=BuildOptions(timing_cache=cache))
    assert cache.stat().st_size >= size and not (tmp_path / "b" / "timing.cache").exists()
    states = [json.loads((tmp_path / a / "manifest.json").read_text())["tensorrt"]["fp32"]["timing_cache"]
              for a in ("a", "b")]
    assert states == ["new", "reused"]  # TensorRT took the cache this GPU made (tests/export/test_tensorrt_rules.py)


@pytest.mark.gpu
def test_bench_times_engines_with_cuda_events_with_and_without_copies(gpu_art):
    from fsqdeploy.runtime.bench import BackendSpec, BenchSettings, measure_latency
    from fsqdeploy.runtime.codec import Codec

    images = images_to_float(load_images("sample", 64).test[:8])
    with Codec.load(gpu_art, "tensorrt", precision="fp16") as codec:
        rows = measure_latency(codec, BackendSpec("tensorrt", "fp16"), images, codec.encode(images),
                               BenchSettings(batch_sizes=[8], warmup=2, iters=5))
    assert {(r["io"], r["stage"]) for r in rows} == {(io, s) for io in ("host", "device")
                                                     for s in ("encode", "decode", "roundtrip")}
    assert all(r["timing"] == "cuda-events" and r["latency_ms"]["p50"] > 0 for r in rows)
    p50 = {(r["io"], r["stage"]): r["latency_ms"]["p50"] for r in rows}
    print("tensorrt fp16, batch 8, p50 ms (a number to read, not to assert):", p50)


@pytest.mark.gpu
def test_int8_engines_compute_what_their_qdq_graphs_say(gpu_art, tmp_path):
    """INT8 engines from calibrate's TensorRT graphs, against the same graphs on ONNX Runtime's CPU
    (which computes Q/DQ exactly as ONNX defines it): run64 is an untrained model, so agreement with
    FP32 says nothing here; agreement with the graph TensorRT was given does."""
    import shutil

    from fsqdeploy.backends.onnxruntime import ort_session as session
    from fsqdeploy.calibration.pipeline import calibrate_artifact
    from fsqdeploy.export.tensorrt.build import build_engines
    from fsqdeploy.runtime.bench import BackendSpec, BenchSettings, measure_latency
    from fsqdeploy.runtime.codec import Codec

    art = tmp_path / "art"
    shutil.copytree(gpu_art, art)
    calibrate_artifact(art, samples=128, eval_images=128)
    build_engines(art, ["int8"], BuildOptions(min_batch=1, opt_batch=8, max_batch=16, workspace_mib=1024))
    images = images_to_float(load_images("sample", 64).test[:64])
    simulated = session(onnx.load(str(art / "encoder.int8.trt.onnx"))).run(None, {"images": images})[0]
    with Codec.load(art, "tensorrt", precision="int8") as codec:
        engine = codec.encode(images)
        rows = measure_latency(codec, BackendSpec("tensorrt", "int8"), images[:8], engine[:8],
                               BenchSettings(batch_sizes=[8], warmup=1, iters=3))
    agreement = float((engine == simulated).mean())
    print(f"tensorrt int8 vs its Q/DQ graph on ONNX Runtime CPU: {100 * agreement:.3f}% indices equal")
    assert agreement >= 0.99
    assert {r["io"] for r in rows} == {"host", "device"}
    sidecar = json.loads((art / "encoder.int8.plan.json").read_text())
    assert sidecar["onnx_file"] == "encoder.int8.trt.onnx" and sidecar["quantizer"]["engine"]["passed"]


@pytest.mark.gpu
def test_onnxruntime_tensorrt_ep_runs_the_fp16_graphs(gpu_art):
    """The second route: ONNX Runtime's TensorRT EP on the strongly typed FP16 graphs (FP16 flag
    off, so the EP builds a strongly typed network too), with its engine cache in ART/trt_cache."""
    import onnxruntime

    from fsqdeploy.backends.onnxruntime import OnnxRuntimeRunner

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu with the TensorRT execution provider is not installed")
    images = images_to_float(load_images("sample", 64).test[:64])
    cache = gpu_art / "trt_cache"
    with OnnxRuntimeRunner(gpu_art / "encoder.fp16.onnx", "onnxruntime-trt", trt_fp16=False,
                           trt_cache_dir=cache) as ep, TensorRTRunner(gpu_art / "encoder.fp16.plan") as native:
        got = ep.infer({"images": images})["indices"]
        want = native.infer({"images": images})["indices"]
    assert any(cache.iterdir())
    assert (got == want).mean() >= 0.999


# -- the build plumbing, with the strict stand-in tensorrt (tests/trt_standin.py) -------------------
# The stand-in accepts only the API tensorrt-stubs declare, turns the parsed ONNX graph into layers
# typed as ONNX infers, and answers the builder, runtime and inspector calls build_engine makes. It
# proves fsqdeploy's side: options reach the config, the checks read what TensorRT would report,
# files and manifest are written atomically, failures are one line and leave nothing behind.


def test_export_trt_builds_checks_and_records_engines(cli, run32, tmp_path, fake_trt):
    from fsqdeploy.artifact import verify_files
    from fsqdeploy.fileio import sha256_file

    trt = fake_trt()
    out = tmp_path / "art"
    code, stdout, err = cli("export", run32, "--out", out, "--parity-images", "32", "--trt", "--precision", "fp32",
                            "--precision", "fp16", "--max-batch", "32", "--workspace", "512",
                            "--optimization-level", "4")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert verify_files(manifest, out) == []
    for precision in ("fp32", "fp16"):
        for graph in ("encoder", "decoder"):
            plan = out / f"{graph}.{precision}.plan"
            for name in (plan.name, f"{plan.name}.json", f"{plan.name}.layers.json"):
                assert name in manifest["files"], name
            sidecar = check_sidecar(plan, FAKE_FACTS, precision=precision)
            onnx_file = f"{graph}.onnx" if precision == "fp32" else f"{graph}.fp16.onnx"
            assert sidecar["onnx_file"] == onnx_file and sidecar["onnx_sha256"] == sha256_file(out / onnx_file)
            assert sidecar["profile"] == {"min": 1, "opt": 32, "max": 32}  # default opt clamped into 1..32
            assert sidecar["quantizer"]["network_layers"] >= 4 and sidecar["quantizer"]["engine"]["passed"]
            assert sidecar["strongly_typed"] and not sidecar["tf32"] and not sidecar["version_compatible"]
        assert manifest["tensorrt"][precision]["facts"] == FAKE_FACTS
    assert "timing.cache" in manifest["files"] and (out / "timing.cache").read_bytes() == b"++++"
    # What reached the builder: strongly typed network, TF32 off, workspace, level, detailed layer info.
    assert len(trt.configs) == 4
    for config in trt.configs:
        assert config._cleared == {6} and config._set == set() and config._pools == {0: 512 << 20}
        assert config.builder_optimization_level == 4 and int(config.profiling_verbosity) == 2
        (name, (lo, opt, hi)), = config._profiles[0]._shapes.items()
        assert (lo[0], opt[0], hi[0]) == (1, 32, 32) and name in ("images", "indices")
    assert "tensorrt fp16: encoder.fp16.plan, decoder.fp16.plan for NVIDIA L4 (sm 8.9, TensorRT 10.13.0.35), " \
           "batch 1..32 (opt 32)" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary directory left

    # --force keeps the timing cache: the old ART's seeds the new one.
    code, _, err = cli("export", run32, "--out", out, "--parity-images", "32", "--trt", "--force",
                       "--version-compatible", "--hardware-compatible")
    assert code == 0, err
    assert (out / "timing.cache").read_bytes() == b"++++++"
    config = trt.configs[-1]
    assert config._set == {13} and int(config.hardware_compatibility_level) == 1
    assert json.loads((out / "encoder.fp32.plan.json").read_text())["version_compatible"] is True


@pytest.mark.parametrize("behaviour, message", [
    ({"build_fails": True}, "building the engine for encoder.onnx failed (Error Code 2: Internal Error (out of "
                            "memory)). Note: try a larger --workspace"),
    ({"parse_error": True}, "the ONNX parser rejects encoder.onnx: Assertion failed: unsupported at node "
                            "'node_conv2d' (Conv). Note: fsqdeploy check ART lints"),
    ({"fp16_quantizer_layer": True}, "the quantizer must run in FP32"),
    ({"fp16_latent": True}, "has 'latent' in FP16; the quantizer must run in FP32"),
])
def test_failed_build_is_one_line_and_writes_nothing(cli, one_line_error, run32, tmp_path, fake_trt, behaviour,
                                                     message):
    fake_trt(**behaviour)
    code, stdout, err = cli("export", run32, "--out", tmp_path / "art", "--parity-images", "32", "--trt")
    one_line_error(code, err, message)
    assert list(tmp_path.iterdir()) == []


def test_build_engines_on_an_existing_artifact_is_atomic(art_copy, fake_trt):
    from fsqdeploy.artifact import verify_files
    from fsqdeploy.export.tensorrt.build import build_engines

    before = {p.name: p.read_bytes() for p in art_copy.iterdir() if p.is_file()}
    fake_trt(fp16_latent=True)
    with pytest.raises(FSQDeployError, match="must run in FP32"):
        build_engines(art_copy, ["fp32"], BuildOptions(max_batch=8, opt_batch=8))
    assert {p.name: p.read_bytes() for p in art_copy.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in art_copy.iterdir() if p.is_dir()) == ["checkpoint"]

    with pytest.raises(FSQDeployError, match="has no encoder.fp16.onnx. Note: export with --precision fp16"):
        build_engines(art_copy, ["fp16"], BuildOptions())

    fake_trt()
    summary = build_engines(art_copy, ["fp32"], BuildOptions(max_batch=8, opt_batch=8))
    manifest = json.loads((art_copy / "manifest.json").read_text())
    assert manifest["tensorrt"] == summary and verify_files(manifest, art_copy) == []
    assert manifest["model_id"] == json.loads(before["manifest.json"])["model_id"]
    assert engine_paths(art_copy, manifest, "fp32") == (art_copy / "encoder.fp32.plan", art_copy / "decoder.fp32.plan")


def test_int8_engines_are_built_into_a_calibrated_artifact(cli, art_copy, fake_trt):
    from fsqdeploy.artifact import verify_files
    from fsqdeploy.calibration.pipeline import calibrate_artifact
    from fsqdeploy.fileio import sha256_file

    calibrate_artifact(art_copy, samples=64, eval_images=64)
    trt = fake_trt()
    code, stdout, err = cli("export", art_copy, "--trt", "--precision", "int8", "--max-batch", "16")
    assert code == 0, err
    manifest = json.loads((art_copy / "manifest.json").read_text())
    assert verify_files(manifest, art_copy) == []
    for graph in ("encoder", "decoder"):
        plan = art_copy / f"{graph}.int8.plan"
        sidecar = check_sidecar(plan, FAKE_FACTS, precision="int8")
        # built from the TensorRT graphs of calibrate, not from ONNX Runtime's uint8 ones
        assert sidecar["onnx_file"] == f"{graph}.int8.trt.onnx"
        assert sidecar["onnx_sha256"] == sha256_file(art_copy / f"{graph}.int8.trt.onnx")
        assert sidecar["quantizer"]["engine"]["passed"] and sidecar["strongly_typed"]
    assert len(trt.configs) == 2 and all(c._set == set() for c in trt.configs)  # no INT8 flag: typed by Q/DQ
    assert "tensorrt int8: encoder.int8.plan, decoder.int8.plan" in stdout
    assert not [p for p in art_copy.iterdir() if p.name.startswith(".trt-build")]


def test_int8_engine_requests_that_cannot_work_are_one_line(cli, one_line_error, run32, art_copy, fake_trt, tmp_path):
    one_line_error(*cli("export", run32, "--out", tmp_path / "a", "--trt", "--precision", "int8")[::2],
                   "int8 engines are built from calibrated graphs. Note: fsqdeploy export RUN --out ART, "
                   "fsqdeploy calibrate ART")
    assert not (tmp_path / "a").exists()
    one_line_error(*cli("export", art_copy)[::2], "is an exported artifact. Note: add --trt")
    one_line_error(*cli("export", art_copy, "--trt", "--out", tmp_path / "b")[::2], "--out does not apply")
    one_line_error(*cli("export", art_copy, "--trt", "--opset", "17")[::2], "--opset does not apply")
    one_line_error(*cli("export", run32, "--trt")[::2], "--out is required")
    one_line_error(*cli("export", tmp_path / "nope", "--trt", "--precision", "int8")[::2],
                   "'" + str(tmp_path / "nope") + "' does not exist")
    before = sorted(p.name for p in art_copy.iterdir())
    # Without TensorRT, what the artifact lacks comes first: it is the next step either way.
    one_line_error(*cli("export", art_copy, "--trt", "--precision", "int8")[::2],
                   "has no encoder.int8.trt.onnx. Note: calibrate it first: fsqdeploy calibrate")
    fake_trt()
    one_line_error(*cli("export", art_copy, "--trt", "--precision", "int8")[::2],
                   "has no encoder.int8.trt.onnx. Note: calibrate it first: fsqdeploy calibrate")
    one_line_error(*cli("export", art_copy, "--trt", "--precision", "bf16")[::2], "no engines of precision 'bf16'")
    (art_copy / "encoder.onnx").write_bytes(b"tampered")
    one_line_error(*cli("export", art_copy, "--trt")[::2], "failed verification: encoder.onnx")
    assert sorted(p.name for p in art_copy.iterdir()) == before


def test_conv_engines_get_an_image_profile(cli, conv_run, tmp_path, fake_trt):
    """A spatial model's engines: the profile covers height and width (pixels for the encoder's
    images, cells for the decoder's grid), from the flags or the spatial defaults."""
    trt = fake_trt()
    out = tmp_path / "art"
    code, stdout, err = cli("export", conv_run, "--out", out, "--parity-images", "1", "--trt",
                            "--min-shape", "16x8", "--max-shape", "128x256", "--max-batch", "2")
    assert code == 0, err
    shapes = {name: s for config in trt.configs for name, s in config._profiles[0]._shapes.items()}
    width = 8  # two stages of 4 latent channels
    # --opt-shape not given: the default 512x768 clamped into the range; --opt-batch: 1 (spatial default)
    assert [list(d) for d in shapes["images"]] == [[1, 3, 16, 8], [1, 3, 128, 256], [2, 3, 128, 256]]
    assert [list(d) for d in shapes["indices"]] == [[1, width, 2, 1], [1, width, 16, 32], [2, width, 16, 32]]
    sidecar = json.loads((out / "encoder.fp32.plan.json").read_text())
    assert sidecar["profile"] == {"min": 1, "opt": 1, "max": 2, "downsample": 8, "min_shape": [16, 8],
                                  "opt_shape": [128, 256], "max_shape": [128, 256]}
    assert "batch 1..2 (opt 1), images 16x8..128x256 (opt 128x256)" in stdout

    trt.configs.clear()
    code, _, err = cli("export", out, "--trt")  # into the artifact, all defaults
    assert code == 0, err
    images = trt.configs[0]._profiles[0]._shapes["images"]
    assert [list(d) for d in images] == [[1, 3, 8, 8], [1, 3, 512, 768], [4, 3, 2048, 2048]]


@pytest.mark.parametrize("args, message", [
    (["--min-shape", "12x16"], "--min-shape (12, 16) must be HEIGHTxWIDTH in positive multiples of 8 pixels"),
    (["--max-shape", "64"], "--max-shape '64' is not HEIGHTxWIDTH"),
    (["--min-shape", "64x64", "--max-shape", "32x128"], "--min-shape <= --opt-shape <= --max-shape"),
])
def test_bad_image_profiles_are_one_line(cli, one_line_error, conv_run, tmp_path, fake_trt, args, message):
    fake_trt()
    code, _, err = cli("export", conv_run, "--out", tmp_path / "art", "--trt", *args)
    one_line_error(code, err, message)
    assert list(tmp_path.iterdir()) == []


def test_image_profile_flags_are_for_conv_models(cli, one_line_error, run32, tmp_path, fake_trt):
    fake_trt()
    code, _, err = cli("export", run32, "--out", tmp_path / "art", "--trt", "--opt-shape", "64x64")
    one_line_error(code, err, "--opt-shape is for spatial (conv) models")
    assert list(tmp_path.iterdir()) == []
