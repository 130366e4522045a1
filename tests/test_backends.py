"""The backend registry: what each backend declares, "auto" choosing only what can run this artifact,
a backend added by one register() call, ONNX Runtime's GPU providers as a first GPU run meets them
(with a stand-in onnxruntime module), and the ONNX Runtime codec without PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from fsqdeploy import backends
from fsqdeploy.artifact import GRAPHS, PRECISIONS, Manifest, add_files, engine_file, graph_file, sidecar_path
from fsqdeploy.backends import REGISTRY, Backend, Runner, get_backend, register, unregister
from fsqdeploy.backends.onnxruntime import OnnxRuntimeRunner, ort_session
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import sha256_file
from fsqdeploy.onnxgraph.graph import DOMAIN
from fsqdeploy.runtime.codec import Codec

IMAGES = np.random.default_rng(0).random((6, 3, 64, 64), dtype=np.float32)

# -- what the registry holds -------------------------------------------------------------------------


def test_the_registry_lists_every_runtime_with_its_precisions():
    assert list(REGISTRY) == ["torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "tensorrt"]
    assert backends.AUTO_ORDER == ("tensorrt", "onnxruntime-trt", "onnxruntime-cuda", "openvino", "onnxruntime",
                                   "torch")
    assert {n: b.precisions for n, b in REGISTRY.items()} == {
        "torch": ("fp32",), "onnxruntime": ("fp32", "int8"), "onnxruntime-cuda": ("fp32",),
        "onnxruntime-trt": ("fp32", "fp16"), "openvino": ("fp32", "bf16"), "tensorrt": ("fp32", "fp16", "int8")}
    assert all(set(b.precisions) <= set(PRECISIONS) and b.precisions[0] == "fp32" for b in REGISTRY.values())
    gpu = {n for n, b in REGISTRY.items() if b.gpu}
    assert gpu == {"onnxruntime-cuda", "onnxruntime-trt", "tensorrt"}
    assert {n: b.clock for n, b in REGISTRY.items()} == {n: "cuda-events" if n in gpu else "wall" for n in REGISTRY}
    # TensorRT's ONNX Runtime provider cannot turn TF32 off: its "fp32" is labelled reduced, no other is
    assert {(n, p) for n, b in REGISTRY.items() for p in b.reduced} == {("onnxruntime-trt", "fp32")}
    assert "TF32" in get_backend("onnxruntime-trt").reduced["fp32"]


def test_unknown_names_and_precisions_are_one_line():
    with pytest.raises(FSQDeployError, match="backends: unknown backend 'tflite'. Note: use one of torch, "
                                             "onnxruntime, onnxruntime-cuda, onnxruntime-trt, openvino, tensorrt$"):
        get_backend("tflite")
    openvino = get_backend("openvino")
    assert openvino.precision_problem("int8") == "backend openvino does not run int8 (it runs fp32, bf16)"
    with pytest.raises(ValueError, match="subset"):
        ToyBackend("toy", ("fp8",))
    with pytest.raises(ValueError, match="already registered"):
        register(ToyBackend("onnxruntime", ("fp32",)))


def test_importing_the_registry_imports_no_runtime():
    code = ("import sys, fsqdeploy.backends, fsqdeploy.runtime.codec; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnx', 'onnxruntime', 'openvino', "
            "'tensorrt'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_help_lists_the_registry(cli):
    for command in ("compress", "decompress"):
        code, out, _ = cli(command, "--help")
        assert code == 0
        for name in REGISTRY:
            assert name in out


# -- a backend is one class and one register() call --------------------------------------------------
# ToyRunner + ToyBackend are a whole backend: 17 lines. ONNX Runtime's CPU session on the graphs as
# exported, nothing tuned.


class ToyRunner(Runner):
    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def _activate(self) -> None:
        self.session = ort_session(self.path)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feed))))


class ToyBackend(Backend):
    def unavailable_reason(self) -> str | None:
        return None

    def files(self, precision: str) -> tuple[str, ...]:
        return tuple(graph_file(g) for g in GRAPHS)

    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        return ToyRunner(manifest.path(self.files(precision)[0])), ToyRunner(manifest.path(self.files(precision)[1]))


@pytest.fixture
def registered():
    """register(backend) for one test; unregistered afterwards whatever happens."""
    names: list[str] = []

    def add(backend: Backend) -> Backend:
        names.append(backend.name)
        return register(backend)

    yield add
    for name in names:
        unregister(name)
    assert list(REGISTRY)[-1] == "tensorrt"


def test_a_registered_backend_runs_the_codec_and_auto_prefers_it(art64, registered):
    registered(ToyBackend("toy", ("fp32",), auto_rank=0))
    assert "toy" in REGISTRY and backends.AUTO_ORDER[0] == "toy"
    with Codec.load(art64.art) as toy, Codec.load(art64.art, "onnxruntime") as ort:
        assert toy.backend == "toy" and toy.auto_skipped == []
        indices = toy.encode(IMAGES)
        assert np.array_equal(indices, ort.encode(IMAGES))
        assert np.abs(toy.decode(indices) - ort.decode(indices)).max() < 1e-5
    with pytest.raises(FSQDeployError, match=r"^codec: backend toy does not run fp16 \(it runs fp32\)$"):
        Codec.load(art64.art, "toy", precision="fp16")


def test_unregister_takes_it_out_of_auto(registered):
    register(ToyBackend("gone", ("fp32",), auto_rank=0))
    assert backends.AUTO_ORDER[0] == "gone"
    unregister("gone")
    assert "gone" not in REGISTRY and "gone" not in backends.AUTO_ORDER


class BrokenRunner(Runner):
    def _activate(self) -> None:
        raise FSQDeployError("broken: the session did not load. Note: reinstall it")

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("never activated")


class BrokenBackend(ToyBackend):
    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        return BrokenRunner(), BrokenRunner()


class NeedsPlansBackend(ToyBackend):
    def files(self, precision: str) -> tuple[str, ...]:
        return tuple(engine_file(g, precision) for g in GRAPHS)


class AbsentBackend(ToyBackend):
    def unavailable_reason(self) -> str | None:
        return "absent is not installed (pip install absent)"


def test_auto_falls_through_what_is_absent_lacks_files_or_fails_to_load(art64, registered, caplog):
    caplog.set_level("INFO", logger="fsqdeploy")
    registered(AbsentBackend("absent", ("fp32",), auto_rank=-3))
    registered(NeedsPlansBackend("plans", ("fp32",), auto_rank=-2))
    registered(BrokenBackend("broken", ("fp32",), auto_rank=-1))
    registered(ToyBackend("toy", ("fp32",), auto_rank=0))
    with Codec.load(art64.art) as codec:
        assert codec.backend == "toy"
    assert codec.auto_skipped == [
        ("absent", "absent is not installed (pip install absent)"),
        ("plans", f"'{art64.art}' has no encoder.fp32.plan. Note: build it on this GPU with fsqdeploy export ART "
                  "--trt --precision fp32"),
        ("broken", "broken: the session did not load. Note: reinstall it"),
    ]
    assert "auto -> toy; skipped absent: absent is not installed" in caplog.text
    with pytest.raises(FSQDeployError, match="^broken: the session did not load"):
        Codec.load(art64.art, "broken")


def test_auto_says_why_nothing_runs(art64):
    if _bf16_runs():
        pytest.skip("OpenVINO runs bf16 on this CPU")
    with pytest.raises(FSQDeployError, match=r"^codec: no backend can run '.*' at bf16 here \(tensorrt: .*; "
                                             r"openvino: .*; torch: backend torch does not run bf16 .*\)\. Note"):
        Codec.load(art64.art, precision="bf16")


def _bf16_runs() -> bool:
    if get_backend("openvino").unavailable_reason():
        return False
    from fsqdeploy.backends.openvino import openvino_supports_bf16

    return openvino_supports_bf16()


# -- TensorRT: "auto" checks the artifact's engines and sidecars, not only that TensorRT is installed --

FACTS = {"tensorrt_version": "10.8.0.43", "cuda_version": "12.6", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


@pytest.fixture
def tensorrt_here(monkeypatch):
    """TensorRT and a GPU as a TensorRT machine reports them (nothing is loaded: no runner activates)."""
    import fsqdeploy.backends.tensorrt as trt_backend

    monkeypatch.setattr(trt_backend, "tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_backend, "current_device_facts", lambda: dict(FACTS))


def test_auto_skips_tensorrt_when_the_artifact_has_no_engines(art64, tensorrt_here):
    tensorrt = get_backend("tensorrt")
    assert tensorrt.unavailable_reason() is None
    assert tensorrt.artifact_problem(Manifest.load(art64.art), "fp32") == (
        f"'{art64.art}' has no encoder.fp32.plan. Note: build it on this GPU with fsqdeploy export {art64.art} "
        "--trt --precision fp32")
    with Codec.load(art64.art) as codec:
        assert codec.backend != "tensorrt"
        assert codec.auto_skipped[0] == ("tensorrt", tensorrt.artifact_problem(codec.manifest, "fp32"))


def test_auto_skips_engines_built_for_another_gpu(art_copy, tensorrt_here):
    for graph in GRAPHS:
        engine = art_copy / engine_file(graph, "fp32")
        engine.write_bytes(b"serialized engine")
        sidecar_path(engine).write_text(json.dumps({
            **FACTS, "compute_capability": "8.6", "gpu_name": "NVIDIA A10", "precision": "fp32",
            "profile": {"min": 1, "opt": 64, "max": 256}, "engine_sha256": sha256_file(engine)}))
    add_files(art_copy, [engine_file(g, "fp32") for g in GRAPHS])
    problem = get_backend("tensorrt").artifact_problem(Manifest.load(art_copy), "fp32")
    assert problem and problem.startswith("'encoder.fp32.plan' was built for NVIDIA A10 (sm 8.6), this GPU is "
                                          "NVIDIA L4 (sm 8.9)")
    with Codec.load(art_copy) as codec:
        assert codec.auto_skipped[0] == ("tensorrt", problem)
    with pytest.raises(FSQDeployError, match=r"^codec: 'encoder.fp32.plan' was built for NVIDIA A10"):
        Codec.load(art_copy, "tensorrt")


# -- ONNX Runtime's GPU providers, with a stand-in onnxruntime module ---------------------------------


def fake_onnxruntime(monkeypatch, lands_on: str | None = None, fails: Exception | None = None) -> list[Any]:
    """onnxruntime as onnxruntime-gpu on a GPU machine presents itself: every provider listed. Each
    session runs on the real CPU provider and reports ``lands_on`` as its provider (None: the one
    asked for), as ONNX Runtime does after falling back; ``fails``: session creation raises it.
    Returns the sessions' (source, providers, kwargs) as they were asked for."""
    import onnxruntime as real

    created: list[Any] = []

    class Session:
        def __init__(self, source: Any, options: Any, providers: list[Any], **kwargs: Any):
            created.append((source, providers, kwargs))
            if fails is not None:
                raise fails
            self._real = real.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
            self._providers = [lands_on or first, "CPUExecutionProvider"]

        def get_providers(self) -> list[str]:
            return self._providers

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    fake = types.ModuleType("onnxruntime")
    fake.SessionOptions = real.SessionOptions  # type: ignore[attr-defined]
    fake.GraphOptimizationLevel = real.GraphOptimizationLevel  # type: ignore[attr-defined]
    fake.get_available_providers = lambda: [  # type: ignore[attr-defined]
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    fake.InferenceSession = Session  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    return created


def test_cuda_provider_runs_fp32_without_tf32(monkeypatch, art64):
    created = fake_onnxruntime(monkeypatch)
    with Codec.load(art64.art, "onnxruntime-cuda") as cuda, Codec.load(art64.art, "torch") as reference:
        assert np.array_equal(cuda.encode(IMAGES), reference.encode(IMAGES))
    source, providers, kwargs = created[0]
    assert source == str(art64.art / "encoder.onnx")  # the graph as exported
    assert providers == [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    assert kwargs == {"enable_fallback": 0}


def test_tensorrt_provider_gets_inlined_graphs_and_no_fp16_flag(monkeypatch, art_copy):
    created = fake_onnxruntime(monkeypatch)
    with Codec.load(art_copy, "onnxruntime-trt", precision="fp32") as codec:
        assert codec.precision == "fp32" and codec.encoder.precision == "fp32"
        codec.encode(IMAGES)
    source, providers, kwargs = created[0]
    assert isinstance(source, bytes)
    model = onnx.load_model_from_string(source)
    assert not model.functions and all(n.domain != DOMAIN for n in model.graph.node)
    trt, cuda, cpu = providers
    assert trt == ("TensorrtExecutionProvider", {
        "trt_fp16_enable": False, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(art_copy / "trt_cache"),
        "trt_timing_cache_enable": True})
    assert cuda == ("CUDAExecutionProvider", {"use_tf32": 0}) and cpu == "CPUExecutionProvider"
    assert kwargs == {"enable_fallback": 0}
    assert OnnxRuntimeRunner("x.onnx", "onnxruntime-trt").trt_fp16 is False  # the direct default too


@pytest.mark.parametrize("backend, wanted", [("onnxruntime-trt", "TensorrtExecutionProvider"),
                                             ("onnxruntime-cuda", "CUDAExecutionProvider")])
def test_a_provider_fallback_is_refused_not_timed_under_its_name(monkeypatch, art_copy, backend, wanted):
    fake_onnxruntime(monkeypatch, lands_on="CPUExecutionProvider")
    with pytest.raises(FSQDeployError, match=f"^{backend}: ONNX Runtime fell back to CPUExecutionProvider "
                                             f"\\({wanted} did not load\\)\\. Note: install the CUDA"):
        Codec.load(art_copy, backend)


def test_a_provider_that_fails_to_load_is_one_line(monkeypatch, art_copy):
    fake_onnxruntime(monkeypatch, fails=RuntimeError("libnvinfer.so.10: cannot open shared object file\nmore"))
    with pytest.raises(FSQDeployError, match=r"^onnxruntime-trt: ONNX Runtime could not create a "
                                             r"TensorrtExecutionProvider session \(libnvinfer.so.10: cannot open "
                                             r"shared object file\)\. Note: install the CUDA, cuDNN and TensorRT"):
        Codec.load(art_copy, "onnxruntime-trt", precision="fp32")


def test_auto_skips_providers_that_fell_back(monkeypatch, art_copy):
    fake_onnxruntime(monkeypatch, lands_on="CPUExecutionProvider")
    with Codec.load(art_copy) as codec:
        skipped = dict(codec.auto_skipped)
        assert codec.backend in ("openvino", "onnxruntime")
    for backend in ("onnxruntime-trt", "onnxruntime-cuda"):
        assert skipped[backend].startswith(f"{backend}: ONNX Runtime fell back to CPUExecutionProvider")


def test_without_onnxruntime_each_entry_point_says_what_to_install(monkeypatch, art64):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    for name in ("onnxruntime", "onnxruntime-cuda", "onnxruntime-trt"):
        assert get_backend(name).unavailable_reason() == (
            'ONNX Runtime is not installed (pip install "fsqdeploy[cpu]" (or "fsqdeploy[gpu]" on a machine with an '
            'NVIDIA GPU))')
    with pytest.raises(FSQDeployError, match=r'^codec: backend onnxruntime cannot run here: ONNX Runtime is not '
                                             r'installed \(pip install "fsqdeploy\[cpu\]"'):
        Codec.load(art64.art, "onnxruntime")
    with pytest.raises(FSQDeployError, match=r'^onnxruntime: ONNX Runtime is not installed. Note: pip install '
                                             r'"fsqdeploy\[cpu\]"'):
        ort_session(art64.art / "encoder.onnx")


def test_export_without_onnxruntime_is_one_line_and_writes_nothing(run32, tmp_path):
    code = ("import sys; sys.modules['onnxruntime'] = None; from fsqdeploy.cli import main; "
            "main(['export', sys.argv[1], '--out', sys.argv[2]])")
    proc = subprocess.run([sys.executable, "-c", code, str(run32), str(tmp_path / "art")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'fsqdeploy: error: onnxruntime: ONNX Runtime is not installed. Note: pip install "fsqdeploy[cpu]" (or '
        '"fsqdeploy[gpu]" on a machine with an NVIDIA GPU)']
    assert list(tmp_path.iterdir()) == []


# -- the ONNX Runtime codec needs no PyTorch -------------------------------------------------------

WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # from here on, `import torch` raises ImportError
import numpy as np
from fsqdeploy.runtime import Codec

art, images, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
with Codec.load(art, "onnxruntime") as codec:
    indices = codec.encode(images)
    decoded = codec.decode(indices)
    photo = np.arange(70 * 90 * 3, dtype=np.uint32).reshape(70, 90, 3).astype(np.uint8)
    data = codec.compress(photo)
    restored = codec.decompress(data)
with Codec.load(art) as auto:
    chosen = auto.backend
np.savez(out, indices=indices, decoded=decoded, data=np.frombuffer(data, np.uint8), restored=restored,
         chosen=chosen)
"""


def test_the_onnxruntime_codec_runs_without_pytorch(art32, tmp_path):
    images = np.random.default_rng(1).random((20, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(art32.art), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npz")
    with Codec.load(art32.art, "onnxruntime") as codec:
        assert np.array_equal(got["indices"], codec.encode(images))
        assert np.array_equal(got["decoded"], codec.decode(got["indices"]))
        photo = np.arange(70 * 90 * 3, dtype=np.uint32).reshape(70, 90, 3).astype(np.uint8)
        assert got["data"].tobytes() == codec.compress(photo)
        assert np.array_equal(got["restored"], codec.decompress(codec.compress(photo)))
    assert str(got["chosen"]) not in ("torch", "")  # "auto" found a runtime that needs no PyTorch


# -- dynamic height and width (spatial models) --------------------------------------------------------


def test_tensorrt_runner_takes_dynamic_height_and_width(tmp_path, fake_trt, fake_cuda):
    """A spatial engine's input is [batch, 3, height, width], all dynamic within its profile: the
    runner keys contexts by the whole input shape, rebinds its buffers when the size changes and
    refuses a size outside the profile in one line (stand-in tensorrt; its output here is static)."""
    import torch
    from trt_standin import expected_output, write_engine

    from fsqdeploy.backends.tensorrt import TensorRTRunner

    trt = fake_trt()
    trt.cuda = fake_cuda()
    plan = json.loads(trt.plan({"images": ("FLOAT", [-1, 3, 4, 4])}, {"indices": ("INT32", [-1, 6])}, (1, 2, 4)))
    plan["io"][0][3] = [-1, 3, -1, -1]
    plan["profile"]["images"] = [[1, 3, 8, 8], [2, 3, 16, 16], [4, 3, 32, 48]]
    engine = write_engine(tmp_path / "encoder.fp32.plan", json.dumps(plan).encode(), trt.facts)
    for graphs in (True, False):
        with TensorRTRunner(engine, use_cuda_graphs=graphs) as runner:
            assert runner.dynamic_rest and runner.input_shape == (-1, 3, -1, -1)
            for shape in ((2, 3, 8, 16), (3, 3, 32, 8), (2, 3, 8, 16), (6, 3, 16, 48)):
                x = torch.from_numpy(np.random.default_rng(sum(shape)).random(shape, dtype=np.float32))
                out = runner.infer_torch(x).numpy()
                assert np.array_equal(out, expected_output(x.numpy(), (6,), np.int32))
            if graphs:  # one context per input shape, most recent last; 6 images ran as 4 + 2
                assert list(runner._slots) == [(3, 3, 32, 8), (2, 3, 8, 16), (4, 3, 16, 48), (2, 3, 16, 48)]
            else:
                (slot,) = runner._slots.values()
                assert slot.rest == (3, 16, 48) and tuple(slot.input.shape) == (4, 3, 16, 48)  # bound at 4, kept
            with pytest.raises(FSQDeployError, match=r"^tensorrt: input shape \[1, 3, 64, 8\] is outside the "
                                                     r"engine profile \[1, 3, 8, 8\]\.\.\[4, 3, 32, 48\]"):
                runner.infer_torch(torch.zeros(1, 3, 64, 8))
