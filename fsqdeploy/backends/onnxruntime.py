"""ONNX Runtime: the CPU provider, and the CUDA and TensorRT execution providers of onnxruntime-gpu."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fsqdeploy.backends.base import Runner
from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    import onnx

ORT_PROVIDERS = {
    "onnxruntime": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise FSQDeployError("onnxruntime: not installed. Note: pip install onnxruntime") from None
    return onnxruntime


def ort_session(model: str | Path | onnx.ModelProto) -> Any:
    """A plain CPU session with ONNX Runtime's default (full) graph optimizations, what users get:
    the parity gate, FP16 and INT8 records and check run the graphs exactly as exported."""
    import onnx

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    """An InferenceSession over an ONNX file (or serialized model bytes from a loader)."""

    def __init__(
        self,
        model: str | Path | Callable[[], bytes],
        backend: str = "onnxruntime",
        threads: int | None = None,
        trt_fp16: bool = True,
        trt_cache_dir: str | Path | None = None,
        precision: str | None = None,
    ):
        super().__init__()
        if backend not in ORT_PROVIDERS:
            raise ValueError(backend)
        self.model, self.backend, self.threads = model, backend, threads
        self.trt_fp16, self.trt_cache_dir = trt_fp16, trt_cache_dir
        self.name = backend
        # None: what the session computes in; "int8" for the QDQ graphs of fsqdeploy calibrate.
        self.precision = precision or ("fp16" if backend == "onnxruntime-trt" and trt_fp16 else "fp32")
        self.session: Any = None

    def _providers(self, ort: Any) -> list[Any]:
        wanted = ORT_PROVIDERS[self.backend]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            package = "onnxruntime-gpu" if self.backend != "onnxruntime" else "onnxruntime"
            raise FSQDeployError(
                f"{self.backend}: ONNX Runtime has no {wanted[0]} here (available: {', '.join(available)}). "
                f"Note: pip install {package} on a machine with an NVIDIA GPU"
            )
        providers: list[Any] = []
        for p in wanted:
            if p == "TensorrtExecutionProvider":
                opts: dict[str, Any] = {"trt_fp16_enable": self.trt_fp16}
                if self.trt_cache_dir:
                    Path(self.trt_cache_dir).mkdir(parents=True, exist_ok=True)
                    opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(self.trt_cache_dir),
                                trt_timing_cache_enable=True)
                providers.append((p, opts))
            else:
                providers.append(p)
        return providers

    def _activate(self) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if self.backend == "onnxruntime":
            # A codec runs two sessions in turn; spinning idle threads of one steal the cores from
            # the other (2-core machine, batch 256 round trip: 66 ms spinning, 50 ms not).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = self.model() if callable(self.model) else str(self.model)
        self.session = ort.InferenceSession(source, options, providers=self._providers(ort))
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, dict(feed))
        return dict(zip(self.output_names, outputs))

    def _deactivate(self) -> None:
        self.session = None
