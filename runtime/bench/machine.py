"""The machine a bench ran on: CPU model and features, cores, the GPU PyTorch sees, library versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.runtime.bench.settings import usable_cores

_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "avx_vnni")
# TensorRT's wheels: the metapackage, or one per CUDA major (what `pip install tensorrt` resolves to).
_TENSORRT_PACKAGES = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def torch_has_cuda() -> bool:
    """PyTorch is installed and sees a CUDA device: CUDA events and the torch:cuda reference need both."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_info() -> dict[str, Any] | None:
    """Device 0 as PyTorch sees it, or None."""
    if not torch_has_cuda():
        return None
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}


def _cpuinfo() -> tuple[str | None, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, []
    model: str | None = None
    flags: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.split()
    return model, flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata so nothing heavy is imported for it."""
    from fsqdeploy import __version__

    return {
        "fsqdeploy": __version__,
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "openvino": _version("openvino"),
        "tensorrt": next((v for v in map(_version, _TENSORRT_PACKAGES) if v), None),
        "numpy": np.__version__,
        "onnx": _version("onnx"),
        "pillow": _version("pillow"),
        "python": platform.python_version(),
    }


def machine_info(threads: int) -> dict[str, Any]:
    model, flags = _cpuinfo()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_features": [f for f in _CPU_FEATURES if f in flags],
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "gpu": gpu_info(),
        "os": platform.platform(),
        "versions": library_versions(),
    }


@contextmanager
def fp32_without_tf32() -> Iterator[None]:
    """PyTorch runs CUDA convolutions in TF32 unless told otherwise (``cudnn.allow_tf32`` is True by
    default): the reference and the torch:cuda row must be FP32, as the FP32 engines are (TF32 off).
    The flags are restored afterwards; without CUDA there is nothing to switch."""
    if not torch_has_cuda():
        yield
        return
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
