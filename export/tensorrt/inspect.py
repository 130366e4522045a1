"""The quantizer check on the built engine, from TensorRT's layer information (``IEngineInspector``
JSON at detailed profiling verbosity, saved beside the engine as ``<engine>.layers.json``): no layer
made only of quantizer nodes has a float input or output below FP32, and no layer at all reads or
writes a quantizer tensor below FP32. Pure Python over the JSON, so it runs anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsqdeploy.export.tensorrt.network import QUANTIZER_PREFIX, onnx_layer_names

_REDUCED = (("FP8", re.compile(r"fp8|e4m3|e5m2", re.I)), ("FP4", re.compile(r"fp4|e2m1", re.I)),
            ("BF16", re.compile(r"bf16|bfloat", re.I)), ("FP16", re.compile(r"fp16|half", re.I)),
            ("INT8", re.compile(r"\bint8\b", re.I)), ("INT4", re.compile(r"\bint4\b", re.I)))
_FULL = (("FP32", re.compile(r"fp32|float", re.I)), ("INT32", re.compile(r"int32", re.I)),
         ("INT64", re.compile(r"int64", re.I)), ("BOOL", re.compile(r"bool", re.I)),
         ("UINT8", re.compile(r"uint8", re.I)))
REDUCED_PRECISIONS = frozenset(label for label, _ in _REDUCED)


def tensor_precision(entry: Mapping[str, Any]) -> str:
    """FP32, FP16, BF16, INT8, INT32, ... of one layer input/output of the inspector's JSON.
    TensorRT 10 writes "Format/Datatype" ("Row major linear FP16 format", "Half", "Float", "Int32");
    TensorRT 11 splits it into "Format" and "DataType". Reduced types are matched first."""
    text = " ".join(str(v) for k, v in entry.items() if "type" in k.lower() or "format" in k.lower())
    for label, pattern in (*_REDUCED, *_FULL):
        if pattern.search(text):
            return label
    return "UNKNOWN"


def onnx_names(layer: Mapping[str, Any]) -> list[str]:
    """The ONNX nodes a layer implements: from its metadata, else its name."""
    return onnx_layer_names(str(layer.get("Metadata", ""))) or [str(layer.get("Name", ""))]


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
    """Check the engine's layer information: no layer made only of quantizer nodes touches a float
    below FP32, and no layer reads or writes a quantizer tensor below FP32. Layers that fuse
    quantizer and conv nodes are checked on their quantizer tensors only (their conv side is FP16
    by design)."""
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
