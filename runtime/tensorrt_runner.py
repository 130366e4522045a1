"""Native TensorRT engines: load (after checking the sidecar), run on a CUDA stream, chunk batches.

Device buffers are torch CUDA tensors, so no extra CUDA binding package is needed. Inputs and
outputs are bound by name and run with ``execute_async_v3`` on torch's current stream; when the
same batch shape repeats, the launch is captured once into a CUDA graph and replayed. Batches
above the engine profile's maximum are split into chunks.

Nothing here imports tensorrt or touches a GPU until a runner is activated. This module cannot be
executed on machines without an NVIDIA GPU; it is type-checked against ``tensorrt-stubs`` in CI
and exercised by the tests marked ``gpu``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.runtime.runners import Runner

INSTALL_HINT = 'pip install "fsqdeploy[trt]"'


def import_tensorrt() -> Any:
    """The tensorrt module, or a clear error. ``tensorrt-stubs`` installed without its ``tensorrt``
    dependency makes ``import tensorrt`` succeed as an empty namespace package, so a usable
    TensorRT is recognised by its API, never by a bare import."""
    try:
        import tensorrt as trt
    except ImportError:
        raise FSQDeployError(f"tensorrt: TensorRT is not installed. Note: {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
        raise FSQDeployError(
            f"tensorrt: the installed 'tensorrt' package has no TensorRT API (only type stubs?). Note: {INSTALL_HINT}"
        )
    return trt


def cuda_unavailable_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    return None


def tensorrt_unavailable_reason() -> str | None:
    try:
        import_tensorrt()
    except FSQDeployError as e:
        return str(e).removeprefix("tensorrt: ")
    return cuda_unavailable_reason()


def require_tensorrt_and_gpu() -> Any:
    trt = import_tensorrt()
    reason = cuda_unavailable_reason()
    if reason:
        raise FSQDeployError(f"tensorrt: TensorRT is installed but {reason}. Note: engines build and run on NVIDIA GPUs")
    return trt


# -- sidecars -------------------------------------------------------------------------------------


def current_device_facts() -> dict[str, Any]:
    """What an engine is tied to: TensorRT and CUDA versions, GPU name and compute capability."""
    import torch

    trt = import_tensorrt()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "tensorrt_version": trt.__version__,
        "cuda_version": torch.version.cuda,
        "gpu_name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
    }


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def check_sidecar(engine: Path, facts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Refuse an engine built for another GPU or TensorRT version, with a message that says to rebuild
    (instead of TensorRT's deserialization error). Portable engines relax the checks they allow."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise FSQDeployError(f"tensorrt: '{path}' is missing. Note: rebuild with fsqdeploy export --trt")
    try:
        sidecar = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FSQDeployError(f"tensorrt: '{path}' is not valid JSON. Note: rebuild with fsqdeploy export --trt") from None
    facts = dict(facts or current_device_facts())
    version_compatible = bool(sidecar.get("version_compatible"))
    hardware_compatible = bool(sidecar.get("hardware_compatible"))
    built, here = str(sidecar.get("tensorrt_version", "?")), str(facts["tensorrt_version"])
    same_version = built == here or (version_compatible and built.split(".")[0] == here.split(".")[0])
    if not same_version:
        raise FSQDeployError(
            f"tensorrt: '{engine.name}' was built with TensorRT {built}, this is {here}. "
            "Note: rebuild with fsqdeploy export --trt (or build with --version-compatible)"
        )
    if not hardware_compatible and sidecar.get("compute_capability") != facts["compute_capability"]:
        raise FSQDeployError(
            f"tensorrt: '{engine.name}' was built for {sidecar.get('gpu_name')} (sm {sidecar.get('compute_capability')}), "
            f"this GPU is {facts['gpu_name']} (sm {facts['compute_capability']}). "
            "Note: rebuild with fsqdeploy export --trt on this GPU (or build with --hardware-compatible)"
        )
    return sidecar


def engine_paths(art: Path, manifest: Mapping[str, Any], precision: str) -> tuple[Path, Path]:
    """ART/encoder.<precision>.plan and ART/decoder.<precision>.plan, as listed in the manifest."""
    names = [f"encoder.{precision}.plan", f"decoder.{precision}.plan"]
    missing = [n for n in names if n not in manifest["files"]]
    if missing:
        raise FSQDeployError(
            f"tensorrt: '{art}' has no {missing[0]}. Note: build it with fsqdeploy export RUN --out {art} --trt "
            f"--precision {precision} on this GPU"
        )
    return art / names[0], art / names[1]


# -- the runner -----------------------------------------------------------------------------------


class TensorRTRunner(Runner):
    """One engine with one input and one output, bound by name."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, use_cuda_graphs: bool = True):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.use_cuda_graphs = use_cuda_graphs
        self.engine: Any = None
        self.context: Any = None
        self._graphs: dict[tuple[int, ...], Any] = {}

    def _activate(self) -> None:
        trt = require_tensorrt_and_gpu()
        import torch

        sidecar = check_sidecar(self.engine_path)
        self.precision = str(sidecar.get("precision", "fp32"))
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if sidecar.get("version_compatible"):
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise FSQDeployError(f"tensorrt: could not load '{self.engine_path}'. Note: rebuild it on this GPU")
        self.engine, self.runtime = engine, runtime
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise FSQDeployError(f"tensorrt: '{self.engine_path.name}' must have one input and one output")
        _, _, max_shape = engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.max_batch = int(max_shape[0])
        to_torch = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        self.dtypes = {n: to_torch[engine.get_tensor_dtype(n)] for n in names}
        self.stream = torch.cuda.Stream()

    def _run_chunk(self, x: Any) -> Any:
        """Run one chunk already on the GPU; returns a GPU tensor (graph-captured when it repeats)."""
        import torch

        name_in, name_out = self.inputs[0], self.outputs[0]
        key = tuple(x.shape)
        if self.use_cuda_graphs and key in self._graphs:
            graph, static_in, static_out = self._graphs[key]
            static_in.copy_(x)
            graph.replay()
            return static_out
        self.context.set_input_shape(name_in, key)
        out = torch.empty(tuple(self.context.get_tensor_shape(name_out)), dtype=self.dtypes[name_out], device="cuda")
        static_in = x.clone()
        self.context.set_tensor_address(name_in, static_in.data_ptr())
        self.context.set_tensor_address(name_out, out.data_ptr())
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)  # the first run also warms up
            if self.use_cuda_graphs:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self.context.execute_async_v3(self.stream.cuda_stream)
                self._graphs[key] = (graph, static_in, out)
        self.stream.synchronize()
        return out

    def infer_torch(self, x: Any) -> Any:
        """GPU tensor in, GPU tensor out (no host copies): what bench times as 'device' latency."""
        import torch

        x = x.to(self.dtypes[self.inputs[0]])
        parts = [self._run_chunk(x[i : i + self.max_batch]).clone() for i in range(0, len(x), self.max_batch)]
        torch.cuda.current_stream().wait_stream(self.stream)
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feed[self.inputs[0]])).cuda()
        return {self.outputs[0]: self.infer_torch(x).cpu().numpy()}

    def _deactivate(self) -> None:
        self._graphs.clear()
        self.context = self.engine = None
