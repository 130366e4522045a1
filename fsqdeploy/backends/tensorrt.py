"""Native TensorRT engines: load (after checking the sidecar), run on a CUDA stream, chunk batches.

Device buffers are torch CUDA tensors, so no extra CUDA binding package is needed. Inputs and
outputs are bound by name and run with ``execute_async_v3`` on the runner's stream, from static
input and output buffers. With CUDA graphs (the default) each batch size gets its own execution
context: the first run of a size executes directly, and when the size repeats, the launch is
captured once into a CUDA graph and replayed from then on (a few recent sizes are kept). Without,
one execution context serves the whole profile. Batches above the engine profile's maximum are
split into chunks; a batch below its minimum is padded (rows are independent).

Before anything is deserialized, the engine's sidecar (``<engine>.json``, written by
``fsqdeploy export --trt``) is checked against this machine: an engine built by another TensorRT
version or for another GPU is refused with a message that says to rebuild, instead of TensorRT's
deserialization error. Portable engines (``--version-compatible``, ``--hardware-compatible``) relax
exactly the checks they allow.

Nothing here imports tensorrt or touches a GPU until a runner is activated. CI type-checks it
against ``tensorrt-stubs``, the CPU tests drive the runner against a strict stand-in tensorrt with
CPU buffers (tests/test_tensorrt_runner.py), and the tests marked ``gpu`` run real engines.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fsqdeploy.artifact import ENGINE_PRECISIONS, GRAPHS, Manifest, engine_file, sidecar_path
from fsqdeploy.backends.base import Backend, Runner
from fsqdeploy.backends.tensorrt_env import (
    HARDWARE_COMPATIBLE_MIN_MAJOR,
    current_device_facts,
    dims_tuple,
    require_tensorrt_and_gpu,
    tensorrt_unavailable_reason,
    version_tuple,
)
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import sha256_file

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

REBUILD = "Note: rebuild it with fsqdeploy export RUN --out ART --trt on this machine"
SIDECAR_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "precision", "profile")

# Version-compatible engines (BuilderFlag.VERSION_COMPATIBLE), as TensorRT documents them:
# - "Version compatibility is supported from version 8.6; the plan must be built with a version at
#   least 8.6 or higher, and the runtime must be 8.6 or higher" (TensorRT 10.16 docs, Version
#   Compatibility);
# - within a major version, on the version that built the plan or any later one: "engines built
#   with version compatibility enabled using TensorRT 11.0 will be compatible with TensorRT 11.1
#   and later 11.x versions", and never on an older runtime (TensorRT 11.1 docs, Engine Compatibility);
# - across major versions only the documented pairs: "engines built with TensorRT 8 work with
#   TensorRT 9 and TensorRT 10 runtimes" (10.16, Version Compatibility), "engines built with
#   TensorRT 10 work with TensorRT 11" (11.1, Engine Compatibility); "No other combination across
#   major versions is supported. For example, a TensorRT 8 engine cannot run with a TensorRT 11
#   runtime" (11.4 Support Matrix, Engine Portability).
# runtime/cpp/src/manifest.cpp mirrors these (version_compatible_runs): change both together.
VERSION_COMPATIBLE_SINCE = (8, 6)
VERSION_COMPATIBLE_LATER_MAJORS: dict[int, tuple[int, ...]] = {8: (9, 10), 10: (11,)}


def version_compatible_runs(built: tuple[int, ...], here: tuple[int, ...]) -> bool:
    """Whether TensorRT ``here`` may run a version-compatible engine built by TensorRT ``built``
    (both as ``version_tuple`` gives them: (major, minor, patch, build), compared part by part).

    The rule, exactly (sources above): both versions are known (non-empty) and at least 8.6; then
    either the majors are equal and ``here >= built`` (tuple order: a runtime of the same major
    that is the same or newer, down to the build number), or ``here``'s major is one of
    ``VERSION_COMPATIBLE_LATER_MAJORS[built's major]`` (8 -> 9 or 10, 10 -> 11; any minor of it).
    Everything else is refused: an older runtime, an older major, any other crossing (8 -> 11,
    9 -> 10, 11 -> 12 until TensorRT documents it)."""
    if not built or not here or built < VERSION_COMPATIBLE_SINCE or here < VERSION_COMPATIBLE_SINCE:
        return False
    if here[0] == built[0]:
        return here >= built
    return here[0] in VERSION_COMPATIBLE_LATER_MAJORS.get(built[0], ())


def version_compatible_runtimes(built: str) -> str:
    """Where a version-compatible engine built by TensorRT ``built`` runs, for messages:
    "TensorRT 10.x from 10.9.0.1 on or TensorRT 11.x"; "TensorRT 8.x from 8.6.1 on, TensorRT 9.x or
    TensorRT 10.x"; "no TensorRT (version compatibility starts with TensorRT 8.6)" below 8.6;
    "TensorRT ?.x from <built> on" when ``built`` is not a version."""
    b = version_tuple(built)
    if not b:
        return f"TensorRT ?.x from {built} on"
    if b < VERSION_COMPATIBLE_SINCE:
        return "no TensorRT (version compatibility starts with TensorRT 8.6)"
    later = VERSION_COMPATIBLE_LATER_MAJORS.get(b[0], ())
    places = [f"TensorRT {b[0]}.x from {built} on", *(f"TensorRT {m}.x" for m in later)]
    return places[0] if len(places) == 1 else f"{', '.join(places[:-1])} or {places[-1]}"


# -- sidecars -------------------------------------------------------------------------------------


def check_sidecar(engine: Path, facts: Mapping[str, Any] | None = None, precision: str | None = None
                  ) -> dict[str, Any]:
    """Refuse an engine built for another GPU or TensorRT version (or not the engine its sidecar
    describes) with a message that says to rebuild, instead of TensorRT's deserialization error.

    Engines built with ``--version-compatible`` load where ``version_compatible_runs`` says (the
    same or a later TensorRT of the same major, or the next major TensorRT documents: 10 -> 11);
    with ``--hardware-compatible`` on any GPU of compute capability 8.0 or newer. ``facts``
    defaults to this machine's (``current_device_facts``)."""
    engine = Path(engine)
    path = sidecar_path(engine)
    if not engine.is_file():
        raise FSQDeployError(f"tensorrt: '{engine}' is missing. {REBUILD}")
    if not path.is_file():
        raise FSQDeployError(f"tensorrt: '{path}' is missing. {REBUILD}")
    try:
        sidecar = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FSQDeployError(f"tensorrt: '{path}' is not valid JSON. {REBUILD}") from None
    missing = [k for k in SIDECAR_KEYS if not isinstance(sidecar, dict) or k not in sidecar]
    if missing:
        raise FSQDeployError(f"tensorrt: '{path}' lacks {', '.join(missing)}. {REBUILD}")
    if "engine_sha256" in sidecar and sidecar["engine_sha256"] != sha256_file(engine):
        raise FSQDeployError(f"tensorrt: '{engine.name}' is not the engine its sidecar describes "
                             f"(sha256 differs). {REBUILD}")
    if precision is not None and sidecar["precision"] != precision:
        raise FSQDeployError(f"tensorrt: '{engine.name}' is a {sidecar['precision']} engine, "
                             f"{precision} was asked for. {REBUILD} --precision {precision}")
    facts = dict(facts if facts is not None else current_device_facts())
    built, here = str(sidecar["tensorrt_version"]), str(facts["tensorrt_version"])
    b, h = version_tuple(built), version_tuple(here)
    if sidecar.get("version_compatible"):
        same_version = version_compatible_runs(b, h)
    else:
        same_version = built == here  # TensorRT compares the whole version, build number included
    if not same_version:
        allowed = (f" (a version-compatible engine runs on {version_compatible_runtimes(built)})"
                   if sidecar.get("version_compatible") else " (or build it with --version-compatible)")
        raise FSQDeployError(f"tensorrt: '{engine.name}' was built with TensorRT {built}, this is TensorRT "
                             f"{here}{allowed}. {REBUILD}")
    built_cc, here_cc = str(sidecar["compute_capability"]), str(facts["compute_capability"])
    if sidecar.get("hardware_compatible"):
        here_major = version_tuple(here_cc)[:1] or (0,)
        if here_major[0] < HARDWARE_COMPATIBLE_MIN_MAJOR:
            raise FSQDeployError(
                f"tensorrt: '{engine.name}' is hardware-compatible for Ampere and newer (sm 8.0+), this GPU is "
                f"{facts['gpu_name']} (sm {here_cc}). {REBUILD}")
    elif built_cc != here_cc:
        raise FSQDeployError(
            f"tensorrt: '{engine.name}' was built for {sidecar['gpu_name']} (sm {built_cc}), this GPU is "
            f"{facts['gpu_name']} (sm {here_cc}) (or build it with --hardware-compatible). {REBUILD}")
    return sidecar


def engine_paths(art: Path, manifest: Manifest | Mapping[str, Any], precision: str) -> tuple[Path, Path]:
    """ART/encoder.<precision>.plan and ART/decoder.<precision>.plan, as listed in the manifest."""
    names = [engine_file(g, precision) for g in GRAPHS]
    files = manifest.files if isinstance(manifest, Manifest) else manifest["files"]
    missing = [n for n in names if n not in files]
    if missing:
        raise FSQDeployError(
            f"tensorrt: '{art}' has no {missing[0]}. Note: build it on this GPU with fsqdeploy export {art} --trt "
            f"--precision {precision}" + (" (after fsqdeploy calibrate)" if precision == "int8" else "")
        )
    return art / names[0], art / names[1]


# -- the runner -----------------------------------------------------------------------------------


@dataclass
class _Slot:
    """An execution context with the static device buffers bound to it and, once its batch size
    repeats, the CUDA graph that replays its launch. ``input``/``output`` have at least ``batch``
    rows; the context's input shape is ``batch``."""

    context: trt.IExecutionContext
    input: torch.Tensor
    output: torch.Tensor
    batch: int
    rest: tuple[int, ...] = ()  # the input's dims after the batch (height and width vary for spatial models)
    runs: int = 0
    graph: torch.cuda.CUDAGraph | None = None
    capture_failed: bool = False


class TensorRTRunner(Runner):
    """One engine with one input and one output, bound by name.

    With CUDA graphs (the default) each batch size gets its own execution context, since a graph
    pins the shapes and buffer addresses it was captured with; the ``max_shapes`` most recent sizes
    are kept. Without, one context serves the whole profile: its input shape is set per call and
    its buffers grow to the largest batch seen. Each context preallocates the activation memory of
    the profile's maximum batch (``context_memory_bytes``)."""

    name = "tensorrt"
    max_shapes = 4  # with CUDA graphs: the batch sizes whose contexts (and graphs) are kept
    takes_device_tensors = True
    device = "cuda"  # where the I/O buffers live (the CPU tests bind CPU tensors to a stand-in tensorrt)

    def __init__(self, engine_path: str | Path, use_cuda_graphs: bool = True, precision: str | None = None):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.use_cuda_graphs = use_cuda_graphs
        self.expected_precision = precision
        # Known before activation (the Codec reads it): ART/<graph>.<precision>.plan; the sidecar rules.
        parts = self.engine_path.name.split(".")
        self.precision = precision or (parts[-2] if len(parts) >= 3 and parts[-1] == "plan" else "fp32")
        self.engine: trt.ICudaEngine | None = None
        self.runtime: trt.Runtime | None = None
        # By batch size (CUDA graphs; by whole input shape for dynamic height and width), else one at 0.
        self._slots: OrderedDict[int | tuple[int, ...], _Slot] = OrderedDict()
        self.graph_replays = 0  # launches served by a CUDA graph (for tests and bench)
        self.context_memory_bytes: int | None = None  # what each execution context preallocates, once known

    def _activate(self) -> None:
        require_tensorrt_and_gpu()  # TensorRT recognised by its API, and a CUDA GPU
        import tensorrt as trt
        import torch

        sidecar = check_sidecar(self.engine_path, precision=self.expected_precision)
        self.precision = str(sidecar["precision"])
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if sidecar.get("version_compatible"):
            runtime.engine_host_code_allowed = True  # the engine carries its own lean runtime
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise FSQDeployError(f"tensorrt: could not load '{self.engine_path}'. {REBUILD}")
        self.engine, self.runtime = engine, runtime
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise FSQDeployError(f"tensorrt: '{self.engine_path.name}' must have one input and one output. {REBUILD}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.inputs, self.outputs = inputs, outputs
        lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self.profile_min, self.profile_max = dims_tuple(lo), dims_tuple(hi)
        self.input_shape = dims_tuple(engine.get_tensor_shape(self.input_name))
        # A spatial model's engine has dynamic height and width too: its contexts are per input shape.
        self.dynamic_rest = -1 in self.input_shape[1:]
        self.output_shape = dims_tuple(engine.get_tensor_shape(self.output_name))
        to_torch = {trt.float32: torch.float32, trt.float16: torch.float16,
                    trt.int32: torch.int32}
        try:
            self.dtypes = {n: to_torch[engine.get_tensor_dtype(n)] for n in names}
        except KeyError:
            raise FSQDeployError(f"tensorrt: '{self.engine_path.name}' binds an unsupported dtype. {REBUILD}") from None
        # Activation memory for the profile's maximum, allocated by each context at creation
        # (ExecutionContextAllocationStrategy.STATIC, the default); the v2 call is TensorRT 10.1+.
        if hasattr(engine, "get_device_memory_size_for_profile_v2"):
            self.context_memory_bytes = int(engine.get_device_memory_size_for_profile_v2(0))
        self.stream = torch.cuda.Stream()

    # -- one chunk ---------------------------------------------------------------------------------

    @property
    def contexts(self) -> int:
        """Execution contexts alive now."""
        return len(self._slots)

    def _profile_text(self) -> str:
        if not self.dynamic_rest:
            return f"{self.min_batch}..{self.max_batch}"
        return f"{list(self.profile_min)}..{list(self.profile_max)}"

    def _set_shape(self, context: trt.IExecutionContext, shape: tuple[int, ...]) -> None:
        if not context.set_input_shape(self.input_name, shape):
            raise FSQDeployError(f"tensorrt: '{self.engine_path.name}' refuses input shape {list(shape)} "
                                 f"(profile {self._profile_text()})")

    def _bind(self, context: trt.IExecutionContext, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Static buffers of ``shape`` (the context's input shape is set), bound to the context."""
        import torch

        static_in = torch.empty(shape, dtype=self.dtypes[self.input_name], device=self.device)
        out_shape = dims_tuple(context.get_tensor_shape(self.output_name))
        static_out = torch.empty(out_shape, dtype=self.dtypes[self.output_name], device=self.device)
        if not (context.set_tensor_address(self.input_name, static_in.data_ptr())
                and context.set_tensor_address(self.output_name, static_out.data_ptr())):
            raise FSQDeployError(f"tensorrt: '{self.engine_path.name}' refuses the addresses of its I/O buffers")
        return static_in, static_out

    def _slot(self, batch: int, rest: tuple[int, ...] | None = None) -> _Slot:
        """The context for ``batch`` rows of ``rest`` (the dims after the batch; the engine's own
        when None), with that input shape and buffers of at least that many rows."""
        engine = self.engine
        assert engine is not None, "TensorRTRunner used before activate()"  # Runner.infer refuses that first
        if not self.min_batch <= batch <= self.max_batch:
            raise FSQDeployError(f"tensorrt: batch {batch} is outside the engine profile "
                                 f"{self.min_batch}..{self.max_batch} of '{self.engine_path.name}'")
        rest = self.input_shape[1:] if rest is None else tuple(int(d) for d in rest)
        shape = (batch, *rest)
        if self.dynamic_rest and not all(a <= d <= b for d, a, b in zip(shape, self.profile_min, self.profile_max)):
            raise FSQDeployError(f"tensorrt: input shape {list(shape)} is outside the engine profile "
                                 f"{self._profile_text()} of '{self.engine_path.name}'. Note: rebuild the engine "
                                 "with a profile that covers this image size, or let the codec tile the image")
        key: int | tuple[int, ...] = (shape if self.dynamic_rest else batch) if self.use_cuda_graphs else 0
        slot = self._slots.get(key)
        if slot is None:
            context = engine.create_execution_context()
            self._set_shape(context, shape)
            slot = _Slot(context, *self._bind(context, shape), batch=batch, rest=rest)
            self._slots[key] = slot
            while len(self._slots) > self.max_shapes:
                self._slots.popitem(last=False)  # the least recently used batch size
            return slot
        self._slots.move_to_end(key)
        if (slot.batch, slot.rest) != (batch, rest):  # the profile's one context (no CUDA graphs) gets another shape
            self._set_shape(slot.context, shape)
            slot.batch, slot.rest = batch, rest
            if len(slot.input) < batch or tuple(slot.input.shape[1:]) != rest:
                slot.input, slot.output = self._bind(slot.context, shape)
        return slot

    def _launch(self, slot: _Slot) -> None:
        if not slot.context.execute_async_v3(self.stream.cuda_stream):
            raise FSQDeployError(f"tensorrt: execute_async_v3 failed for '{self.engine_path.name}'")

    def run_batch(self, x: torch.Tensor) -> torch.Tensor:
        """One batch within the profile, already on the device; returns a view of the slot's static
        output buffer (valid until the next call of this runner; clone it to keep it)."""
        import torch

        n = len(x)
        slot = self._slot(n, tuple(x.shape[1:]))
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)  # x was written on the caller's stream
        with torch.cuda.stream(self.stream):
            slot.input[:n].copy_(x)
            if slot.graph is not None:
                slot.graph.replay()
                self.graph_replays += 1
            elif self.use_cuda_graphs and slot.runs >= 1 and not slot.capture_failed:
                # The size repeats: capture the launch once (it was warmed up by the first run).
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph, stream=self.stream):
                        self._launch(slot)
                    slot.graph = graph
                except (RuntimeError, FSQDeployError):
                    slot.capture_failed = True  # e.g. a kernel TensorRT cannot capture: run directly
                if slot.graph is not None:
                    slot.graph.replay()
                    self.graph_replays += 1
                else:
                    self._launch(slot)
            else:
                self._launch(slot)
            slot.runs += 1
        current.wait_stream(self.stream)
        return slot.output[:n]

    @property
    def captured_batch_sizes(self) -> list[int | tuple[int, ...]]:
        return [b for b, s in self._slots.items() if s.graph is not None]

    # -- whole batches -----------------------------------------------------------------------------

    def infer_torch(self, x: torch.Tensor) -> torch.Tensor:
        """GPU tensor in, GPU tensor out (no host copies): what bench times as 'device' latency."""
        import torch

        x = x.to(device=self.device, dtype=self.dtypes[self.input_name])
        n = len(x)
        if n == 0:
            rest = self.output_shape[1:]
            if -1 in rest:  # dynamic dims: the output's follow from the input's, as a context computes them
                rest = tuple(self._slot(self.min_batch, tuple(x.shape[1:])).output.shape[1:])
            return torch.empty((0, *rest), dtype=self.dtypes[self.output_name], device=self.device)
        parts = []
        for start in range(0, n, self.max_batch):
            chunk = x[start : start + self.max_batch]
            short = self.min_batch - len(chunk)
            if short > 0:  # below the profile: pad with copies of the last row, keep the real rows
                chunk = torch.cat([chunk, chunk[-1:].expand(short, *chunk.shape[1:])])
            parts.append(self.run_batch(chunk)[: len(chunk) - max(short, 0)].clone())
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self.input_name not in feed:
            raise FSQDeployError(f"tensorrt: '{self.engine_path.name}' expects input '{self.input_name}'")
        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name])).to(self.device)
        return {self.output_name: self.infer_torch(x).cpu().numpy()}

    def _deactivate(self) -> None:
        for slot in self._slots.values():  # graphs before the contexts they launch, contexts before the engine
            slot.graph = None
        self._slots.clear()
        self.engine = self.runtime = None


# -- the backend ----------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    """Native engines built by ``fsqdeploy export ART --trt`` on this GPU (or portable ones)."""

    def unavailable_reason(self) -> str | None:
        return tensorrt_unavailable_reason()

    def files(self, precision: str) -> tuple[str, ...]:
        return tuple(engine_file(g, precision) for g in GRAPHS)

    def artifact_problem(self, manifest: Manifest, precision: str) -> str | None:
        """Engines of ``precision`` listed in the manifest and, where TensorRT runs (only there are
        this machine's TensorRT and GPU known), sidecars that match this TensorRT and GPU."""
        problem = self.precision_problem(precision)
        if problem:
            return problem
        try:
            engines = engine_paths(manifest.art, manifest, precision)
            if self.unavailable_reason() is None:
                for engine in engines:
                    check_sidecar(engine, precision=precision)
        except FSQDeployError as e:
            return str(e).removeprefix("tensorrt: ")
        return None

    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        encoder, decoder = engine_paths(manifest.art, manifest, precision)
        return TensorRTRunner(encoder, precision=precision), TensorRTRunner(decoder, precision=precision)


TENSORRT = TensorRTBackend("tensorrt", ENGINE_PRECISIONS, gpu=True, auto_rank=10)
