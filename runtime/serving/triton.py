"""ART -> a Triton Inference Server model repository: the encoder, the decoder and an ensemble.

    REPO/<name>_encoder/config.pbtxt, 1/model.onnx (or 1/model.plan)   images -> indices
    REPO/<name>_decoder/config.pbtxt, 1/model.onnx (or 1/model.plan)   indices -> images
    REPO/<name>/config.pbtxt, 1/                                       images -> indices, reconstruction

``onnxruntime_onnx`` models hold the artifact's FP32 or FP16 graphs with the FSQ functions inlined
into standard ops (as the ONNX Runtime GPU providers read them: fsqdeploy/backends/onnxruntime.py),
so any provider Triton's ONNX Runtime backend picks runs them. ``tensorrt_plan`` models hold the
artifact's engines, named by the compute capability they were built for and mapped by
``cc_model_filenames``, so a server on another GPU refuses to load them instead of running them.

Every config is a ``model_config_pb2.ModelConfig`` message written with protobuf's text format, and
its tensors are read off the ONNX graph the model runs (for an engine, the graph it was built from),
so names, dtypes and dims are the graph's: -1 where the graph's axis is symbolic (height and width
of spatial models). The FSQ contract (``contract``) goes into every model's ``parameters``, so a
client (runtime/serving/client.py) can check it talks to the model it expects.

The repository is built in a temporary directory beside REPO and renamed into place whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsqdeploy.artifact import (
    GRAPHS,
    IMAGES,
    INDICES,
    Manifest,
    engine_file,
    engine_source,
    graph_file,
    io_contract,
    sidecar_path,
)
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import replace_dir

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

BACKENDS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
PRECISIONS = ("fp32", "fp16")
DEFAULT_NAME = "fsq"
# The ensemble's round-trip output; "images" is already its input, and Triton wants them distinct.
RECONSTRUCTION = "reconstruction"
# Patch models take hundreds of small patches per photo, spatial ones whole images, whose
# activations grow with their size: a batch of 4 at 2048 x 2048 already holds 64x the pixels of 256
# patches of 64 x 64 (export's TensorRT profile for spatial models stops at 4 for that reason).
DEFAULT_MAX_BATCH = {False: 256, True: 4}
# How long the dynamic batcher may hold a request to fill a batch: a tenth of a millisecond, small
# against one encoder call, so a lone client loses nothing while concurrent ones are merged.
MAX_QUEUE_DELAY_US = 100
# Spatial models are warmed up at this image size (rounded up to multiples of f), the tuned shape of
# export's TensorRT profile; engines are warmed up at their own profile's.
WARMUP_SHAPE = (512, 768)
# The FSQ contract's parameter names start with this; ``contract`` writes them, the client reads them.
CONTRACT_PREFIX = "fsq_"
ONNX_TYPES = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64"}


@dataclass(frozen=True)
class RepositoryOptions:
    precision: str = "fp32"
    backend: str = "onnxruntime"
    max_batch_size: int | None = None  # None: DEFAULT_MAX_BATCH, capped by an engine's profile
    instances: int = 1
    name: str = DEFAULT_NAME

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise FSQDeployError(f"triton: unknown precision {self.precision!r}. "
                                 f"Note: use one of {', '.join(PRECISIONS)}")
        if self.backend not in BACKENDS:
            raise FSQDeployError(f"triton: unknown backend {self.backend!r}. "
                                 f"Note: use one of {', '.join(BACKENDS)}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise FSQDeployError(f"triton: --max-batch-size must be at least 1, got {self.max_batch_size}")
        if self.instances < 1:
            raise FSQDeployError(f"triton: --instances must be at least 1, got {self.instances}")
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise FSQDeployError(f"triton: model name {self.name!r} must be letters, digits, '_' or '-'. "
                                 f"Note: e.g. --name {DEFAULT_NAME}")


@dataclass(frozen=True)
class Tensor:
    """One graph input or output as Triton declares it: dims after the batch, -1 where symbolic."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ServedGraph:
    """What one model of the repository serves: the file it copies, and its tensors."""

    graph: str  # "encoder" | "decoder"
    source: Path  # the artifact's ONNX graph or engine
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    model_file: str  # inside the version folder
    compute_capability: str | None = None  # engines not built hardware-compatible
    warmup_hw: tuple[int, int] | None = None  # spatial: the warm-up image's pixels


def model_names(name: str) -> dict[str, str]:
    """The repository's three model names for the codec ``name``."""
    return {"encoder": f"{name}_encoder", "decoder": f"{name}_decoder", "ensemble": name}


# -- what the repository serves ---------------------------------------------------------------------


def graph_tensors(path: Path) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The inputs and outputs of the ONNX graph at ``path``, the batch axis dropped."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def tensors(values: Sequence[Any]) -> tuple[Tensor, ...]:
        out = []
        for value in values:
            tensor_type = value.type.tensor_type
            elem = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            if elem not in ONNX_TYPES or not dims or dims[0] != -1:
                raise FSQDeployError(f"triton: '{path}' {value.name} is {elem} {dims}; Triton batching needs a "
                                     "symbolic first (batch) axis of a known type. Note: export again")
            out.append(Tensor(value.name, ONNX_TYPES[elem], tuple(dims[1:])))
        return tuple(out)

    return tensors(model.graph.input), tensors(model.graph.output)


def _check_contract(manifest: Manifest, graph: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                    path: Path) -> None:
    """The graph speaks the manifest's I/O contract: one input and one output, named as it says."""
    io = io_contract(manifest.image_size, manifest.code_width, manifest.spatial)[graph]
    want = ([t["name"] for t in io["inputs"]], [t["name"] for t in io["outputs"]])
    got = ([t.name for t in inputs], [t.name for t in outputs])
    if got != want:
        raise FSQDeployError(f"triton: '{path}' has inputs {got[0]} and outputs {got[1]}, the artifact's contract "
                             f"says {want[0]} and {want[1]}. Note: export again")


def _warmup_hw(manifest: Manifest, profile: Mapping[str, Any] | None) -> tuple[int, int] | None:
    if not manifest.spatial:
        return None
    if profile and "opt_shape" in profile:
        height, width = (int(v) for v in profile["opt_shape"])
        return height, width
    f = manifest.downsample
    height, width = (-(-side // f) * f for side in WARMUP_SHAPE)
    return height, width


def _read_sidecar(manifest: Manifest, plan: str) -> dict[str, Any]:
    """The sidecar export wrote beside ``plan``, after the manifest vouched for both files."""
    sidecar = sidecar_path(Path(plan)).name
    for name in (plan, sidecar):
        manifest.require(name, "triton")
    manifest.verify("triton", names=[plan, sidecar], again="build the engines again with fsqdeploy export --trt")
    return dict(json.loads(manifest.path(sidecar).read_text()))


def served_graphs(manifest: Manifest, options: RepositoryOptions) -> tuple[list[ServedGraph], int]:
    """The two models to serve and the max_batch_size, every input checked; nothing is written."""
    served, batch_caps = [], []
    for graph in GRAPHS:
        if options.backend == "onnxruntime":
            name = graph_file(graph, options.precision)
            source = manifest.require(name, "triton")
            manifest.verify("triton", names=[name])
            tensors_from, model_file, cc, profile = source, "model.onnx", None, None
        else:
            name = engine_file(graph, options.precision)
            if not manifest.has(name):
                raise FSQDeployError(f"triton: '{manifest.art}' has no TensorRT engine {name} for the tensorrt_plan "
                                     f"backend. Note: build it with fsqdeploy export {manifest.art} --trt --precision "
                                     f"{options.precision} on a GPU like the server's, or use --backend onnxruntime")
            sidecar = _read_sidecar(manifest, name)
            source, profile = manifest.path(name), dict(sidecar.get("profile") or {})
            onnx_name = engine_source(graph, options.precision)
            tensors_from = manifest.require(onnx_name, "triton")
            # A hardware-compatible engine runs on any GPU of sm 8.0+: one file for all; any other only
            # on the compute capability it was built for, so its file is named by it and mapped.
            cc = None if sidecar.get("hardware_compatible") else str(sidecar["compute_capability"])
            model_file = "model.plan" if cc is None else f"model.sm{cc.replace('.', '')}.plan"
            if "max" in profile:
                batch_caps.append(int(profile["max"]))
        inputs, outputs = graph_tensors(tensors_from)
        _check_contract(manifest, graph, inputs, outputs, tensors_from)
        served.append(ServedGraph(graph, source, inputs, outputs, model_file, cc, _warmup_hw(manifest, profile)))
    return served, _max_batch(manifest, options, batch_caps)


def _max_batch(manifest: Manifest, options: RepositoryOptions, engine_caps: Sequence[int]) -> int:
    cap = min(engine_caps) if engine_caps else None
    if options.max_batch_size is None:
        default = DEFAULT_MAX_BATCH[manifest.spatial]
        return default if cap is None else min(default, cap)
    if cap is not None and options.max_batch_size > cap:
        raise FSQDeployError(f"triton: --max-batch-size {options.max_batch_size} is above the engines' profile "
                             f"(batch up to {cap}). Note: use --max-batch-size {cap} or rebuild the engines with "
                             f"fsqdeploy export --trt --max-batch {options.max_batch_size}")
    return options.max_batch_size


def contract(manifest: Manifest, precision: str) -> dict[str, str]:
    """The FSQ contract as Triton ``parameters`` (string values), keys CONTRACT_PREFIX + field."""
    tiling = manifest.section("tiling")
    values: dict[str, Any] = {
        "model_id": manifest.model_id, "levels": ",".join(map(str, manifest.levels)), "arch": manifest.arch,
        "downsample": manifest.downsample, "image_size": manifest.image_size, "latent_dim": manifest.latent_dim,
        "code_width": manifest.code_width, "stages": manifest.stages, "temperature": repr(manifest.temperature),
        "opset": manifest.opset, "precision": precision,
    }
    if tiling:  # as the manifest has it (encoder pixels, decoder cells); without it Codec derives both
        values["encoder_halo"], values["decoder_halo"] = tiling["encoder_halo"], tiling["decoder_halo"]
    return {CONTRACT_PREFIX + k: str(v) for k, v in values.items()}


def manifest_from_contract(parameters: Mapping[str, str], where: str) -> Manifest:
    """A Manifest (no files) from a served model's contract parameters, for a client without ART."""
    fields = {k[len(CONTRACT_PREFIX):]: v for k, v in parameters.items() if k.startswith(CONTRACT_PREFIX)}
    missing = [k for k in ("model_id", "levels", "arch", "downsample", "image_size", "latent_dim", "code_width",
                           "stages") if k not in fields]
    if missing:
        raise FSQDeployError(f"triton: {where} has no FSQ contract parameters ({CONTRACT_PREFIX}{missing[0]} is "
                             "missing). Note: serve a repository written by fsqdeploy triton")
    spatial = fields["arch"] == "conv"
    try:
        levels = [int(v) for v in fields["levels"].split(",")]
        record: dict[str, Any] = {
            "model_id": fields["model_id"], "arch": fields["arch"], "downsample": int(fields["downsample"]),
            "levels": levels, "latent_dim": int(fields["latent_dim"]), "code_width": int(fields["code_width"]),
            "image_size": int(fields["image_size"]), "stages": int(fields["stages"]),
            "temperature": float(fields.get("temperature", "0")), "opset": int(fields.get("opset", "0")),
            "io": io_contract(int(fields["image_size"]), int(fields["code_width"]), spatial), "files": {},
        }
        if "encoder_halo" in fields:
            record["tiling"] = {"encoder_halo": int(fields["encoder_halo"]),
                                "decoder_halo": int(fields["decoder_halo"])}
    except (KeyError, ValueError) as e:
        raise FSQDeployError(f"triton: {where} has a malformed FSQ contract ({e}). "
                             "Note: write the repository again with fsqdeploy triton") from None
    return Manifest.from_dict(Path(where), record)


# -- the configs -------------------------------------------------------------------------------------


def _pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise FSQDeployError("triton: the Triton model config schema needs tritonclient. "
                             "Note: pip install 'fsqdeploy[serve]'") from None
    return model_config_pb2


def _data_type(pb2: Any, name: str) -> int:
    return int(pb2.DataType.Value(name))


def _warmup_dims(tensor: Tensor, hw: tuple[int, int] | None, f: int) -> list[int]:
    """``tensor``'s dims with every -1 made concrete: the warm-up image's pixels, or its grid."""
    if -1 not in tensor.dims:
        return list(tensor.dims)
    if hw is None or len(tensor.dims) != 3:
        raise FSQDeployError(f"triton: cannot warm up {tensor.name} {list(tensor.dims)} (a bug)")
    scale = 1 if tensor.name == IMAGES else f
    return [tensor.dims[0], hw[0] // scale, hw[1] // scale]


def model_config(served: ServedGraph, name: str, options: RepositoryOptions, max_batch: int,
                 parameters: Mapping[str, str], downsample: int) -> model_config_pb2.ModelConfig:
    """The config of the encoder or decoder model."""
    pb2 = _pb2()
    config = pb2.ModelConfig(name=name, platform=BACKENDS[options.backend], max_batch_size=max_batch)
    for tensor in served.inputs:
        config.input.add(name=tensor.name, data_type=_data_type(pb2, tensor.data_type), dims=list(tensor.dims))
    for tensor in served.outputs:
        config.output.add(name=tensor.name, data_type=_data_type(pb2, tensor.data_type), dims=list(tensor.dims))
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    # TensorRT engines run on a GPU only, and so do the FP16 graphs: fsqdeploy runs them through
    # TensorRT (its onnxruntime-trt backend), never ONNX Runtime's CPU or CUDA kernels, so Triton's
    # ONNX Runtime backend gets the TensorRT accelerator with its FP16 flag off (precision_mode FP32):
    # the graph's own types, quantizer in FP32. FP32 graphs run where Triton finds a GPU, else on the CPU.
    on_gpu = options.backend == "tensorrt" or options.precision == "fp16"
    kind = pb2.ModelInstanceGroup.KIND_GPU if on_gpu else pb2.ModelInstanceGroup.KIND_AUTO
    config.instance_group.add(count=options.instances, kind=kind)
    if options.backend == "onnxruntime" and options.precision == "fp16":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP32"
    if served.compute_capability is not None:
        config.cc_model_filenames[served.compute_capability] = served.model_file
    else:
        config.default_model_filename = served.model_file
    for key, value in {**parameters, CONTRACT_PREFIX + "graph": served.graph}.items():
        config.parameters[key].string_value = value
    # Zeros are valid for both graphs: black pixels, and index 0 of every level.
    for batch in sorted({1, max_batch}):
        warmup = config.model_warmup.add(name=f"zeros_batch{batch}", batch_size=batch, count=1)
        for tensor in served.inputs:
            warmup.inputs[tensor.name].data_type = _data_type(pb2, tensor.data_type)
            warmup.inputs[tensor.name].dims.extend(_warmup_dims(tensor, served.warmup_hw, downsample))
            warmup.inputs[tensor.name].zero_data = True
    return config


def ensemble_config(encoder: ServedGraph, decoder: ServedGraph, names: Mapping[str, str], max_batch: int,
                    parameters: Mapping[str, str]) -> model_config_pb2.ModelConfig:
    """images -> (indices, reconstruction): the encoder then the decoder, in one request."""
    pb2 = _pb2()
    config = pb2.ModelConfig(name=names["ensemble"], platform="ensemble", max_batch_size=max_batch)
    (images,), (indices,) = encoder.inputs, encoder.outputs
    (reconstruction,) = decoder.outputs
    config.input.add(name=images.name, data_type=_data_type(pb2, images.data_type), dims=list(images.dims))
    config.output.add(name=indices.name, data_type=_data_type(pb2, indices.data_type), dims=list(indices.dims))
    config.output.add(name=RECONSTRUCTION, data_type=_data_type(pb2, reconstruction.data_type),
                      dims=list(reconstruction.dims))
    first = config.ensemble_scheduling.step.add(model_name=names["encoder"], model_version=-1)
    first.input_map[images.name] = images.name
    first.output_map[indices.name] = indices.name
    second = config.ensemble_scheduling.step.add(model_name=names["decoder"], model_version=-1)
    second.input_map[INDICES] = indices.name
    second.output_map[reconstruction.name] = RECONSTRUCTION
    for key, value in {**parameters, CONTRACT_PREFIX + "graph": "ensemble"}.items():
        config.parameters[key].string_value = value
    return config


def config_text(config: model_config_pb2.ModelConfig) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


# -- writing ---------------------------------------------------------------------------------------


def _write_model_file(served: ServedGraph, target: Path) -> None:
    if served.model_file.endswith(".plan"):
        shutil.copyfile(served.source, target)
        return
    import onnx

    from fsqdeploy.onnxgraph.graph import inline_functions

    onnx.save(inline_functions(onnx.load(str(served.source))), str(target))


def write_repository(art: str | Path, out: str | Path, options: RepositoryOptions = RepositoryOptions(), *,
                     force: bool = False) -> dict[str, str]:
    """Write the model repository for ``art`` at ``out``; returns {role: model name}. Every input is
    checked before anything is written; ``out`` appears whole (``force`` replaces an existing one)."""
    options.check()
    out = Path(out)
    if out.exists() and not force:
        raise FSQDeployError(f"triton: '{out}' already exists. Note: pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise FSQDeployError(f"triton: '{out}' is a file, not a model repository. Note: pass a directory path")
    if out.resolve() == Path(art).resolve() or out.resolve() in Path(art).resolve().parents:
        raise FSQDeployError(f"triton: --out '{out}' would replace the artifact '{art}' itself. "
                             "Note: write the repository to a directory of its own")
    manifest = Manifest.load(art, component="triton")
    served, max_batch = served_graphs(manifest, options)
    _pb2()
    names = model_names(options.name)
    parameters = contract(manifest, options.precision)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.absolute().parent))
    try:
        for graph in served:
            model_dir = work / names[graph.graph]
            (model_dir / "1").mkdir(parents=True)
            _write_model_file(graph, model_dir / "1" / graph.model_file)
            config = model_config(graph, names[graph.graph], options, max_batch, parameters, manifest.downsample)
            (model_dir / "config.pbtxt").write_text(config_text(config))
        ensemble_dir = work / names["ensemble"]
        # Triton loads a model only from a numbered version folder, even an ensemble with no files.
        (ensemble_dir / "1").mkdir(parents=True)
        (ensemble_dir / "config.pbtxt").write_text(config_text(ensemble_config(*served, names, max_batch, parameters)))
        os.chmod(work, 0o755)  # mkdtemp's 0700 would hide the repository from a container's user
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return names
