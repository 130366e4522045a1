"""OpenVINO on the CPU (``pip install "fsqdeploy[openvino]"``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fsqdeploy.artifact import GRAPHS, graph_file
from fsqdeploy.backends.base import Backend, Runner
from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    from fsqdeploy.artifact import Manifest

INSTALL_HINT = 'pip install "fsqdeploy[openvino]"'
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise FSQDeployError(f"openvino: not installed. Note: {INSTALL_HINT}") from None
    return openvino


def openvino_supports_bf16() -> bool:
    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINORunner(Runner):
    """OpenVINO on the CPU, reading the exported ONNX (with local functions inlined)."""

    name = "openvino"

    def __init__(self, model: Callable[[], bytes], precision: str = "fp32", threads: int | None = None,
                 hint: str | None = None):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(precision)
        if hint not in (None, *PERFORMANCE_HINTS):
            raise ValueError(hint)
        # hint: OpenVINO's PERFORMANCE_HINT; LATENCY (one stream) unless a tuning record chose another
        self.model, self.precision, self.threads, self.hint = model, precision, threads, hint or "LATENCY"
        self.request: Any = None
        self.applied: dict[str, str] = {}

    def _activate(self) -> None:
        ov = import_openvino()
        if self.precision == "bf16" and not openvino_supports_bf16():
            raise FSQDeployError("openvino: this CPU has no BF16 support (AMX or AVX512-BF16). Note: use fp32")
        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "PERFORMANCE_HINT": self.hint,
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        data = self.model()
        compiled = core.compile_model(core.read_model(data, b""), "CPU", config)
        # OpenVINO merges the names of tensors its fusions join (a Conv's output and the graph output
        # after an activation fused into it), so name each output as the ONNX graph declares it.
        import onnx

        declared = [o.name for o in onnx.load_model_from_string(data).graph.output]
        self.output_names = [next((n for n in declared if n in o.get_names()), o.get_any_name())
                             for o in compiled.outputs]
        # What OpenVINO made of the hint and threads (bench prints it; tests check the record is applied).
        self.applied = {key: str(compiled.get_property(key))
                        for key in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")}
        self.request = compiled.create_infer_request()

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        return {name: np.asarray(result[i]) for i, name in enumerate(self.output_names)}

    def _deactivate(self) -> None:
        self.request = None


class OpenVINOBackend(Backend):
    """FP32, and BF16 where the CPU has it (AMX or AVX512-BF16; activation says so where it has not),
    both on the FP32 graphs as cpu_graphs.py tunes them for OpenVINO."""

    def unavailable_reason(self) -> str | None:
        # find_spec, not import: openvino takes a while to import, and "auto" asks every backend.
        return None if importlib.util.find_spec("openvino") else f"openvino is not installed ({INSTALL_HINT})"

    def files(self, precision: str) -> tuple[str, ...]:
        return tuple(graph_file(g) for g in GRAPHS)  # bf16 is a runtime setting over the fp32 graphs

    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        from fsqdeploy.backends.cpu_graphs import cpu_runners

        return cpu_runners(lambda source, count, hint: OpenVINORunner(source, precision, count, hint), manifest,
                           self.name, threads)


# The fastest CPU backend measured by benchmarks/backends.py, so "auto" tries it before ONNX Runtime.
OPENVINO = OpenVINOBackend("openvino", ("fp32", "bf16"), auto_rank=40)
