"""ONNX -> TensorRT engines: strongly typed, one batch profile, a reused timing cache, and proof
that the quantizer runs in FP32.

``fsqdeploy export RUN --out ART --trt [--precision fp16]`` builds ``ART/encoder.<p>.plan`` and
``ART/decoder.<p>.plan`` from ``encoder.<p>.onnx`` / ``decoder.<p>.onnx`` (``encoder.onnx`` for
fp32). Precision lives in the graph: the network is strongly typed (TensorRT 10's
``STRONGLY_TYPED`` flag; TensorRT 11 builds nothing else and has no FP16/INT8 builder flags), so
every layer runs in the type its ONNX tensors have, and FP16 comes from ``export/precision.py``.
TF32 is switched off, so FP32 layers run in FP32 (TensorRT 10 enables TF32 by default).

The parser reads the graph with the FSQ local functions inlined and every quantizer node named
``fsq_quantizer/...``. Inlining sidesteps the parser's local-function importer, which binds a
function's formal input to an existing tensor of the same name instead of the actual argument
(onnx-tensorrt ``LocalFunctionImporter``: "Found input ... that does not correspond to an outside
scope name"); FSQQuantize's formal input is ``latent``, which is also the encoder's latent, so
stage 2 and later would quantize the wrong tensor. The names make the quantizer's layers
recognisable in TensorRT's layer information, which is read back after the build:

1. On the parsed network: every layer whose ONNX node is a quantizer node has float32 outputs
   (integer and boolean ones aside). At least one such layer must exist.
2. On the built engine (``IEngineInspector``, detailed profiling verbosity): no layer made only of
   quantizer nodes has a float input or output below FP32, and no layer at all reads or writes a
   quantizer tensor below FP32. The layer information is saved as ``<engine>.layers.json``.

Either failing fails the export. Each engine gets a sidecar ``<engine>.json`` (TensorRT and CUDA
versions, GPU name and compute capability, precision, profile, the ONNX file's sha256, the
engine's sha256, portability flags) that the runtime checks before deserializing.

Nothing here imports tensorrt until a build starts: the bare ``import tensorrt`` inside the build
functions runs only after ``require_tensorrt_and_gpu``, and is there so that mypy checks every call.
``tensorrt-stubs`` installed without TensorRT makes ``import tensorrt`` succeed as an empty
namespace package, so TensorRT is recognised by its API (``tensorrt.Builder``), never by a bare
import. This module cannot run without an NVIDIA GPU; CI type-checks it against the stubs, the CPU
tests drive it with a fake tensorrt module, and the tests marked ``gpu`` run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from fsqdeploy.artifact import ENGINE_PRECISIONS, IMAGES, INDICES, engine_file, engine_source, layers_path, sidecar_path
from fsqdeploy.backends.tensorrt_env import (
    HARDWARE_COMPATIBLE_MIN_MAJOR,
    current_device_facts,
    dims_tuple,
    require_tensorrt_and_gpu,
)
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from fsqdeploy.onnxgraph.graph import FLOAT_TYPES, inline_functions, split_graph, tensor_types

if TYPE_CHECKING:  # type-checked against tensorrt-stubs; imported lazily at run time
    import tensorrt as trt

QUANTIZER_PREFIX = "fsq_quantizer/"
TIMING_CACHE_FILE = "timing.cache"
MAX_OPTIMIZATION_LEVEL = 5
GRAPHS = ("encoder", "decoder")
# The contract's I/O: the one input and one output of each graph, with the dtype TensorRT must bind.
GRAPH_IO = {"encoder": (IMAGES, "float32", INDICES, "int32"), "decoder": (INDICES, "int32", IMAGES, "float32")}


# -- options ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    """What ``fsqdeploy export --trt`` passes to the builder (one profile for the batch axis)."""

    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 256
    workspace_mib: int = 2048
    optimization_level: int = 3
    timing_cache: Path | None = None  # None: ART/timing.cache
    version_compatible: bool = False
    hardware_compatible: bool = False

    def check(self) -> None:
        """User input, validated before anything is written."""
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise FSQDeployError(
                f"tensorrt: the batch profile must satisfy 1 <= --min-batch <= --opt-batch <= --max-batch, "
                f"got {self.min_batch}, {self.opt_batch}, {self.max_batch}")
        if self.workspace_mib < 1:
            raise FSQDeployError(f"tensorrt: --workspace must be at least 1 MiB, got {self.workspace_mib}")
        if not 0 <= self.optimization_level <= MAX_OPTIMIZATION_LEVEL:
            raise FSQDeployError(f"tensorrt: --optimization-level must be in 0..{MAX_OPTIMIZATION_LEVEL}, "
                                 f"got {self.optimization_level}")
        cache = self.timing_cache
        if cache is not None and (cache.is_dir() or not cache.absolute().parent.is_dir()):
            raise FSQDeployError(f"tensorrt: --timing-cache '{cache}' must be a file in an existing directory")

    @property
    def profile(self) -> dict[str, int]:
        return {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}


# -- the graph the parser reads --------------------------------------------------------------------


@dataclass(frozen=True)
class ParserGraph:
    model: onnx.ModelProto
    quantizer_nodes: frozenset[str]
    quantizer_float_tensors: frozenset[str]  # float tensors the quantizer reads or writes


def parser_graph(model: onnx.ModelProto) -> ParserGraph:
    """The graph with the FSQ functions inlined and its quantizer nodes named ``fsq_quantizer/...``."""
    flat = inline_functions(model)
    split = split_graph(flat)
    types = tensor_types(flat)
    nodes = flat.graph.node
    names = set()
    for k in sorted(split.quantizer):
        n = nodes[k]
        n.name = f"{QUANTIZER_PREFIX}{n.name or f'{n.op_type}_{k}'}"
        names.add(n.name)
    tensors = {x for k in split.quantizer for x in [*nodes[k].input, *nodes[k].output]
               if x and types.get(x) in FLOAT_TYPES}
    return ParserGraph(flat, frozenset(names), frozenset(tensors))


# -- reading TensorRT's layer information ----------------------------------------------------------

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]|]+?)\s*(?:\|[^\]]*)?\]")
_REDUCED = (("FP8", re.compile(r"fp8|e4m3|e5m2", re.I)), ("FP4", re.compile(r"fp4|e2m1", re.I)),
            ("BF16", re.compile(r"bf16|bfloat", re.I)), ("FP16", re.compile(r"fp16|half", re.I)),
            ("INT8", re.compile(r"\bint8\b", re.I)), ("INT4", re.compile(r"\bint4\b", re.I)))
_FULL = (("FP32", re.compile(r"fp32|float", re.I)), ("INT32", re.compile(r"int32", re.I)),
         ("INT64", re.compile(r"int64", re.I)), ("BOOL", re.compile(r"bool", re.I)),
         ("UINT8", re.compile(r"uint8", re.I)))


def tensor_precision(entry: Mapping[str, Any]) -> str:
    """FP32, FP16, BF16, INT8, INT32, ... of one layer input/output of the inspector's JSON.
    TensorRT 10 writes "Format/Datatype" ("Row major linear FP16 format", "Half", "Float", "Int32");
    TensorRT 11 splits it into "Format" and "DataType". Reduced types are matched first."""
    text = " ".join(str(v) for k, v in entry.items() if "type" in k.lower() or "format" in k.lower())
    for label, pattern in (*_REDUCED, *_FULL):
        if pattern.search(text):
            return label
    return "UNKNOWN"


REDUCED_PRECISIONS = frozenset(label for label, _ in _REDUCED)


def onnx_names(layer: Mapping[str, Any]) -> list[str]:
    """The ONNX nodes a layer implements: from its metadata, else its name."""
    found = _ONNX_LAYER.findall(str(layer.get("Metadata", "")))
    return [n.strip() for n in found] or [str(layer.get("Name", ""))]


@dataclass
class QuantizerPrecision:
    """What the engine's layer information says about the quantizer."""

    layers: list[dict[str, Any]] = field(default_factory=list)  # name, onnx nodes, precisions
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        precisions = sorted({p for layer in self.layers for p in layer["precisions"]})
        return {"layers": len(self.layers), "precisions": precisions, "passed": self.passed,
                "problems": self.problems}


def inspect_quantizer(info: str | Mapping[str, Any], quantizer_tensors: Iterable[str]) -> QuantizerPrecision:
    """Check the engine's layer information (``IEngineInspector`` JSON, detailed verbosity): no layer
    made only of quantizer nodes touches a float below FP32, and no layer reads or writes a quantizer
    tensor below FP32. Layers that fuse quantizer and conv nodes are checked on their quantizer
    tensors only (their conv side is FP16 by design)."""
    data = json.loads(info) if isinstance(info, str) else info
    layers = data.get("Layers", []) if isinstance(data, Mapping) else []
    watched = set(quantizer_tensors)
    result = QuantizerPrecision()
    for layer in layers:
        if not isinstance(layer, Mapping):  # layer names only (verbosity below DETAILED)
            continue
        name = str(layer.get("Name", ""))
        nodes = onnx_names(layer)
        in_quantizer = [n for n in nodes if n.startswith(QUANTIZER_PREFIX)] or (
            [name] if QUANTIZER_PREFIX in name else [])
        tensors = [t for side in ("Inputs", "Outputs") for t in layer.get(side, []) if isinstance(t, Mapping)]
        only_quantizer = bool(in_quantizer) and len(in_quantizer) == len(nodes)
        for t in tensors:
            precision = tensor_precision(t)
            tname = str(t.get("Name", ""))
            if precision in REDUCED_PRECISIONS and (only_quantizer or tname in watched):
                result.problems.append(f"layer '{name}' has '{tname}' in {precision}")
        if in_quantizer:
            result.layers.append({"name": name, "onnx_nodes": in_quantizer,
                                  "precisions": sorted({tensor_precision(t) for t in tensors})})
    return result


# -- building --------------------------------------------------------------------------------------


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


def create_network(builder: trt.Builder) -> trt.INetworkDefinition:
    """A strongly typed network: TensorRT 10 needs the flag, TensorRT 11 knows no other kind."""
    import tensorrt as trt

    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(flag) if flag is not None else 0
    network = builder.create_network(flags)
    if flag is not None and not network.get_flag(flag):
        raise FSQDeployError("tensorrt: the network is not strongly typed. Note: use TensorRT 10.0 or newer")
    return network


def parse_onnx(network: trt.INetworkDefinition, logger: trt.ILogger, path: Path, label: str) -> None:
    """Parse from the file, so external data would resolve; parser errors become one line."""
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(path)):
        return
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = f" at node '{e.node_name()}' ({e.node_operator()})" if e.node_name() else ""
        errors.append(f"{e.desc()}{where}")
    detail = errors[0] if errors else "no parser error reported"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    raise FSQDeployError(f"tensorrt: the ONNX parser rejects {label}: {detail}{more}. "
                         "Note: fsqdeploy check ART lints the graphs for TensorRT")


def network_quantizer_problems(network: trt.INetworkDefinition, quantizer_nodes: Iterable[str]
                               ) -> tuple[int, list[str]]:
    """(quantizer layers found, problems): every float output of a quantizer layer is float32."""
    import tensorrt as trt

    wanted = set(quantizer_nodes)
    reduced = {getattr(trt, t) for t in ("float16", "bfloat16", "int8", "fp8", "int4", "fp4") if hasattr(trt, t)}
    found, problems = 0, []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        names = _ONNX_LAYER.findall(getattr(layer, "metadata", "") or "") or [layer.name]
        if not any(n.strip() in wanted or n.strip().startswith(QUANTIZER_PREFIX) for n in names):
            continue
        found += 1
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            if tensor.dtype in reduced:
                problems.append(f"layer '{layer.name}' writes '{tensor.name}' as {tensor.dtype}")
    if not found:
        problems.append("no layer of the parsed network comes from a quantizer node")
    return found, problems


def configure(builder: trt.Builder, network: trt.INetworkDefinition, options: BuildOptions,
              cache_bytes: bytes) -> tuple[trt.IBuilderConfig, trt.ITimingCache]:
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    # Detailed verbosity: the inspector reports every layer's tensors, types and ONNX nodes.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = list(dims_tuple(tensor.shape)[1:])
        if any(d < 0 for d in rest):
            raise FSQDeployError(f"tensorrt: input '{tensor.name}' has a dynamic axis besides the batch")
        profile.set_shape(tensor.name, trt.Dims([options.min_batch, *rest]), trt.Dims([options.opt_batch, *rest]),
                          trt.Dims([options.max_batch, *rest]))
    if config.add_optimization_profile(profile) < 0:
        raise FSQDeployError(f"tensorrt: the batch profile {options.profile} is invalid for this network")
    # FP32 layers in FP32: TensorRT 10 enables TF32 (10-bit mantissa) convolutions and matrix
    # products by default on Ampere and newer, which would move the latent by ~1e-3 relative.
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        config.clear_flag(tf32)
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False):
        # A cache from another GPU or TensorRT version: start a fresh one rather than mix them.
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    return config, cache


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
    lo, opt, hi = (int(s[0]) for s in engine.get_tensor_profile_shape(want_in, 0))
    if (lo, opt, hi) != (options.min_batch, options.opt_batch, options.max_batch):
        problems.append(f"profile is {lo}/{opt}/{hi}, expected {options.min_batch}/{options.opt_batch}/"
                        f"{options.max_batch}")
    return problems


@dataclass
class BuiltEngine:
    graph: str
    precision: str
    plan: bytes
    layers: dict[str, Any]
    sidecar: dict[str, Any]


def build_engine(onnx_path: Path, graph: str, precision: str, options: BuildOptions, cache: bytearray,
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
    config, timing = configure(builder, network, options, bytes(cache))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FSQDeployError(f"tensorrt: building the engine for {label} failed{_last_error(logger)}. "
                             "Note: try a larger --workspace or a lower --max-batch")
    plan = bytes(memoryview(serialized))
    cache[:] = bytes(memoryview(timing.serialize()))

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
        "engine_sha256": _sha256_bytes(plan),
        "version_compatible": options.version_compatible,
        "hardware_compatible": options.hardware_compatible,
        "strongly_typed": True,
        "tf32": False,
        "builder_optimization_level": options.optimization_level,
        "workspace_mib": options.workspace_mib,
        "quantizer": {"network_layers": found, "engine": quantizer.summary()},
    }
    return BuiltEngine(graph, precision, plan, info, sidecar)


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _read_cache(paths: Sequence[Path]) -> bytes:
    for p in paths:
        if p.is_file():
            return p.read_bytes()
    return b""


def build_engines(art: Path, precisions: Sequence[str], options: BuildOptions, *,
                  previous_cache: Path | None = None) -> dict[str, Any]:
    """Build both engines of each precision for the artifact in ``art`` and add them (plans,
    sidecars, layer information, timing cache) to its manifest; returns the manifest's ``tensorrt``.

    Atomic: everything is built in a temporary directory inside ``art`` and moved into place only
    when every engine passed its checks, so a failure leaves ``art`` as it was.
    """
    from fsqdeploy.artifact import add_files, read_manifest, verify_files

    options.check()
    manifest = read_manifest(art)
    # What the artifact lacks is said before what the machine lacks: it is the user's next step.
    for precision in precisions:
        if precision not in ENGINE_PRECISIONS:
            raise FSQDeployError(f"tensorrt: no engines of precision {precision!r}. "
                                 f"Note: use one of {', '.join(ENGINE_PRECISIONS)}")
        for graph in GRAPHS:
            name = engine_source(graph, precision)
            if name not in manifest["files"]:
                how = (f"calibrate it first: fsqdeploy calibrate {art}" if precision == "int8"
                       else f"export with --precision {precision}")
                raise FSQDeployError(f"tensorrt: '{art}' has no {name}. Note: {how}")
    sources = {engine_source(graph, precision) for precision in precisions for graph in GRAPHS}
    damaged = [p for p in verify_files(manifest, art) if p.split(":")[0] in sources]
    if damaged:
        raise FSQDeployError(f"tensorrt: '{art}' failed verification: {damaged[0]}. Note: export (and calibrate) again")
    require_tensorrt_and_gpu()
    facts = current_device_facts()
    if options.hardware_compatible and int(facts["compute_capability"].split(".")[0]) < HARDWARE_COMPATIBLE_MIN_MAJOR:
        raise FSQDeployError(f"tensorrt: --hardware-compatible engines need an Ampere or newer GPU (sm 8.0+); "
                             f"this is {facts['gpu_name']} (sm {facts['compute_capability']})")
    cache_path = options.timing_cache or art / TIMING_CACHE_FILE
    cache = bytearray(_read_cache([cache_path, *([previous_cache] if previous_cache else [])]))

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
            write_bytes_atomic(art / TIMING_CACHE_FILE, bytes(cache))
            written.append(TIMING_CACHE_FILE)
        else:  # the user's cache lives outside the artifact and is shared between artifacts
            write_bytes_atomic(options.timing_cache, bytes(cache))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = dict(manifest.get("tensorrt") or {})
    for b in built:
        entry = summary.setdefault(b.precision, {"facts": facts, "profile": options.profile, "engines": {}})
        entry.update(facts=facts, profile=options.profile,
                     version_compatible=options.version_compatible, hardware_compatible=options.hardware_compatible)
        entry["engines"][b.graph] = {"file": engine_file(b.graph, b.precision), "onnx_file": b.sidecar["onnx_file"],
                                     "quantizer": b.sidecar["quantizer"]}
    add_files(art, written, {"tensorrt": summary})
    return summary


def describe(summary: Mapping[str, Any]) -> str:
    """One line per precision for the export's report."""
    lines = []
    for precision, entry in summary.items():
        facts, p = entry["facts"], entry["profile"]
        q = [e["quantizer"]["engine"] for e in entry["engines"].values()]
        layers = sum(x["layers"] for x in q)
        precs = sorted({pr for x in q for pr in x["precisions"]})
        lines.append(f"tensorrt {precision}: {', '.join(e['file'] for e in entry['engines'].values())} for "
                     f"{facts['gpu_name']} (sm {facts['compute_capability']}, TensorRT {facts['tensorrt_version']}), "
                     f"batch {p['min']}..{p['max']} (opt {p['opt']}); quantizer layers {layers}, "
                     f"tensor types {', '.join(precs) or 'none listed'}")
    return "\n".join(lines)

