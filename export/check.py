"""``fsqdeploy check ART``: static verification of an artifact directory, no GPU needed.

Checks, each a row of the report: the manifest's file hashes; per graph the ONNX checker (full
check, strict shape inference), the I/O contract (names, dtypes, static shapes but for ``batch``, no
int64/float64) and a TensorRT lint (every op after inlining in the parser's supported set for the
target major version, opset in range). Plus an informational row: the quantizer's FP16 risk
(export/fp16.py defines it: the share of pre-rounding values within FP16 rounding error of
a threshold, on the test split).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from fsqdeploy.artifact import BATCH, GRAPHS, IMAGES, Manifest, graph_file, io_contract
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export import trt_ops
from fsqdeploy.export.fp16 import fp16_risk
from fsqdeploy.onnxgraph.graph import find_quantizer_stages, inline_functions, validate

_DTYPES = {TensorProto.FLOAT: "float32", TensorProto.INT32: "int32", TensorProto.INT64: "int64",
           TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16", TensorProto.UINT8: "uint8"}
_FORBIDDEN_IO = {"int64", "float64"}


@dataclass
class Finding:
    check: str
    status: str  # "pass" | "fail" | "info"
    detail: str


@dataclass
class CheckReport:
    artifact: str
    trt_version: int
    findings: list[Finding] = field(default_factory=list)
    fp16_risk: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    def add(self, check: str, problems: list[str], ok_detail: str) -> None:
        self.findings.append(Finding(check, "fail" if problems else "pass", "; ".join(problems) or ok_detail))

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "passed": self.passed, "trt_version": self.trt_version,
                "checks": [asdict(f) for f in self.findings], "fp16_risk": self.fp16_risk}


# -- per-graph checks ------------------------------------------------------------------------------


def _describe(vi: onnx.ValueInfoProto) -> dict[str, Any]:
    t = vi.type.tensor_type
    dims: list[Any] = [d.dim_param if d.HasField("dim_param") else
                       (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
    return {"name": vi.name, "dtype": _DTYPES.get(t.elem_type, TensorProto.DataType.Name(t.elem_type).lower()),
            "shape": dims}


def io_problems(model: onnx.ModelProto, expected: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Differences between the graph's I/O and the contract; also any dynamic dim but the batch."""
    problems = []
    for side, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        got = [_describe(v) for v in values]
        want = expected.get(side, [])
        if [g["name"] for g in got] != [w["name"] for w in want]:
            problems.append(f"{side} are {[g['name'] for g in got]}, expected {[w['name'] for w in want]}")
            continue
        for g, w in zip(got, want):
            if g["dtype"] in _FORBIDDEN_IO:
                problems.append(f"'{g['name']}' is {g['dtype']} (TensorRT and the contract want 32-bit I/O)")
            elif g["dtype"] != w["dtype"]:
                problems.append(f"'{g['name']}' is {g['dtype']}, expected {w['dtype']}")
            if g["shape"] != w["shape"]:
                problems.append(f"'{g['name']}' has shape {g['shape']}, expected {w['shape']}")
            # The contract's symbolic dims are the only dynamic ones: batch, and for spatial
            # models height and width (or the grid's).
            symbolic = [d for d in w["shape"] if isinstance(d, str)]
            dynamic = [d for d in g["shape"] if not isinstance(d, int)]
            if dynamic != symbolic or (g["shape"] and g["shape"][0] != BATCH):
                axes = ", ".join(f"'{d}'" for d in symbolic)
                problems.append(f"'{g['name']}' must be dynamic on axis 0 ('{BATCH}') only" if symbolic == [BATCH]
                                else f"'{g['name']}' must be dynamic on {axes} only")
    return problems


def trt_problems(model: onnx.ModelProto, version: int) -> list[str]:
    """Ops TensorRT `version` cannot parse (after inlining local functions), and opset range."""
    problems = []
    if model.functions and version < trt_ops.LOCAL_FUNCTIONS_SINCE:
        problems.append(f"TensorRT {version} cannot parse ONNX local functions. Note: export with --inline")
    flat = inline_functions(model)
    supported = trt_ops.SUPPORTED_OPS[version]
    bad = sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                  for n in flat.graph.node
                  if n.domain not in ("", "ai.onnx") or n.op_type not in supported})
    if bad:
        problems.append(f"ops not supported by TensorRT {version}: {', '.join(bad)}")
    lo, hi = trt_ops.OPSET_RANGE[version]
    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if not lo <= opset <= hi:
        problems.append(f"opset {opset} is outside TensorRT {version}'s range {lo}..{hi}")
    return problems


def check_graph(report: CheckReport, art: Path, name: str, expected_io: dict[str, Any]) -> onnx.ModelProto | None:
    path = art / name
    if not path.is_file():
        report.add(f"{name}", [f"'{path}' is missing"], "")
        return None
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends: any unreadable file is a finding
        report.add(f"{name}", [f"cannot be read as ONNX ({type(e).__name__})"], "")
        return None
    try:
        validate(model, name)
        report.add(f"{name}: onnx checker", [], "full check and strict shape inference clean")
    except FSQDeployError as e:
        report.add(f"{name}: onnx checker", [str(e)], "")
    report.add(f"{name}: I/O contract", io_problems(model, expected_io),
               ", ".join(f"{v.name} {_describe(v)['dtype']} {_describe(v)['shape']}"
                         for v in [*model.graph.input, *model.graph.output]))
    ops = sorted({n.op_type for n in inline_functions(model).graph.node})
    report.add(f"{name}: TensorRT {report.trt_version}", trt_problems(model, report.trt_version),
               f"{len(ops)} op types, all supported: {', '.join(ops)}")
    return model


# -- FP16 risk -------------------------------------------------------------------------------------


def _risk_images(manifest: Manifest, data: str | None, limit: int | None) -> np.ndarray:
    """The test split (patch models), or the test photos cut into training-size patches (spatial
    models: what export's FP16 record measures on)."""
    from fsqdeploy.data import load_images, load_photos
    from fsqdeploy.images import images_to_float, to_patches

    spec = data or manifest.default_data()
    if not spec:
        raise FSQDeployError("check: the manifest names no test data. Note: pass --data SPEC")
    if manifest.spatial:
        photos = load_photos(spec, manifest.downsample).test
        photos = photos[:limit] if limit is not None else photos
        return np.concatenate([to_patches(p, manifest.image_size)[0] for p in photos])
    count = limit if limit is not None else manifest.default_images()
    return images_to_float(load_images(spec, manifest.image_size).test[:count])


# -- the whole check -------------------------------------------------------------------------------


def check_artifact(art_dir: str | Path, trt_version: int = 10, data: str | None = None,
                   images: int | None = None, fp16: bool = True) -> CheckReport:
    """Run every check; a missing or unreadable manifest raises FSQDeployError (one line)."""
    if trt_version not in trt_ops.SUPPORTED_OPS:
        raise FSQDeployError(f"check: TensorRT {trt_version} is not known. Note: use one of "
                             f"{', '.join(map(str, trt_ops.supported_versions()))}")
    art = Path(art_dir)
    manifest = Manifest.load(art)
    report = CheckReport(str(art), trt_version)
    report.add("manifest files", manifest.problems(), f"{len(manifest.files)} files match their size and sha256")
    report.add("manifest I/O contract", _contract_problems(manifest), "matches levels, code width and image size")
    contract = io_contract(manifest.image_size, manifest.code_width, spatial=manifest.spatial)
    graphs = {graph: check_graph(report, art, graph_file(graph), contract[graph]) for graph in GRAPHS}
    for graph in GRAPHS:
        name = graph_file(graph, "fp16")
        if manifest.has(name):  # written by export --precision fp16: the quantizer must stay FP32
            model = check_graph(report, art, name, contract[graph])
            if model is not None:
                report.add(f"{name}: quantizer FP32", _fp32_quantizer_problems(model),
                           "every float tensor of the quantizer is float32")
    int8 = [(graph_file(g, "int8", target), g) for target in ("onnxruntime", "tensorrt") for g in GRAPHS]
    for name, key in int8:
        if manifest.has(name):  # written by fsqdeploy calibrate
            model = check_graph(report, art, name, contract[key])
            if model is not None:
                report.add(f"{name}: quantizer float", _float_quantizer_problems(model),
                           "no Q/DQ node touches the quantizer")
            if model is not None and ".trt." in name:
                report.add(f"{name}: TensorRT Q/DQ", tensorrt_qdq_problems(model),
                           "int8 with zero point 0, float biases: what TensorRT's parser reads")
    encoder = graphs["encoder"]
    if not fp16:
        return report
    if encoder is None or not find_quantizer_stages(encoder):
        report.findings.append(Finding("quantizer FP16 risk", "info", "skipped: no readable quantizer"))
        return report
    try:
        risk = fp16_risk(encoder, _risk_images(manifest, data, images))
    except FSQDeployError as e:
        report.findings.append(Finding("quantizer FP16 risk", "info", f"skipped: {e}"))
        return report
    report.fp16_risk = risk
    per_stage = ", ".join(f"stage {s['stage']} {100 * s['share']:.3f}%" for s in risk["stages"])
    report.findings.append(Finding(
        "quantizer FP16 risk", "info",
        f"{100 * risk['share']:.3f}% of pre-rounding values within FP16 error of a threshold "
        f"({per_stage}; {risk['images']} test images){_measured_fp16(manifest)}"))
    return report


def _fp32_quantizer_problems(model: onnx.ModelProto) -> list[str]:
    from fsqdeploy.onnxgraph.graph import quantizer_precision_problems

    try:
        return quantizer_precision_problems(model)
    except FSQDeployError as e:
        return [str(e)]


def _float_quantizer_problems(model: onnx.ModelProto) -> list[str]:
    """The FSQ quantizer of an INT8 graph: no QuantizeLinear/DequantizeLinear reads or writes the
    encoder's latent or indices, or the decoder's indices (its codes may be quantized: they feed an
    INT8 layer, and its Q/DQ pair sits after the dequantizer)."""
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    stages = find_quantizer_stages(model)
    guarded = {t for s in stages for t in (s.latent, s.indices)} | {i.name for i in model.graph.input}
    guarded -= {IMAGES}
    return [f"{n.name} ({n.op_type}) touches {sorted(guarded & {*n.input, *n.output})[0]}"
            for n in qdq if guarded & {*n.input, *n.output}]


def tensorrt_qdq_problems(model: onnx.ModelProto) -> list[str]:
    """What TensorRT's ONNX parser refuses in a Q/DQ graph: a zero point that is not int8 (uint8
    activations, int32 biases) or not zero."""
    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zero is None:
            if n.op_type == "QuantizeLinear" and not any(a.name == "output_dtype" for a in n.attribute):
                problems.append(f"{n.name}: no zero point, so uint8 output (TensorRT reads int8 only)")
            continue
        kind = {**_DTYPES, TensorProto.INT8: "int8"}.get(zero.data_type, str(zero.data_type))
        if zero.data_type != TensorProto.INT8:
            problems.append(f"{n.name}: {kind} zero point (TensorRT reads int8 only)")
        elif numpy_helper.to_array(zero).any():
            problems.append(f"{n.name}: non-zero zero point (TensorRT quantizes symmetrically)")
    return problems


def _measured_fp16(manifest: Manifest) -> str:
    """What export --precision fp16 measured, to set beside the risk that predicts it."""
    record = manifest.section("fp16")
    try:
        rounded = record["fp16_rounding"]["index_agreement"]  # type: ignore[index]
        ort = record["onnxruntime_cpu"]["index_agreement"]  # type: ignore[index]
    except (KeyError, TypeError):
        return ""
    return (f"; the FP16 graphs measured {100 * rounded:.3f}% indices equal to FP32 with every FP16 tensor "
            f"rounded, {100 * ort:.3f}% on ONNX Runtime CPU")


def _contract_problems(manifest: Manifest) -> list[str]:
    """The manifest's io must be the fixed contract for its own image size and code width."""
    s, w = manifest.image_size, manifest.code_width
    want = io_contract(s, w, spatial=manifest.spatial)
    problems = []
    if w != len(manifest.levels):
        problems.append(f"code_width {w} != {len(manifest.levels)} levels")
    if manifest.io != want:
        problems.append("io differs from the contract for this image size and code width")
    return problems
