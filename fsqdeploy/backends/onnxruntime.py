"""ONNX Runtime: the CPU provider, and the CUDA and TensorRT execution providers of onnxruntime-gpu.

Three backends share one runner. What they differ in is declared on each ``OnnxRuntimeBackend``:
the provider, the precisions, and which graphs it is handed (the CPU provider's tuned FP32 graphs,
fsqdeploy/backends/cpu_graphs.py; the TensorRT provider's inlined graphs; the files as exported).

On a GPU the first run must measure what its name says:
- the CUDA provider computes FP32 convolutions and GEMMs in TF32 unless told not to (ONNX Runtime's
  ``use_tf32`` defaults to 1), so it gets ``use_tf32=0``;
- the TensorRT provider has no TF32 option (its provider options list none), and TensorRT enables
  TF32 by default, so its "fp32" is declared reduced precision (``Backend.reduced``);
- ONNX Runtime silently retries a session whose provider failed to load on the next provider
  (TensorRT -> CUDA -> CPU), and again at ``run()``; sessions are created without that fallback
  and their provider is checked, so a fallback is an FSQDeployError, never a row timed under the
  wrong name.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` are two wheels of one package that cannot be installed
together; pyproject's ``cpu`` and ``gpu`` extras pick one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fsqdeploy.artifact import GRAPHS, graph_file
from fsqdeploy.backends.base import Backend, Runner
from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    import onnx

    from fsqdeploy.artifact import Manifest

ORT_PROVIDERS = {
    "onnxruntime": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
INSTALL_HINT = 'pip install "fsqdeploy[cpu]" (or "fsqdeploy[gpu]" on a machine with an NVIDIA GPU)'
GPU_INSTALL_HINT = 'pip uninstall onnxruntime, then pip install "fsqdeploy[gpu]", on a machine with an NVIDIA GPU'
# ONNX Runtime's CUDA provider runs FP32 convolutions and GEMMs in TF32 unless this is 0.
CUDA_OPTIONS = {"use_tf32": 0}


def import_onnxruntime() -> Any:
    """The onnxruntime module, or one FSQDeployError line that says which wheel to install."""
    try:
        import onnxruntime
    except ImportError:
        raise FSQDeployError(f"onnxruntime: ONNX Runtime is not installed. Note: {INSTALL_HINT}") from None
    return onnxruntime


def ort_session(model: str | Path | onnx.ModelProto) -> Any:
    """A plain CPU session with ONNX Runtime's default (full) graph optimizations, what users get:
    the parity gate, FP16 and INT8 records and check run the graphs exactly as exported."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def provider_list(backend: str, trt_fp16: bool = False, trt_cache_dir: str | Path | None = None) -> list[Any]:
    """The ``providers`` argument for ``backend``: names, with options where they matter."""
    providers: list[Any] = []
    for p in ORT_PROVIDERS[backend]:
        if p == "TensorrtExecutionProvider":
            opts: dict[str, Any] = {"trt_fp16_enable": trt_fp16}
            if trt_cache_dir:
                Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir),
                            trt_timing_cache_enable=True)
            providers.append((p, opts))
        elif p == "CUDAExecutionProvider":
            providers.append((p, dict(CUDA_OPTIONS)))
        else:
            providers.append(p)
    return providers


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class OnnxRuntimeRunner(Runner):
    """An InferenceSession over an ONNX file (or serialized model bytes from a loader).

    ``trt_fp16`` sets the TensorRT provider's FP16 flag, off by default: fsqdeploy's FP16 graphs
    carry their precision in their types (quantizer in FP32), and the flag would let TensorRT run
    any layer, the quantizer's included, in FP16."""

    def __init__(
        self,
        model: str | Path | Callable[[], bytes],
        backend: str = "onnxruntime",
        threads: int | None = None,
        trt_fp16: bool = False,
        trt_cache_dir: str | Path | None = None,
        precision: str | None = None,
    ):
        super().__init__()
        if backend not in ORT_PROVIDERS:
            raise ValueError(backend)
        self.model, self.backend, self.threads = model, backend, threads
        self.trt_fp16, self.trt_cache_dir = trt_fp16, trt_cache_dir
        self.name = backend
        # None: what the session computes in; "int8" for the QDQ graphs of fsqdeploy calibrate.
        self.precision = precision or ("fp16" if backend == "onnxruntime-trt" and trt_fp16 else "fp32")
        self.session: Any = None

    def _providers(self, ort: Any) -> list[Any]:
        wanted = ORT_PROVIDERS[self.backend][0]
        available = ort.get_available_providers()
        if wanted not in available:
            raise FSQDeployError(f"{self.backend}: ONNX Runtime has no {wanted} here (available: "
                                 f"{', '.join(available)}). Note: {GPU_INSTALL_HINT}")
        return provider_list(self.backend, self.trt_fp16, self.trt_cache_dir)

    def _activate(self) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if self.backend == "onnxruntime":
            # A codec runs two sessions in turn; spinning idle threads of one steal the cores from
            # the other (2-core machine, batch 256 round trip: 66 ms spinning, 50 ms not).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = self._providers(ort)
        wanted = ORT_PROVIDERS[self.backend][0]
        source = self.model() if callable(self.model) else str(self.model)
        try:
            # enable_fallback=0: a provider that fails raises here (and at run()) instead of ONNX
            # Runtime retrying quietly on the next one.
            session = ort.InferenceSession(source, options, providers=providers, enable_fallback=0)
        except Exception as e:  # onnxruntime's own exception types (Fail, EPFail, ...) have no common base
            raise FSQDeployError(f"{self.backend}: ONNX Runtime could not create a {wanted} session "
                                 f"({_first_line(e)}). Note: {self._fix()}") from None
        used = list(session.get_providers())
        if not used or used[0] != wanted:
            raise FSQDeployError(f"{self.backend}: ONNX Runtime fell back to {used[0] if used else 'no provider'} "
                                 f"({wanted} did not load). Note: {self._fix()}")
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def _fix(self) -> str:
        if self.backend == "onnxruntime":
            return "check the graph with fsqdeploy check ART"
        libraries = "CUDA, cuDNN and TensorRT" if self.backend == "onnxruntime-trt" else "CUDA and cuDNN"
        return f"install the {libraries} libraries this onnxruntime-gpu was built for (its log says which failed)"

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, dict(feed))
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self.session = None


@cache
def _inlined_graph_bytes(path: str, sha256: str) -> bytes:
    """The graph at ``path`` with its FSQ functions inlined (``sha256`` keys the cache)."""
    import onnx

    from fsqdeploy.onnxgraph.graph import inline_functions

    return inline_functions(onnx.load(path)).SerializeToString()


class OnnxRuntimeBackend(Backend):
    """One ONNX Runtime execution provider.

    ``tuned_cpu_graphs``: FP32 runs on the graphs cpu_graphs.py rewrites for the CPU kernels (the
    INT8 graphs were shaped that way before calibration). ``inline_graphs``: the provider reads the
    graphs with their FSQ functions inlined, as the native TensorRT route does: onnx-tensorrt binds a
    local function's formal input to an outer tensor of the same name, and FSQQuantize's ``latent``
    is also the encoder's. ``trt_cache``: the TensorRT provider's engine cache directory in ART."""

    def __init__(self, name: str, precisions: Sequence[str], *, gpu: bool, auto_rank: int,
                 reduced: Mapping[str, str] | None = None, tuned_cpu_graphs: bool = False,
                 inline_graphs: bool = False, trt_cache: str | None = None) -> None:
        super().__init__(name, precisions, gpu=gpu, auto_rank=auto_rank, reduced=reduced)
        self.provider = ORT_PROVIDERS[name][0]
        self.tuned_cpu_graphs, self.inline_graphs, self.trt_cache = tuned_cpu_graphs, inline_graphs, trt_cache

    def unavailable_reason(self) -> str | None:
        try:
            ort = import_onnxruntime()
        except FSQDeployError:
            return f"ONNX Runtime is not installed ({INSTALL_HINT})"
        if self.provider not in ort.get_available_providers():
            return f"ONNX Runtime has no {self.provider} here ({GPU_INSTALL_HINT})"
        return None

    def files(self, precision: str) -> tuple[str, ...]:
        return tuple(graph_file(g, precision) for g in GRAPHS)

    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        cache_dir = manifest.path(self.trt_cache) if self.trt_cache else None

        def make(model: str | Path | Callable[[], bytes]) -> Runner:
            return OnnxRuntimeRunner(model, self.name, threads, trt_cache_dir=cache_dir, precision=precision)

        if self.tuned_cpu_graphs and precision == "fp32":
            from fsqdeploy.backends.cpu_graphs import cpu_runners

            # the CPU provider has no performance hint: its tuning records none (hint is None)
            return cpu_runners(lambda source, count, hint: OnnxRuntimeRunner(source, self.name, count), manifest,
                               self.name, threads)
        encoder, decoder = (manifest.require(name, self.name) for name in self.files(precision))
        if self.inline_graphs:
            return (make(partial(_inlined_graph_bytes, str(encoder), manifest.sha256(encoder.name))),
                    make(partial(_inlined_graph_bytes, str(decoder), manifest.sha256(decoder.name))))
        return make(encoder), make(decoder)


# Precision lives in the graph: int8 runs the QDQ graphs of fsqdeploy calibrate, fp16 the strongly
# typed encoder.fp16.onnx (quantizer in FP32) with TensorRT's FP16 flag off.
ONNXRUNTIME = OnnxRuntimeBackend("onnxruntime", ("fp32", "int8"), gpu=False, auto_rank=50, tuned_cpu_graphs=True)
ONNXRUNTIME_CUDA = OnnxRuntimeBackend("onnxruntime-cuda", ("fp32",), gpu=True, auto_rank=30)
ONNXRUNTIME_TRT = OnnxRuntimeBackend(
    "onnxruntime-trt", ("fp32", "fp16"), gpu=True, auto_rank=20, inline_graphs=True, trt_cache="trt_cache",
    reduced={"fp32": "TensorRT computes FP32 in TF32 by default and its ONNX Runtime provider has no option "
                     "to turn that off"},
)
