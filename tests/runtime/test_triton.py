"""fsqdeploy triton: the model repository (layout, every config.pbtxt parsed with Triton's own
schema, tensors against the ONNX graphs, the FSQ contract, engines mapped per compute capability),
bad input refused in one line with nothing written, and TritonCodec against a real server where
one can run here (the Triton server bundled in the nvidia-pytriton wheel: see ``triton_home``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("tritonclient.grpc", reason="the config schema ships in tritonclient: pip install '.[serve]'")
from google.protobuf import text_format  # noqa: E402 - after the skip: protobuf comes with tritonclient[grpc]
from tritonclient.grpc import model_config_pb2 as pb2  # noqa: E402

from fsqdeploy import FSQDeployError  # noqa: E402
from fsqdeploy.artifact import Manifest, add_files, engine_file, sidecar_path  # noqa: E402
from fsqdeploy.runtime import Codec, TritonCodec  # noqa: E402
from fsqdeploy.runtime.serving import RepositoryOptions, write_repository  # noqa: E402
from fsqdeploy.runtime.serving.triton import (  # noqa: E402
    CONTRACT_PREFIX,
    DEFAULT_MAX_BATCH,
    contract,
    manifest_from_contract,
)

DTYPES = {onnx.TensorProto.FLOAT: pb2.TYPE_FP32, onnx.TensorProto.INT32: pb2.TYPE_INT32}


def read_config(path: Path) -> pb2.ModelConfig:
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def graph_io(path: Path) -> list[tuple[str, int, list[int]]]:
    """(name, Triton dtype, dims after the batch, -1 where symbolic) of every input then output."""
    model = onnx.load(str(path), load_external_data=False)
    out = []
    for value in [*model.graph.input, *model.graph.output]:
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        assert dims[0] == -1, f"{path}: {value.name} has a fixed batch axis"
        out.append((value.name, DTYPES[t.elem_type], dims[1:]))
    return out


def config_io(config: pb2.ModelConfig) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.data_type, list(t.dims)) for t in [*config.input, *config.output]]


@pytest.fixture(params=["art32", "art64", "conv_fp32", "conv_fp16"])
def served(request, tmp_path):
    """(artifact, precision, repository) for both patch artifacts and the conv one at both precisions."""
    name = request.param
    exported = request.getfixturevalue("conv_exported" if name.startswith("conv") else name)
    precision = name.split("_")[1] if name.startswith("conv") else "fp32"
    repo = tmp_path / "repo"
    write_repository(exported.art, repo, RepositoryOptions(precision=precision))
    return exported.art, precision, repo


def test_layout_is_triton_and_every_config_parses(served):
    art, precision, repo = served
    manifest = Manifest.load(art)
    assert sorted(p.name for p in repo.iterdir()) == ["fsq", "fsq_decoder", "fsq_encoder"]
    for model in ("fsq_encoder", "fsq_decoder"):
        assert sorted(str(p.relative_to(repo / model)) for p in (repo / model).rglob("*")) == \
            ["1", "1/model.onnx", "config.pbtxt"]
    assert sorted(str(p.relative_to(repo / "fsq")) for p in (repo / "fsq").rglob("*")) == ["1", "config.pbtxt"]
    spatial = manifest.spatial
    for model in ("fsq_encoder", "fsq_decoder", "fsq"):
        config = read_config(repo / model / "config.pbtxt")
        assert config.name == model
        assert config.max_batch_size == DEFAULT_MAX_BATCH[spatial]
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params[CONTRACT_PREFIX + "model_id"] == manifest.model_id
        assert params[CONTRACT_PREFIX + "levels"] == ",".join(map(str, manifest.levels))
        assert params[CONTRACT_PREFIX + "arch"] == manifest.arch
        assert params[CONTRACT_PREFIX + "downsample"] == str(manifest.downsample)
        assert params[CONTRACT_PREFIX + "image_size"] == str(manifest.image_size)
        assert params[CONTRACT_PREFIX + "precision"] == precision


def test_tensors_match_the_onnx_graphs(served):
    art, precision, repo = served
    manifest = Manifest.load(art)
    for graph in ("encoder", "decoder"):
        config = read_config(repo / f"fsq_{graph}" / "config.pbtxt")
        assert config.platform == "onnxruntime_onnx" and config.default_model_filename == "model.onnx"
        source = art / (f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx")
        assert config_io(config) == graph_io(source) == graph_io(repo / f"fsq_{graph}" / "1" / "model.onnx")
        index_dtype = [t.data_type for t in [*config.input, *config.output] if t.name == "indices"]
        assert index_dtype == [pb2.TYPE_INT32]
        # Spatial graphs take any height and width: -1 in the config, as in the graph.
        image = next(t for t in [*config.input, *config.output] if t.name == "images")
        size = manifest.image_size
        assert list(image.dims) == ([3, -1, -1] if manifest.spatial else [3, size, size])
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        # FP16 graphs run through TensorRT (as fsqdeploy's onnxruntime-trt backend), its FP16 flag off.
        kind = pb2.ModelInstanceGroup.KIND_GPU if precision == "fp16" else pb2.ModelInstanceGroup.KIND_AUTO
        assert [(g.count, g.kind) for g in config.instance_group] == [(1, kind)]
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert [(a.name, dict(a.parameters)) for a in accelerators] == \
            ([("tensorrt", {"precision_mode": "FP32"})] if precision == "fp16" else [])
        # Warm-up: batch 1 and the largest batch, every dim concrete, the grid the image's over f.
        assert [w.batch_size for w in config.model_warmup] == [1, config.max_batch_size]
        for warmup in config.model_warmup:
            (name, tensor), = warmup.inputs.items()
            assert name == config.input[0].name and tensor.zero_data and min(tensor.dims) > 0
            if manifest.spatial and graph == "decoder":
                assert list(tensor.dims) == [manifest.code_width, 512 // 8, 768 // 8]


def test_ensemble_chains_encoder_then_decoder(served):
    _, _, repo = served
    encoder, decoder = (read_config(repo / m / "config.pbtxt") for m in ("fsq_encoder", "fsq_decoder"))
    ensemble = read_config(repo / "fsq" / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("fsq_encoder", "fsq_decoder")
    assert dict(first.input_map) == {"images": "images"} and dict(first.output_map) == {"indices": "indices"}
    assert dict(second.input_map) == {"indices": "indices"} and dict(second.output_map) == {"images": "reconstruction"}
    assert config_io(ensemble)[0] == config_io(encoder)[0]  # images in
    assert config_io(ensemble)[1] == config_io(encoder)[1]  # indices out
    assert config_io(ensemble)[2] == ("reconstruction", *config_io(decoder)[1][1:])


def test_served_graphs_compute_the_local_codec(exported, tmp_path):
    """The repository's graphs (FSQ functions inlined) give exactly the local codec's indices and images."""
    import onnxruntime as ort

    repo = tmp_path / "repo"
    write_repository(exported.art, repo)
    graphs = {g: onnx.load(str(repo / f"fsq_{g}" / "1" / "model.onnx")) for g in ("encoder", "decoder")}
    assert all(not g.functions and {o.domain for o in g.opset_import} <= {"", "ai.onnx"} for g in graphs.values())
    sessions = {g: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for g, m in graphs.items()}
    size = Manifest.load(exported.art).image_size
    x = np.random.default_rng(0).random((16, 3, size, size), dtype=np.float32)
    with Codec.load(exported.art, "onnxruntime") as codec:
        indices = codec.encode(x)
        served_indices = sessions["encoder"].run(None, {"images": x})[0]
        np.testing.assert_array_equal(served_indices, indices)
        np.testing.assert_allclose(sessions["decoder"].run(None, {"indices": indices})[0], codec.decode(indices),
                                   rtol=0, atol=1e-5)


def test_contract_round_trips_into_a_manifest(conv_exported, art64):
    for art in (conv_exported.art, art64.art):
        manifest = Manifest.load(art)
        back = manifest_from_contract(contract(manifest, "fp32"), "model 'fsq'")
        for field in ("model_id", "levels", "arch", "downsample", "image_size", "latent_dim", "code_width", "stages",
                      "io"):
            assert getattr(back, field) == getattr(manifest, field), field
        assert back.section("tiling") == manifest.section("tiling")
    with pytest.raises(FSQDeployError, match="no FSQ contract parameters"):
        manifest_from_contract({"other": "1"}, "model 'x'")


# -- TensorRT engines (stand-in plan bytes: only their files and sidecars are read here) -------------


def with_engines(art: Path, dst: Path, *, hardware_compatible: bool = False, max_batch: int = 128) -> Path:
    shutil.copytree(art, dst)
    names = []
    for graph in ("encoder", "decoder"):
        plan = dst / engine_file(graph, "fp16")
        plan.write_bytes(f"not a real {graph} engine".encode())
        sidecar = {"format": "fsqdeploy-tensorrt-engine", "tensorrt_version": "10.13.0.35", "cuda_version": "12.6",
                   "gpu_name": "NVIDIA H100", "compute_capability": "9.0", "precision": "fp16", "graph": graph,
                   "profile": {"min": 1, "opt": 64, "max": max_batch}, "onnx_file": f"{graph}.fp16.onnx",
                   "version_compatible": False, "hardware_compatible": hardware_compatible}
        sidecar_path(plan).write_text(json.dumps(sidecar))
        names += [plan.name, sidecar_path(plan).name]
    for graph in ("encoder", "decoder"):  # engines are built from the fp16 graphs: stand in with the fp32 ones
        shutil.copyfile(dst / f"{graph}.onnx", dst / f"{graph}.fp16.onnx")
        names.append(f"{graph}.fp16.onnx")
    add_files(dst, names)
    return dst


@pytest.mark.parametrize("hardware_compatible", [False, True])
def test_tensorrt_plans_are_mapped_per_compute_capability(art64, tmp_path, hardware_compatible):
    art = with_engines(art64.art, tmp_path / "art", hardware_compatible=hardware_compatible)
    repo = tmp_path / "repo"
    write_repository(art, repo, RepositoryOptions(precision="fp16", backend="tensorrt"))
    for graph in ("encoder", "decoder"):
        config = read_config(repo / f"fsq_{graph}" / "config.pbtxt")
        assert config.platform == "tensorrt_plan"
        assert config.max_batch_size == 128  # the engines' profile caps the default 256
        assert [g.kind for g in config.instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
        assert config_io(config) == graph_io(art / f"{graph}.fp16.onnx")
        file = "model.plan" if hardware_compatible else "model.sm90.plan"
        if hardware_compatible:
            assert config.default_model_filename == file and not config.cc_model_filenames
        else:
            assert dict(config.cc_model_filenames) == {"9.0": file} and not config.default_model_filename
        assert os.listdir(repo / f"fsq_{graph}" / "1") == [file]
        assert (repo / f"fsq_{graph}" / "1" / file).read_bytes() == (art / engine_file(graph, "fp16")).read_bytes()
    with pytest.raises(FSQDeployError, match="--max-batch-size 129 is above the engines' profile"):
        write_repository(art, tmp_path / "repo2", RepositoryOptions(precision="fp16", backend="tensorrt",
                                                                    max_batch_size=129))


# -- the command: bad input is one line, and nothing is written ------------------------------------


@pytest.mark.parametrize("args, match", [
    (["--backend", "tensorrt"], "has no TensorRT engine encoder.fp32.plan for the tensorrt_plan backend"),
    (["--precision", "int4"], "unknown precision 'int4'"),
    (["--backend", "onnx"], "unknown backend 'onnx'"),
    (["--precision", "fp16"], "has no encoder.fp16.onnx"),
    (["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
    (["--instances", "0"], "--instances must be at least 1"),
    (["--name", "a/b"], "model name 'a/b'"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, one_line_error, art32, tmp_path, args, match):
    code, _, err = cli("triton", art32.art, "--out", tmp_path / "repo", *args)
    one_line_error(code, err, match)
    assert os.listdir(tmp_path) == []


def test_existing_repository_needs_force(cli, one_line_error, art32, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "keep").write_text("mine")
    code, _, err = cli("triton", art32.art, "--out", repo)
    one_line_error(code, err, "already exists. Note: pass --force")
    assert os.listdir(repo) == ["keep"]
    code, out, err = cli("triton", art32.art, "--out", repo, "--force", "--max-batch-size", "32", "--instances", "2")
    assert code == 0, err
    assert "fsq_encoder" in out
    assert sorted(os.listdir(repo)) == ["fsq", "fsq_decoder", "fsq_encoder"]
    assert sorted(os.listdir(tmp_path)) == ["repo"]  # no temporary folder left beside it
    config = read_config(repo / "fsq_encoder" / "config.pbtxt")
    assert config.max_batch_size == 32 and config.instance_group[0].count == 2


def test_repository_never_replaces_its_artifact(cli, one_line_error, art_copy):
    before = sorted(os.listdir(art_copy))
    for out in (art_copy, art_copy.parent):
        code, _, err = cli("triton", art_copy, "--out", out, "--force")
        one_line_error(code, err, "would replace the artifact")
    assert sorted(os.listdir(art_copy)) == before


def test_client_without_a_server_is_one_line():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for protocol in ("http", "grpc"):
        with pytest.raises(FSQDeployError, match=r"cannot read model 'fsq' from 127\.0\.0\.1:\d+ .*Note: start"):
            TritonCodec(f"127.0.0.1:{port}", "fsq", protocol, timeout_s=5)
    with pytest.raises(FSQDeployError, match="unknown protocol 'tcp'"):
        TritonCodec(f"127.0.0.1:{port}", "fsq", "tcp")


# -- a real server ---------------------------------------------------------------------------------
# The tritonserver in the nvidia-pytriton wheel has the Python backend only, so the encoder and
# decoder run here as Python models (PYTHON_MODEL) on the repository's own model.onnx, with the
# repository's own configs otherwise (batching, warm-up, parameters, the ensemble). Its gotchas:
# the wheel's bundled libraries on LD_LIBRARY_PATH, the Python backend stub for the running Python
# copied into the backend folder, and a Python execution environment with numpy < 2 (else every
# output comes back empty: "cannot reshape array of size 0"); the stub takes the first python3 on
# PATH, so FSQDEPLOY_TRITON_PYTHON names the bin/ folder of such an environment, which also needs
# onnxruntime. docs/serving.md says how to make both.

PYTHON_MODEL = '''
import json
import os

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input, self.output = config["input"][0]["name"], config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
            y = self.session.run([self.output], {self.input: x})[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, y)]))
        return responses
'''
SERVER_START_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def triton_home() -> tuple[Path, Path]:
    """(the unpacked wheel's root, the execution environment's bin/), or skip saying what is missing."""
    home, python_bin = os.environ.get("FSQDEPLOY_TRITONSERVER"), os.environ.get("FSQDEPLOY_TRITON_PYTHON")
    if not home or not python_bin:
        pytest.skip("no Triton server here: set FSQDEPLOY_TRITONSERVER to an unpacked nvidia-pytriton wheel and "
                    "FSQDEPLOY_TRITON_PYTHON to a bin/ with numpy<2 and onnxruntime (docs/serving.md)")
    root, python_bin_path = Path(home), Path(python_bin)
    if not (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
        pytest.skip(f"FSQDEPLOY_TRITONSERVER={home} has no pytriton/tritonserver/bin/tritonserver")
    check = subprocess.run([str(python_bin_path / "python3"), "-c", "import numpy, onnxruntime; "
                            "assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__"],
                           capture_output=True, text=True, timeout=60)
    if check.returncode:
        pytest.skip(f"FSQDEPLOY_TRITON_PYTHON={python_bin} lacks numpy<2 or onnxruntime: {check.stderr.strip()[-200:]}")
    return root, python_bin_path


def python_twin(repo: Path, dst: Path) -> Path:
    """The repository with its encoder and decoder run by the Python backend, everything else as written."""
    shutil.copytree(repo, dst)
    for model in ("fsq_encoder", "fsq_decoder"):
        path = dst / model / "config.pbtxt"
        config = read_config(path)
        config.platform, config.backend = "", "python"
        config.ClearField("default_model_filename")
        path.write_text(text_format.MessageToString(config))
        (dst / model / "1" / "model.py").write_text(PYTHON_MODEL)
    return dst


@pytest.fixture(scope="module")
def server(triton_home, conv_exported, tmp_path_factory):
    """A Triton server on loopback ports serving the conv artifact's repository; stopped after the module."""
    import sys

    root, python_bin = triton_home
    work = tmp_path_factory.mktemp("triton")
    write_repository(conv_exported.art, work / "repo")
    repo = python_twin(work / "repo", work / "served")
    backends = work / "backends"
    shutil.copytree(root / "pytriton" / "tritonserver" / "backends", backends)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "pytriton" / "tritonserver" / "python_backend_stubs" / python
    shutil.copy(stub / "triton_python_backend_stub", backends / "python")
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    env = {"PATH": f"{python_bin}:/usr/bin:/bin", "LD_LIBRARY_PATH": str(root / "nvidia_pytriton.libs")}
    log = (work / "server.log").open("w")
    process = subprocess.Popen(
        [str(root / "pytriton" / "tritonserver" / "bin" / "tritonserver"), "--model-repository", str(repo),
         "--backend-directory", str(backends), "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--allow-metrics",
         "false", "--exit-on-error", "true"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        import tritonclient.http

        client = tritonclient.http.InferenceServerClient(f"127.0.0.1:{http}")
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tritonserver did not become ready: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        client.close()
        yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_codec_gives_the_local_indices(server, conv_exported, protocol):
    rng = np.random.default_rng(0)
    images = rng.random((6, 3, 64, 96), dtype=np.float32)  # 6 > max_batch_size 4: two requests
    photo = (rng.random((70, 50, 3)) * 255).astype(np.uint8)
    with Codec.load(conv_exported.art, "onnxruntime") as local, \
            TritonCodec(server[protocol], "fsq", protocol, levels=local.levels, model_id=local.model_id) as served:
        assert served.spatial and served.levels == local.levels and served.downsample == local.downsample
        indices = local.encode(images)
        np.testing.assert_array_equal(served.encode(images), indices)
        np.testing.assert_allclose(served.decode(indices), local.decode(indices), rtol=0, atol=1e-5)
        ensemble_indices, reconstruction = served.roundtrip(images)
        np.testing.assert_array_equal(ensemble_indices, indices)
        np.testing.assert_allclose(reconstruction, local.decode(indices), rtol=0, atol=1e-5)
        # Without ART no prior is served: fixed-rate files, which the local codec reads back the same.
        assert not served.entropy
        data = served.compress(photo)
        np.testing.assert_array_equal(local.decompress(data), served.decompress(data))
        tokens = served.tokenize(photo)  # a tokenizer served: the local tokens, and the local images back
        np.testing.assert_array_equal(tokens, local.tokenize(photo))
        np.testing.assert_array_equal(served.detokenize(tokens, photo.shape[:2]), local.decompress(data))
        part = served.decompress(data, (9, 20, 30, 41))  # a region: the served decoder on a window of the grid
        np.testing.assert_array_equal(part, local.decompress(data, (9, 20, 30, 41)))
        # With ART its prior too: the very bytes the local codec writes.
        with TritonCodec(server[protocol], "fsq", protocol, art=conv_exported.art) as served_with_art:
            assert served_with_art.entropy == (local.prior is not None)
            assert served_with_art.compress(photo) == local.compress(photo)


def test_served_codec_refuses_another_model(server, art64):
    with pytest.raises(FSQDeployError, match="serves model_id .* Note: connect to the server"):
        TritonCodec(server["http"], "fsq", model_id="0" * 64)
    with pytest.raises(FSQDeployError, match=r"serves model_id .*, '.*art64' has .* Note: serve the repository"):
        TritonCodec(server["http"], "fsq", art=art64.art)
    with pytest.raises(FSQDeployError, match="'fsq_encoder' .* is not the ensemble of an fsqdeploy repository"):
        TritonCodec(server["grpc"], "fsq_encoder", "grpc")
