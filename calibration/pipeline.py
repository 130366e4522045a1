"""ART -> ART/{encoder,decoder}.int8.onnx + calibration.json, added to the manifest.

In order: validate every input (nothing is written on a user error), load the data, reuse the
record if every input matches, else prepare the graphs (exact rewrites), collect ranges, optionally
run the sensitivity pass, quantize, measure on the test split, and write the files atomically.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fsqdeploy.artifact import GRAPHS as GRAPH_NAMES
from fsqdeploy.artifact import Manifest, add_files, graph_file
from fsqdeploy.backends.onnxruntime import ort_session as session
from fsqdeploy.calibration.accuracy import (
    TARGET_AGREEMENT,
    TARGET_PSNR_DROP,
    Accuracy,
    lower_bound,
    measure,
    psnr_per_image,
    run,
)
from fsqdeploy.calibration.data import CalibrationData, load_calibration_data
from fsqdeploy.calibration.quantize import (
    LAYER_OPS,
    QuantSettings,
    activation_scales,
    calibration_providers,
    collect_ranges,
    name_nodes,
    protected_nodes,
    quantize_graph,
    quantized_layers,
    slow_in_int8,
)
from fsqdeploy.calibration.record import (
    PROCEDURE_VERSION,
    RECORD_FILE,
    RECORD_FORMAT,
    RECORD_VERSION,
    differences,
    read_record,
)
from fsqdeploy.calibration.sensitivity import keep_worst_in_float
from fsqdeploy.calibration.tensorrt_graphs import TENSORRT_FILES, tensorrt_settings
from fsqdeploy.calibration.tensorrt_graphs import prepare as prepare_for_tensorrt
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from fsqdeploy.images import images_to_float
from fsqdeploy.metrics import mean_psnr
from fsqdeploy.onnxgraph.graph import validate
from fsqdeploy.onnxgraph.rewrites import conv_as_matmul, transposed_convs_for_onnxruntime
from fsqdeploy.onnxgraph.surgery import metadata, stamp

# graph -> the file it is calibrated from, and the files calibrate writes (ONNX Runtime's QDQ graphs)
GRAPHS = {g: graph_file(g) for g in GRAPH_NAMES}
INT8_FILES = {g: graph_file(g, "int8") for g in GRAPH_NAMES}
DEFAULT_BATCH_SIZE, DEFAULT_EVAL_IMAGES = 64, 1024


@dataclass
class CalibrationResult:
    art: Path
    record: dict[str, Any]
    accuracy: Accuracy
    reused: bool
    reasons: list[str] = field(default_factory=list)  # why an existing record was not reused
    seconds: float = 0.0


# -- the graphs as they are quantized ----------------------------------------------------------------


def feeding_conv(model: onnx.ModelProto, protected: Mapping[str, str]) -> str | None:
    """The Conv whose output reaches the layer feeding the quantizer through Relu/Reshape/Flatten only."""
    by_name = {n.name: n for n in model.graph.node}
    producers = {o: n for n in model.graph.node for o in n.output}
    head = next((by_name[name] for name, why in protected.items()
                 if why == "feeds the quantizer" and by_name[name].op_type in LAYER_OPS), None)
    node = head and producers.get(head.input[0])
    while node is not None and node.op_type in ("Relu", "Reshape", "Flatten"):
        node = producers.get(node.input[0])
    return node.name if node is not None and node.op_type == "Conv" else None


def prepare(graph: str, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str], list[str]]:
    """The graph to quantize, the nodes that stay in float (name -> why) and the rewrites applied.

    Decoder: every ConvTranspose(k4, s2, p1) as phase convolutions with whole blocks of outputs
    (fsqdeploy/onnxgraph/rewrites.py), so that ONNX Runtime can run them on INT8 kernels. Encoder:
    the convolution feeding the quantizer's float layer as a MatMul, so it runs in INT8 but hands
    that layer a float result. Both: layers slower in INT8 than in float stay in float
    (quantize.slow_in_int8).
    """
    model = name_nodes(onnx.ModelProto.FromString(model.SerializeToString()))  # a copy: the source stays as read
    applied = []
    if graph == "decoder":
        model, applied = transposed_convs_for_onnxruntime(model)
        return model, {**slow_in_int8(model), **protected_nodes(model, graph)}, applied
    protected = protected_nodes(model, graph)
    conv = feeding_conv(model, protected)
    if conv is not None:
        model, matmul = conv_as_matmul(model, conv)
        if matmul is not None:
            applied.append(f"{conv} -> MatMul (INT8 inputs, float output)")
    return model, {**slow_in_int8(model), **protected}, applied


# -- the whole command -------------------------------------------------------------------------------


def calibrate_artifact(
    art: str | Path,
    *,
    data: str | None = None,
    method: str = "minmax",
    samples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    sensitivity: bool = False,
    eval_images: int = DEFAULT_EVAL_IMAGES,
    activation_type: str = "uint8",
    weight_type: str = "int8",
) -> CalibrationResult:
    """Calibrate ART's graphs to INT8 (or reuse its record); raises FSQDeployError before writing anything."""
    import onnxruntime

    started = time.perf_counter()
    art = Path(art)
    settings = QuantSettings(method=method, activation_type=activation_type, weight_type=weight_type)
    settings.validate()
    manifest = Manifest.load(art)
    for name in GRAPHS.values():
        manifest.require(name, "calibrate")
    manifest.verify("calibrate", names=GRAPHS.values())
    spec = data or manifest.default_data()
    if not spec:
        raise FSQDeployError("calibrate: the manifest names no data source. Note: pass --data SPEC")
    cdata = load_calibration_data(spec, manifest.image_size, samples, batch_size, eval_images,
                                  spatial=manifest.spatial)

    key = {
        "source_onnx": {name: manifest.sha256(name) for name in GRAPHS.values()},
        "data": {"source": cdata.source, "image_size": manifest.image_size, "digest": cdata.digest,
                 "holdout_images": len(cdata.holdout), "holdout_digest": cdata.holdout_digest,
                 "test_images": len(cdata.test), "test_digest": cdata.test_digest},
        "method": method,
        "samples": len(cdata.images),
        "settings": {**{k: v for k, v in settings.to_json().items() if k != "method"},
                     "batch_size": batch_size, "sensitivity": sensitivity,
                     "targets": {"index_agreement": TARGET_AGREEMENT, "psnr_drop_db": TARGET_PSNR_DROP},
                     "onnxruntime": onnxruntime.__version__, "procedure": PROCEDURE_VERSION},
    }
    sources = {g: onnx.load(str(art / name)) for g, name in GRAPHS.items()}
    old = read_record(art)
    reasons = differences(old, key) if old else []
    if old and not reasons:
        reused = _reuse(art, old, sources, settings)
        if reused is not None:
            reused.seconds = time.perf_counter() - started
            return reused
        reasons = ["its INT8 graphs could not be rebuilt identically from it"]
    result = _calibrate(art, key, sources, settings, cdata, batch_size, sensitivity)
    result.reasons, result.seconds = reasons, time.perf_counter() - started
    return result


def _calibrate(art: Path, key: dict[str, Any], sources: dict[str, onnx.ModelProto], settings: QuantSettings,
               cdata: CalibrationData, batch_size: int, sensitivity: bool) -> CalibrationResult:
    fp32 = (session(sources["encoder"]), session(sources["decoder"]))
    calib = images_to_float(cdata.images)
    idx32 = run(fp32[0], calib)

    prepared, protected, rewrites, ranges = {}, {}, {}, {}
    for g in GRAPHS:
        prepared[g], protected[g], rewrites[g] = prepare(g, sources[g])
    # The decoder is calibrated on what it will decode: the FP32 encoder's indices of the same images.
    ranges["encoder"] = collect_ranges(prepared["encoder"], _batches("images", calib, batch_size), settings)
    ranges["decoder"] = collect_ranges(prepared["decoder"], _batches("indices", idx32, batch_size), settings)

    floats = {g: dict(protected[g]) for g in GRAPHS}
    holdout = images_to_float(cdata.holdout)
    scores = _sensitivity(prepared, ranges, settings, floats, fp32, holdout) if sensitivity else None

    int8 = {g: _quantize(prepared[g], ranges[g], settings, floats[g], sources[g], key["method"]) for g in GRAPHS}
    accuracy = _measure(cdata, fp32, int8)
    trt8, trt_record = _calibrate_tensorrt(sources, settings, floats, calib, idx32, batch_size, key["method"], cdata,
                                           fp32)
    record = {
        "format": RECORD_FORMAT,
        "format_version": RECORD_VERSION,
        **key,
        "calibration_providers": calibration_providers(),
        "rewrites": rewrites,
        "float_nodes": floats,
        "int8_layers": {g: quantized_layers(int8[g]) for g in GRAPHS},
        "sensitivity": scores,
        "ranges": {g: {t: list(r) for t, r in sorted(ranges[g].items())} for g in GRAPHS},
        "scales": {g: activation_scales(int8[g]) for g in GRAPHS},
        "results": {"data": cdata.source, "images": len(cdata.test), **accuracy.to_json()},
        "tensorrt": trt_record,
    }
    _write(art, {**{INT8_FILES[g]: int8[g] for g in GRAPHS}, **{TENSORRT_FILES[g]: trt8[g] for g in GRAPHS}}, record)
    return CalibrationResult(art, record, accuracy, reused=False)


def _calibrate_tensorrt(sources: Mapping[str, onnx.ModelProto], settings: QuantSettings,
                        floats: Mapping[str, Mapping[str, str]], calib: np.ndarray, idx32: np.ndarray,
                        batch_size: int, method: str, cdata: CalibrationData, fp32: tuple[Any, Any]
                        ) -> tuple[dict[str, onnx.ModelProto], dict[str, Any]]:
    """The TensorRT graphs (tensorrt_graphs.py) and their part of the record."""
    trt_settings = tensorrt_settings(settings)
    prepared, kept, ranges = {}, {}, {}
    for g in GRAPHS:
        prepared[g], kept[g] = prepare_for_tensorrt(g, sources[g], floats[g])
    ranges["encoder"] = collect_ranges(prepared["encoder"], _batches("images", calib, batch_size), trt_settings)
    ranges["decoder"] = collect_ranges(prepared["decoder"], _batches("indices", idx32, batch_size), trt_settings)
    trt8 = {g: _quantize(prepared[g], ranges[g], trt_settings, kept[g], sources[g], method) for g in GRAPHS}
    accuracy = _measure(cdata, fp32, trt8)
    return trt8, {
        "settings": trt_settings.to_json(),
        "float_nodes": kept,
        "int8_layers": {g: quantized_layers(trt8[g]) for g in GRAPHS},
        "ranges": {g: {t: list(r) for t, r in sorted(ranges[g].items())} for g in GRAPHS},
        "results": {"data": cdata.source, "images": len(cdata.test), "measured_on": "onnxruntime-cpu",
                    **accuracy.to_json()},
    }


def _sensitivity(prepared: Mapping[str, onnx.ModelProto], ranges: Mapping[str, Any], settings: QuantSettings,
                 floats: dict[str, dict[str, str]], fp32: tuple[Any, Any], holdout: np.ndarray) -> dict[str, Any]:
    """The sensitivity pass on the held-out train images; adds the layers it keeps to ``floats``.

    A target holds when its 95% lower confidence bound over the images does (accuracy.lower_bound):
    the encoder's per-image index agreement >= 0.99, the per-image PSNR difference of the round
    trip through the INT8 encoder just chosen and the decoder >= -0.5 dB.
    """
    idx32 = run(fp32[0], holdout)
    psnr32 = psnr_per_image(run(fp32[1], idx32), holdout)

    def agreement(m: onnx.ModelProto) -> np.ndarray:
        return np.mean(run(session(m), holdout) == idx32, axis=1)

    enc_scores, enc_kept = keep_worst_in_float(
        prepared["encoder"], ranges["encoder"], settings, floats["encoder"],
        score=lambda m: float(agreement(m).mean()), meets=lambda m: lower_bound(agreement(m)) >= TARGET_AGREEMENT)
    floats["encoder"].update({n: "sensitivity" for nodes in enc_kept.values() for n in nodes})
    encoder8 = _quantize(prepared["encoder"], ranges["encoder"], settings, floats["encoder"])
    idx8 = run(session(encoder8), holdout)
    dec_scores, dec_kept = keep_worst_in_float(
        prepared["decoder"], ranges["decoder"], settings, floats["decoder"],
        score=lambda m: mean_psnr(run(session(m), idx32), holdout),
        meets=lambda m: lower_bound(psnr_per_image(run(session(m), idx8), holdout) - psnr32) >= -TARGET_PSNR_DROP)
    floats["decoder"].update({n: "sensitivity" for nodes in dec_kept.values() for n in nodes})
    decoder8 = _quantize(prepared["decoder"], ranges["decoder"], settings, floats["decoder"])
    final_agreement = np.mean(idx8 == idx32, axis=1)
    final_delta = psnr_per_image(run(session(decoder8), idx8), holdout) - psnr32
    return {
        "images": len(holdout),
        "rule": "keep the worst layers in float until the 95% lower confidence bound of the target holds",
        "encoder": {"score": "index agreement, only this layer INT8", "layers": [s.to_json() for s in enc_scores],
                    "kept": list(enc_kept), "index_agreement": float(final_agreement.mean()),
                    "index_agreement_lower_95": lower_bound(final_agreement)},
        "decoder": {"score": "decoded PSNR (dB) of the FP32 indices, only this layer INT8",
                    "layers": [s.to_json() for s in dec_scores], "kept": list(dec_kept),
                    "psnr_delta": float(final_delta.mean()), "psnr_delta_lower_95": lower_bound(final_delta)},
    }


def _batches(name: str, array: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    return ({name: array[i : i + batch_size]} for i in range(0, len(array), batch_size))


def _quantize(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], settings: QuantSettings,
              floats: Mapping[str, str], source: onnx.ModelProto | None = None, method: str = "") -> onnx.ModelProto:
    """The QDQ graph; with ``source``, stamped with its metadata and checked like an exported graph."""
    int8 = quantize_graph(model, ranges, settings, floats)
    if source is None:
        return int8
    stamp(int8, {**metadata(source), "precision": "int8", "calibration_method": method},
          producer=(source.producer_name, source.producer_version))
    validate(int8, "calibrate")
    return int8


def _measure(cdata: CalibrationData, fp32: tuple[Any, Any], int8: Mapping[str, onnx.ModelProto]) -> Accuracy:
    return measure(images_to_float(cdata.test), fp32, (session(int8["encoder"]), session(int8["decoder"])))


def _write(art: Path, graphs: Mapping[str, onnx.ModelProto], record: dict[str, Any]) -> None:
    """Write the INT8 graphs (file name -> model), the record and the manifest entries."""
    blobs = {name: model.SerializeToString() for name, model in graphs.items()}
    for name, blob in blobs.items():
        if not (art / name).is_file() or (art / name).read_bytes() != blob:
            write_bytes_atomic(art / name, blob)
    record["files"] = {name: sha256_file(art / name) for name in blobs}
    write_json_atomic(art / RECORD_FILE, record)
    _add_to_manifest(art, record)


def _add_to_manifest(art: Path, record: dict[str, Any]) -> None:
    results = record["results"]
    summary = {
        "files": sorted(record["files"]),
        "record": RECORD_FILE,
        "format": "QDQ",
        "method": record["method"],
        "samples": record["samples"],
        "data": record["data"]["source"],
        "activations": record["settings"]["activation_type"],
        "weights": f"{record['settings']['weight_type']} per-channel" if record["settings"]["per_channel"]
        else record["settings"]["weight_type"],
        "float_nodes": {g: sorted(names) for g, names in record["float_nodes"].items()},
        **{k: results[k] for k in ("images", "index_agreement", "psnr_fp32", "psnr_int8", "psnr_delta",
                                   "targets_met")},
        "tensorrt": {"files": [TENSORRT_FILES[g] for g in GRAPHS], "activations": "int8 symmetric",
                     **{k: record["tensorrt"]["results"][k] for k in ("measured_on", "index_agreement", "psnr_delta",
                                                                       "targets_met")}},
    }
    add_files(art, [*record["files"], RECORD_FILE], {"int8": summary})


def _ranges(stored: Mapping[str, list[float]]) -> dict[str, tuple[float, float]]:
    return {t: (float(r[0]), float(r[1])) for t, r in stored.items()}


def _reuse(art: Path, record: dict[str, Any], sources: dict[str, onnx.ModelProto],
           settings: QuantSettings) -> CalibrationResult | None:
    """The result from ``record`` if its graphs are on disk or rebuild byte for byte; else None."""
    on_disk = all((art / name).is_file() and sha256_file(art / name) == sha for name, sha in record["files"].items())
    if not on_disk:
        if "tensorrt" not in record:
            return None
        trt, trt_settings = record["tensorrt"], tensorrt_settings(settings)
        rebuilt = {}
        for g in GRAPHS:
            model, _, _ = prepare(g, sources[g])
            rebuilt[INT8_FILES[g]] = _quantize(model, _ranges(record["ranges"][g]), settings,
                                               record["float_nodes"][g], sources[g], record["method"])
            model, _ = prepare_for_tensorrt(g, sources[g], record["float_nodes"][g])
            rebuilt[TENSORRT_FILES[g]] = _quantize(model, _ranges(trt["ranges"][g]), trt_settings,
                                                   trt["float_nodes"][g], sources[g], record["method"])
        if any(hashlib.sha256(m.SerializeToString()).hexdigest() != record["files"].get(name)
               for name, m in rebuilt.items()):
            return None
        for name, m in rebuilt.items():
            write_bytes_atomic(art / name, m.SerializeToString())
    manifest = Manifest.load(art)
    listed = all(manifest.files.get(name, {}).get("sha256") == sha for name, sha in record["files"].items())
    if not listed or manifest.files.get(RECORD_FILE, {}).get("sha256") != sha256_file(art / RECORD_FILE) \
            or not manifest.section("int8"):
        _add_to_manifest(art, record)
    return CalibrationResult(art, record, Accuracy.from_json(record["results"]), reused=True)
