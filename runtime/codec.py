"""``Codec``: the exported FSQ codec on any backend, in three lines::

    from fsqdeploy.runtime import Codec
    codec = Codec.load("art", backend="auto")      # says which backend it picked: codec.backend
    images = codec.decode(codec.encode(images))     # float [N,3,S,S] -> int32 [N,D] -> float

The manifest's hashes are verified before anything is loaded. Inputs are validated at the boundary
(shape, dtype, [0, 1] range, NaN, index range) with the same messages as ``FSQVAE``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.artifact import CHECKPOINT_DIR
from fsqdeploy.backends.base import BatchSizeSwitch, Runner
from fsqdeploy.backends.onnxruntime import ORT_PROVIDERS, OnnxRuntimeRunner
from fsqdeploy.backends.openvino import OpenVINORunner
from fsqdeploy.backends.pytorch import TorchRunner
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.validation import check_images, check_indices

log = logging.getLogger("fsqdeploy")

BACKENDS = ("torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "tensorrt")
# Fastest first, as measured by benchmarks/backends.py (CPU) and expected on GPUs.
AUTO_ORDER = ("tensorrt", "onnxruntime-trt", "onnxruntime-cuda", "openvino", "onnxruntime", "torch")


def backend_unavailable_reason(backend: str) -> str | None:
    """None when ``backend`` can run here, else a one-line reason (used for bench's skipped rows)."""
    try:
        if backend == "torch":
            import torch  # noqa: F401
        elif backend in ORT_PROVIDERS:
            import onnxruntime as ort

            want = ORT_PROVIDERS[backend][0]
            if want not in ort.get_available_providers():
                return f"ONNX Runtime has no {want} here (install onnxruntime-gpu on a machine with an NVIDIA GPU)"
        elif backend == "openvino":
            import openvino  # noqa: F401
        elif backend == "tensorrt":
            from fsqdeploy.backends.tensorrt_env import tensorrt_unavailable_reason

            return tensorrt_unavailable_reason()
        else:
            return f"unknown backend {backend!r}"
    except ImportError as e:
        extra = {"openvino": 'pip install "fsqdeploy[openvino]"', "torch": "pip install torch"}.get(
            backend, "pip install onnxruntime"
        )
        return f"{e.name or backend} is not installed ({extra})"
    return None


@cache
def _cpu_graph_bytes(path: str, sha256: str, runtime: str, large_batches: bool) -> bytes:
    """The exported graph at ``path`` (``sha256`` keys the cache) as runtime/cpu_graphs.py tunes it
    for ``runtime``: exact rewrites, checked against PyTorch by tests/runtime/test_codec.py."""
    import onnx

    from fsqdeploy.runtime import cpu_graphs

    tune = {"onnxruntime": cpu_graphs.for_onnxruntime, "openvino": cpu_graphs.for_openvino}[runtime]
    return tune(onnx.load(path), large_batches).SerializeToString()


def _cpu_runners(make: Callable[[Callable[[], bytes]], Runner], art: Path, manifest: dict[str, Any],
                 runtime: str) -> tuple[Runner, Runner]:
    """Encoder and decoder runners for a CPU runtime on its tuned graphs; the encoder is two runners
    switched by batch size, because its MatMul rewrite pays off only on large batches."""
    from fsqdeploy.runtime.cpu_graphs import MATMUL_MIN_BATCH

    def source(name: str, large_batches: bool) -> Callable[[], bytes]:
        return partial(_cpu_graph_bytes, str(art / name), manifest["files"][name]["sha256"], runtime, large_batches)

    encoder = BatchSizeSwitch(make(source("encoder.onnx", False)), make(source("encoder.onnx", True)),
                              MATMUL_MIN_BATCH)
    return encoder, make(source("decoder.onnx", True))


class Codec:
    def __init__(self, art: Path, manifest: dict[str, Any], encoder: Runner, decoder: Runner, backend: str):
        self.art, self.manifest, self.backend = art, manifest, backend
        self.encoder, self.decoder = encoder, decoder
        self.levels: list[int] = [int(v) for v in manifest["levels"]]
        self.image_size: int = int(manifest["image_size"])
        self.model_id: str = manifest["model_id"]
        self.precision = encoder.precision

    @property
    def code_width(self) -> int:
        return len(self.levels)

    @classmethod
    def load(
        cls,
        art: str | Path,
        backend: str = "auto",
        *,
        precision: str = "fp32",
        threads: int | None = None,
        verify: bool = True,
        device: str = "cpu",
    ) -> Codec:
        from fsqdeploy.artifact import read_manifest, verify_files

        art = Path(art)
        manifest = read_manifest(art)
        if verify:
            problems = verify_files(manifest, art)
            if problems:
                raise FSQDeployError(f"codec: '{art}' failed verification: {problems[0]}. Note: export again")
        if backend == "auto":
            backend = next(b for b in AUTO_ORDER if backend_unavailable_reason(b) is None)
            log.info("codec: backend auto -> %s", backend)
        if backend not in BACKENDS:
            raise FSQDeployError(f"codec: unknown backend {backend!r}. Note: use auto or one of {', '.join(BACKENDS)}")
        reason = backend_unavailable_reason(backend)
        if reason:
            raise FSQDeployError(f"codec: backend {backend} cannot run here: {reason}")
        encoder, decoder = cls._runners(art, manifest, backend, precision, threads, device)
        codec = cls(art, manifest, encoder, decoder, backend)
        try:
            encoder.activate()
            decoder.activate()
        except FSQDeployError:
            codec.close()
            raise
        return codec

    @staticmethod
    def _runners(
        art: Path, manifest: dict[str, Any], backend: str, precision: str, threads: int | None, device: str
    ) -> tuple[Runner, Runner]:
        def graph(name: str) -> Path:
            if name not in manifest["files"]:
                how = ("calibrate it with fsqdeploy calibrate" if ".int8." in name
                       else "export it with --precision fp16" if ".fp16." in name else "export it first")
                raise FSQDeployError(f"codec: '{art}' has no {name}. Note: {how}")
            return art / name

        allowed = {
            "onnxruntime": ("fp32", "int8"),
            "openvino": ("fp32", "bf16"),
            "onnxruntime-trt": ("fp16", "fp32"),
            "tensorrt": ("fp32", "fp16", "int8"),
        }
        if precision not in allowed.get(backend, ("fp32",)):
            raise FSQDeployError(f"codec: backend {backend} does not run {precision}")
        if backend == "torch":
            ckpt = art / CHECKPOINT_DIR
            if not (ckpt / "config.json").is_file():
                raise FSQDeployError(f"codec: '{art}' holds no checkpoint for the PyTorch reference")
            return (TorchRunner(ckpt, "encoder", device, threads), TorchRunner(ckpt, "decoder", device, threads))
        if backend in ORT_PROVIDERS:
            cache_dir = art / "trt_cache"
            # Precision lives in the graph: fp16 runs the strongly typed encoder.fp16.onnx (quantizer
            # in FP32) with TensorRT's FP16 flag off; int8 runs the QDQ graphs of fsqdeploy calibrate.
            suffix = {"fp16": ".fp16.onnx", "int8": ".int8.onnx"}.get(precision, ".onnx")
            encoder, decoder = graph(f"encoder{suffix}"), graph(f"decoder{suffix}")
            if backend == "onnxruntime" and precision == "fp32":
                # The CPU provider gets the graphs rewritten for its kernels (runtime/cpu_graphs.py);
                # the INT8 graphs were rewritten before calibration, the GPU providers read the files.
                return _cpu_runners(lambda src: OnnxRuntimeRunner(src, backend, threads, False, cache_dir),
                                    art, manifest, backend)
            return (
                OnnxRuntimeRunner(encoder, backend, threads, False, cache_dir, precision=precision),
                OnnxRuntimeRunner(decoder, backend, threads, False, cache_dir, precision=precision),
            )
        if backend == "openvino":
            for name in ("encoder.onnx", "decoder.onnx"):
                graph(name)  # a clear error for a missing graph, before any loader runs
            return _cpu_runners(lambda src: OpenVINORunner(src, precision, threads), art, manifest, backend)
        from fsqdeploy.backends.tensorrt import TensorRTRunner, engine_paths

        enc, dec = engine_paths(art, manifest, precision)
        return TensorRTRunner(enc), TensorRTRunner(dec)

    # -- the API -----------------------------------------------------------------------------------
    def encode(self, images: Any) -> Any:
        """Float images [N, 3, S, S] in [0, 1] -> int32 indices [N, D] (a torch tensor for a tensor)."""
        check_images(images, self.image_size, "encode")
        as_torch = type(images).__module__.startswith("torch")
        x = images.detach().cpu().numpy() if as_torch else np.asarray(images)
        out = self._chunked(self.encoder, "images", x.astype(np.float32, copy=False), "indices")
        return _like(out, images) if as_torch else out

    def decode(self, indices: Any) -> Any:
        """Integer indices [N, D] -> float32 images [N, 3, S, S] in [0, 1]."""
        check_indices(indices, self.levels, "decode")
        as_torch = type(indices).__module__.startswith("torch")
        idx = indices.detach().cpu().numpy() if as_torch else np.asarray(indices)
        out = self._chunked(self.decoder, "indices", idx.astype(np.int32, copy=False), "images")
        return _like(out, indices) if as_torch else out

    def _chunked(self, runner: Runner, name: str, x: np.ndarray, out_name: str, chunk: int = 1024) -> np.ndarray:
        if len(x) <= chunk:
            return runner.infer({name: np.ascontiguousarray(x)})[out_name]
        parts = [runner.infer({name: np.ascontiguousarray(x[i : i + chunk])})[out_name]
                 for i in range(0, len(x), chunk)]
        return np.concatenate(parts)

    def close(self) -> None:
        self.encoder.deactivate()
        self.decoder.deactivate()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Codec({str(self.art)!r}, backend={self.backend!r}, precision={self.precision!r})"


def _like(array: np.ndarray, reference: Any) -> Any:
    import torch

    return torch.from_numpy(array).to(reference.device)
