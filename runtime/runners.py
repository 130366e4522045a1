"""Runners: one small interface over PyTorch, ONNX Runtime, OpenVINO and TensorRT (after Polygraphy).

A runner wraps one graph (the encoder or the decoder). ``activate()`` builds the heavy object (a
session, a compiled model, an engine) from a small loader, ``infer(feed)`` maps input names to
numpy arrays and returns output names to numpy arrays, ``deactivate()`` frees it, and
``last_inference_time`` holds the wall time of the last ``infer`` in seconds. Nothing imports
onnxruntime, openvino or tensorrt until a runner of that kind is activated.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.errors import FSQDeployError


class Runner(ABC):
    name: str = "runner"
    precision: str = "fp32"

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise FSQDeployError(f"{self.name}: infer() called before activate()")
        start = time.perf_counter()
        out = self._infer(feed)
        self.last_inference_time = time.perf_counter() - start
        return out

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate(self) -> None:  # noqa: B027 - optional hook; most runners just drop references
        pass


class BatchSizeSwitch(Runner):
    """Two runners of one graph: ``small`` for batches below ``threshold`` images, ``large`` from there
    on. Some exact rewrites pay off only on large batches (runtime/cpu_graphs.py measures one that
    halves a single image's speed and saves a quarter at 256), and a dynamic batch axis cannot tell."""

    def __init__(self, small: Runner, large: Runner, threshold: int):
        super().__init__()
        self.small, self.large, self.threshold = small, large, threshold
        self.name, self.precision = large.name, large.precision

    def _activate(self) -> None:
        self.small.activate()
        self.large.activate()

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feed.values())))
        return (self.small if batch < self.threshold else self.large).infer(feed)

    def _deactivate(self) -> None:
        self.small.deactivate()
        self.large.deactivate()


# -- PyTorch: the reference ---------------------------------------------------------------------


class TorchRunner(Runner):
    """Runs the checkpoint's encoder (images -> indices) or decoder (indices -> images) in PyTorch."""

    name = "torch"

    def __init__(self, checkpoint_dir: str | Path, graph: str, device: str = "cpu", threads: int | None = None):
        super().__init__()
        if graph not in ("encoder", "decoder"):
            raise ValueError(graph)
        self.checkpoint_dir, self.graph, self.device, self.threads = Path(checkpoint_dir), graph, device, threads
        self.model: Any = None

    def _activate(self) -> None:
        import torch

        from fsqdeploy.model import FSQVAE

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = FSQVAE.load(self.checkpoint_dir, self.device)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            if self.graph == "encoder":
                x = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(self.device)
                idx = self.model.quantizer.indices(self.model.encoder(x))
                return {"indices": idx.to(torch.int32).cpu().numpy()}
            idx = torch.from_numpy(np.ascontiguousarray(feed["indices"])).to(self.device)
            mixed = self.model.quantizer.indices_to_decoder_input(idx.long())
            return {"images": torch.sigmoid(self.model.decoder(mixed)).float().cpu().numpy()}

    def _deactivate(self) -> None:
        self.model = None


# -- ONNX Runtime -------------------------------------------------------------------------------

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


# -- OpenVINO -----------------------------------------------------------------------------------


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise FSQDeployError('openvino: not installed. Note: pip install "fsqdeploy[openvino]"') from None
    return openvino


def openvino_supports_bf16() -> bool:
    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINORunner(Runner):
    """OpenVINO on the CPU, reading the exported ONNX (with local functions inlined)."""

    name = "openvino"

    def __init__(self, model: Callable[[], bytes], precision: str = "fp32", threads: int | None = None):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(precision)
        self.model, self.precision, self.threads = model, precision, threads
        self.request: Any = None

    def _activate(self) -> None:
        ov = import_openvino()
        if self.precision == "bf16" and not openvino_supports_bf16():
            raise FSQDeployError("openvino: this CPU has no BF16 support (AMX or AVX512-BF16). Note: use fp32")
        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
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
        self.request = compiled.create_infer_request()

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        return {name: np.asarray(result[i]) for i, name in enumerate(self.output_names)}

    def _deactivate(self) -> None:
        self.request = None
