"""Building: the builder config (one batch profile, TF32 off, the timing cache), one engine with
its checks and sidecar, and ``build_engines``, which adds every engine of an artifact atomically.

Each engine gets a sidecar ``<engine>.json`` (TensorRT and CUDA versions, GPU name and compute
capability, precision, profile, the ONNX file's sha256, the engine's sha256, portability flags)
that the runtime (fsqdeploy/backends/tensorrt.py) checks before deserializing. Either quantizer
check failing (``network.network_quantizer_problems`` before the build,
``inspect.inspect_quantizer`` after it) fails the build, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from fsqdeploy.artifact import (
    ENGINE_PRECISIONS,
    GRAPHS,
    IMAGES,
    INDICES,
    TIMING_CACHE_FILE,
    Manifest,
    add_files,
    engine_file,
    engine_source,
    layers_path,
    sidecar_path,
)
from fsqdeploy.backends.tensorrt_env import (
    HARDWARE_COMPATIBLE_MIN_MAJOR,
    current_device_facts,
    dims_tuple,
    require_tensorrt_and_gpu,
)
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.tensorrt.inspect import inspect_quantizer
from fsqdeploy.export.tensorrt.network import create_network, network_quantizer_problems, parse_onnx, parser_graph
from fsqdeploy.export.tensorrt.options import BuildOptions
from fsqdeploy.fileio import sha256_file, write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:  # type-checked against tensorrt-stubs; imported lazily at run time
    import tensorrt as trt

# The contract's I/O: the one input and one output of each graph, with the dtype TensorRT must bind.
GRAPH_IO = {"encoder": (IMAGES, "float32", INDICES, "int32"), "decoder": (INDICES, "int32", IMAGES, "float32")}


def _capturing_logger() -> Any:
    """A TensorRT logger that keeps errors for the one-line failure message and drops the rest."""
    import tensorrt as trt

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity <= trt.ILogger.ERROR:
                self.errors.append(" ".join(str(msg).split()))

    return CapturingLogger()


def _last_error(logger: Any) -> str:
    return f" ({logger.errors[-1][:300]})" if getattr(logger, "errors", None) else ""


@dataclass
class TimingCache:
    """The serialized timing cache the engines of one ``build_engines`` share (updated after each
    build), and what became of the cache it started from (``state``, set by the first build):
    "new" (there was none), "reused" (TensorRT accepted it), or "replaced" (the artifact's own cache
    was unreadable or from another GPU or TensorRT version; a fresh one took its place)."""

    data: bytearray
    shared: Path | None = None  # the user's --timing-cache (shared between artifacts); None: the artifact's
    state: str | None = None


# A cache TensorRT does not accept is never mixed in and never written over a shared file:
# set_timing_cache "will report a failure if the CUDA device property in the provided cache is
# different from current environment" (IBuilderConfig.set_timing_cache, tensorrt-stubs 10.13), i.e.
# TensorRT refuses a foreign cache rather than ignoring it, and ignore_mismatch=True would use
# tactics timed on other hardware ("Combining caches generated from devices with different device
# properties may lead to functional/performance bugs!", NvInfer.h ITimingCache::combine). A
# corrupt blob makes create_timing_cache return None (a null ITimingCache*), which
# set_timing_cache cannot take. So the user's --timing-cache that TensorRT does not accept is one
# line and nothing is written; the artifact's own cache (ART/timing.cache, or the one --force
# carries over) belongs to engines that are being rebuilt for this machine, and is replaced.
def attach_timing_cache(config: trt.IBuilderConfig, cache: TimingCache, logger: Any) -> trt.ITimingCache:
    """Attach ``cache`` to ``config`` (see above for a cache TensorRT does not accept)."""
    import tensorrt as trt

    problem = ""
    if cache.data:
        timing: trt.ITimingCache | None = config.create_timing_cache(bytes(cache.data))
        if timing is None:
            problem = f"is not a timing cache TensorRT {trt.__version__} can read{_last_error(logger)}"
        elif config.set_timing_cache(timing, False):
            cache.state = cache.state or "reused"
            return timing
        else:
            problem = (f"was made on another GPU or TensorRT version, and TensorRT {trt.__version__} refuses it "
                       f"here{_last_error(logger)}")
        if cache.shared is not None:
            raise FSQDeployError(f"tensorrt: --timing-cache '{cache.shared}' {problem}. Note: nothing was written; "
                                 "give each GPU and TensorRT version its own --timing-cache file, or delete this one")
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, False):
        raise FSQDeployError(f"tensorrt: TensorRT {trt.__version__} cannot create a timing cache{_last_error(logger)}")
    cache.state = cache.state or ("replaced" if problem else "new")
    return fresh


def configure(builder: trt.Builder, network: trt.INetworkDefinition, options: BuildOptions,
              cache: TimingCache, logger: Any) -> tuple[trt.IBuilderConfig, trt.ITimingCache]:
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    # Detailed verbosity: the inspector reports every layer's tensors, types and ONNX nodes.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        lo, opt, hi = options.input_shapes(tensor.name, dims_tuple(tensor.shape)[1:])
        profile.set_shape(tensor.name, trt.Dims(lo), trt.Dims(opt), trt.Dims(hi))
    if config.add_optimization_profile(profile) < 0:
        raise FSQDeployError(f"tensorrt: the batch profile {options.profile} is invalid for this network")
    # FP32 layers in FP32: TensorRT 10 enables TF32 (10-bit mantissa) convolutions and matrix
    # products by default on Ampere and newer, which would move the latent by ~1e-3 relative.
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        config.clear_flag(tf32)
    timing = attach_timing_cache(config, cache, logger)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    return config, timing


def engine_io_problems(engine: trt.ICudaEngine, graph: str, options: BuildOptions) -> list[str]:
    """The engine binds the contract's one input and one output with their dtypes and our profile."""
    import tensorrt as trt

    want_in, in_dtype, want_out, out_dtype = GRAPH_IO[graph]
    dtypes = {trt.float32: "float32", trt.int32: "int32", trt.float16: "float16"}
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if inputs != [want_in] or outputs != [want_out]:
        return [f"engine I/O is {inputs} -> {outputs}, expected ['{want_in}'] -> ['{want_out}']"]
    problems = []
    for name, want in ((want_in, in_dtype), (want_out, out_dtype)):
        got = dtypes.get(engine.get_tensor_dtype(name), str(engine.get_tensor_dtype(name)))
        if got != want:
            problems.append(f"'{name}' is bound as {got}, expected {want}")
    got_shapes = [list(dims_tuple(s)) for s in engine.get_tensor_profile_shape(want_in, 0)]
    want_shapes = options.input_shapes(want_in, tuple(got_shapes[0][1:]) if options.downsample is None
                                       else dims_tuple(engine.get_tensor_shape(want_in))[1:])
    if got_shapes != want_shapes:
        problems.append(f"profile is {' / '.join(map(str, got_shapes))}, expected {' / '.join(map(str, want_shapes))}")
    return problems


@dataclass
class BuiltEngine:
    graph: str
    precision: str
    plan: bytes
    layers: dict[str, Any]
    sidecar: dict[str, Any]


def build_engine(onnx_path: Path, graph: str, precision: str, options: BuildOptions, cache: TimingCache,
                 facts: Mapping[str, Any], scratch: Path) -> BuiltEngine:
    """Build one engine from ``onnx_path``; ``cache`` (the serialized timing cache) is updated in place.
    The caller has checked that TensorRT and a GPU are usable (``require_tensorrt_and_gpu``)."""
    import tensorrt as trt

    label = onnx_path.name
    prepared = parser_graph(onnx.load(str(onnx_path)))
    parsed_path = scratch / f"{graph}.{precision}.parser.onnx"
    onnx.save(prepared.model, str(parsed_path))

    logger = _capturing_logger()
    builder = trt.Builder(logger)
    network = create_network(builder)
    parse_onnx(network, logger, parsed_path, label)
    found, problems = network_quantizer_problems(network, prepared.quantizer_nodes)
    if problems:
        raise FSQDeployError(f"tensorrt: {label}: {problems[0]}. Note: the quantizer must run in FP32; "
                             "export the graphs again with this fsqdeploy")
    config, timing = configure(builder, network, options, cache, logger)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FSQDeployError(f"tensorrt: building the engine for {label} failed{_last_error(logger)}. "
                             "Note: try a larger --workspace or a lower --max-batch")
    plan = bytes(memoryview(serialized))
    cache.data[:] = bytes(memoryview(timing.serialize()))

    runtime = trt.Runtime(logger)
    if options.version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise FSQDeployError(f"tensorrt: the engine built for {label} does not load{_last_error(logger)}")
    io_problems = engine_io_problems(engine, graph, options)
    if io_problems:
        raise FSQDeployError(f"tensorrt: the engine for {label}: {io_problems[0]} (a bug)")
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    quantizer = inspect_quantizer(info, prepared.quantizer_float_tensors)
    if not quantizer.passed:
        raise FSQDeployError(f"tensorrt: {label}: {quantizer.problems[0]}; the quantizer must run in FP32. "
                             "Note: nothing was written; report this with the graph")
    sidecar = {
        "format": "fsqdeploy-tensorrt-engine",
        **facts,
        "precision": precision,
        "graph": graph,
        "profile": options.profile,
        "onnx_file": label,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "version_compatible": options.version_compatible,
        "hardware_compatible": options.hardware_compatible,
        "strongly_typed": True,
        "tf32": False,
        "builder_optimization_level": options.optimization_level,
        "workspace_mib": options.workspace_mib,
        "quantizer": {"network_layers": found, "engine": quantizer.summary()},
    }
    return BuiltEngine(graph, precision, plan, info, sidecar)


def _read_cache(options: BuildOptions, art: Path, previous_cache: Path | None) -> TimingCache:
    """The first timing cache there is: the user's --timing-cache (``shared``) or else ART's, then
    the one ``previous_cache`` names (the artifact's, carried over by --force); else an empty one."""
    first = options.timing_cache or art / TIMING_CACHE_FILE
    for path in (first, *([previous_cache] if previous_cache else [])):
        if path.is_file():
            return TimingCache(bytearray(path.read_bytes()), shared=path if path == options.timing_cache else None)
    return TimingCache(bytearray())


def _check_sources(manifest: Manifest, precisions: Sequence[str]) -> None:
    """Every engine's ONNX source is listed and intact, before TensorRT is even looked for: what
    the artifact lacks is the user's next step whatever the machine lacks."""
    for precision in precisions:
        if precision not in ENGINE_PRECISIONS:
            raise FSQDeployError(f"tensorrt: no engines of precision {precision!r}. "
                                 f"Note: use one of {', '.join(ENGINE_PRECISIONS)}")
        for graph in GRAPHS:
            name = engine_source(graph, precision)
            if not manifest.has(name):
                # Not Manifest.require's note: for an engine the step is a re-export or calibrate
                # of this artifact, said with the artifact's path.
                how = (f"calibrate it first: fsqdeploy calibrate {manifest.art}" if precision == "int8"
                       else f"export with --precision {precision}")
                raise FSQDeployError(f"tensorrt: '{manifest.art}' has no {name}. Note: {how}")
    sources = {engine_source(graph, precision) for precision in precisions for graph in GRAPHS}
    manifest.verify("tensorrt", names=sources, again="export (and calibrate) again")


def build_engines(art: Path, precisions: Sequence[str], options: BuildOptions, *,
                  previous_cache: Path | None = None) -> dict[str, Any]:
    """Build both engines of each precision for the artifact in ``art`` and add them (plans,
    sidecars, layer information, timing cache) to its manifest; returns the manifest's ``tensorrt``.

    Atomic: everything is built in a temporary directory inside ``art`` and moved into place only
    when every engine passed its checks, so a failure leaves ``art`` as it was.
    """
    options.check()
    manifest = Manifest.load(art, component="tensorrt")
    _check_sources(manifest, precisions)
    require_tensorrt_and_gpu()
    facts = current_device_facts()
    if options.hardware_compatible and int(facts["compute_capability"].split(".")[0]) < HARDWARE_COMPATIBLE_MIN_MAJOR:
        raise FSQDeployError(f"tensorrt: --hardware-compatible engines need an Ampere or newer GPU (sm 8.0+); "
                             f"this is {facts['gpu_name']} (sm {facts['compute_capability']})")
    cache = _read_cache(options, art, previous_cache)

    scratch = Path(tempfile.mkdtemp(prefix=".trt-build.", dir=art))
    try:
        built = [build_engine(art / engine_source(graph, precision), graph, precision, options, cache, facts, scratch)
                 for precision in precisions for graph in GRAPHS]
        written: list[str] = []
        for b in built:
            plan = art / engine_file(b.graph, b.precision)
            staged = scratch / plan.name
            staged.write_bytes(b.plan)
            write_json_atomic(scratch / sidecar_path(plan).name, b.sidecar)
            write_json_atomic(scratch / layers_path(plan).name, b.layers)
            written += [plan.name, sidecar_path(plan).name, layers_path(plan).name]
        for name in written:
            os.replace(scratch / name, art / name)
        if options.timing_cache is None:
            write_bytes_atomic(art / TIMING_CACHE_FILE, bytes(cache.data))
            written.append(TIMING_CACHE_FILE)
        elif cache.shared is None or cache.state == "reused":
            # The user's cache, shared between artifacts, is written only when TensorRT accepted
            # it (one it refused raised above) or when it did not exist yet.
            write_bytes_atomic(options.timing_cache, bytes(cache.data))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = dict(manifest.section("tensorrt"))
    for b in built:
        entry = summary.setdefault(b.precision, {"facts": facts, "profile": options.profile, "engines": {}})
        entry.update(facts=facts, profile=options.profile, timing_cache=cache.state,
                     version_compatible=options.version_compatible, hardware_compatible=options.hardware_compatible)
        entry["engines"][b.graph] = {"file": engine_file(b.graph, b.precision), "onnx_file": b.sidecar["onnx_file"],
                                     "quantizer": b.sidecar["quantizer"]}
    add_files(art, written, {"tensorrt": summary})
    return summary
