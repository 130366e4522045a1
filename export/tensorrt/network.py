"""The graph TensorRT's ONNX parser reads, the strongly typed network it fills, and the first
quantizer check, on the parsed network.

The parser reads the graph with the FSQ local functions inlined and every quantizer node named
``fsq_quantizer/...``. Inlining sidesteps the parser's local-function importer, which binds a
function's formal input to an existing tensor of the same name instead of the actual argument
(onnx-tensorrt ``LocalFunctionImporter``: "Found input ... that does not correspond to an outside
scope name"); FSQQuantize's formal input is ``latent``, which is also the encoder's latent, so
stage 2 and later would quantize the wrong tensor. The names make the quantizer's layers
recognisable in what TensorRT reports about its layers (``network_quantizer_problems`` here, and
``inspect.inspect_quantizer`` on the built engine).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from fsqdeploy.backends.tensorrt_env import (
    ALWAYS_STRONGLY_TYPED_SINCE,
    BUILD_MIN_MAJOR,
    INSTALL_HINT,
    tensorrt_major,
)
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.onnxgraph.graph import FLOAT_TYPES, inline_functions, split_graph, tensor_types

if TYPE_CHECKING:  # type-checked against tensorrt-stubs; imported lazily at run time
    import tensorrt as trt

QUANTIZER_PREFIX = "fsq_quantizer/"
# How TensorRT names the ONNX nodes a layer implements, in a layer's metadata and in the
# inspector's "Metadata": "[ONNX Layer: name]" or "[ONNX Layer: name | Local Function: f]".
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]|]+?)\s*(?:\|[^\]]*)?\]")


def onnx_layer_names(metadata: str) -> list[str]:
    """The ONNX node names in a TensorRT layer's metadata ([] when it names none)."""
    return [n.strip() for n in _ONNX_LAYER.findall(metadata)]


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


def create_network(builder: trt.Builder) -> trt.INetworkDefinition:
    """A strongly typed network, decided by TensorRT's major version: TensorRT 10 needs the
    STRONGLY_TYPED flag, and reports it (``get_flag``); TensorRT 11 builds no other kind and ignores
    the deprecated flag, so it is not set there, and ``get_flag`` is not asked (whether it echoes an
    ignored flag is not documented). Older TensorRT is refused."""
    import tensorrt as trt

    major = tensorrt_major(trt)
    if major >= ALWAYS_STRONGLY_TYPED_SINCE:
        return builder.create_network(0)
    if major < BUILD_MIN_MAJOR:
        raise FSQDeployError(f"tensorrt: TensorRT {trt.__version__} cannot build fsqdeploy's strongly typed engines. "
                             f"Note: install TensorRT {BUILD_MIN_MAJOR}.0 or newer: {INSTALL_HINT}")
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    network = builder.create_network(1 << int(flag))
    if not network.get_flag(flag):
        raise FSQDeployError(f"tensorrt: TensorRT {trt.__version__} did not make the network strongly typed, so the "
                             "graphs' types would not be kept. Note: reinstall TensorRT: " + INSTALL_HINT)
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
    """(quantizer layers found, problems): every float output of a quantizer layer is float32.
    At least one such layer must exist, or the names did not survive the parse."""
    import tensorrt as trt

    wanted = set(quantizer_nodes)
    reduced = {getattr(trt, t) for t in ("float16", "bfloat16", "int8", "fp8", "int4", "fp4") if hasattr(trt, t)}
    found, problems = 0, []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        names = onnx_layer_names(getattr(layer, "metadata", "") or "") or [layer.name.strip()]
        if not any(n in wanted or n.startswith(QUANTIZER_PREFIX) for n in names):
            continue
        found += 1
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            if tensor.dtype in reduced:
                problems.append(f"layer '{layer.name}' writes '{tensor.name}' as {tensor.dtype}")
    if not found:
        problems.append("no layer of the parsed network comes from a quantizer node")
    return found, problems
