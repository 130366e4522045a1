"""Is TensorRT usable here, and what is this GPU? Shared by the engine builder (export) and the
runner (fsqdeploy.backends.tensorrt). Nothing here imports tensorrt or torch at module import.

``tensorrt-stubs`` installed without TensorRT makes ``import tensorrt`` succeed as an empty
namespace package, so TensorRT is recognised by its API (``tensorrt.Builder``), never by a bare
import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:  # type-checked against tensorrt-stubs; imported lazily at run time
    import tensorrt as trt

INSTALL_HINT = 'pip install "fsqdeploy[trt]"'
# AMPERE_PLUS (hardware-compatible) engines run on sm 8.0 and newer; the builder refuses older GPUs.
HARDWARE_COMPATIBLE_MIN_MAJOR = 8
# The builder's TensorRT: 10.0 is the first whose ONNX parser fills a strongly typed network with
# every type the FP16 and INT8 graphs use; from 11.0 on every network is strongly typed
# (NetworkDefinitionCreationFlag kSTRONGLY_TYPED: "Deprecated in TensorRT 11.0. Strongly typed mode
# is always enabled. This flag is retained for API compatibility but is ignored.", NvInfer.h 11.1).
BUILD_MIN_MAJOR = 10
ALWAYS_STRONGLY_TYPED_SINCE = 11


def import_tensorrt() -> Any:
    """The tensorrt module, or a one-line FSQDeployError that says what to install."""
    try:
        import tensorrt
    except ImportError:
        raise FSQDeployError(f"tensorrt: TensorRT is not installed. Note: {INSTALL_HINT}") from None
    except Exception as e:  # e.g. OSError: a wheel whose CUDA libraries cannot be loaded
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FSQDeployError(f"tensorrt: TensorRT is installed but cannot be loaded ({first}). "
                             f"Note: reinstall it with {INSTALL_HINT}") from None
    if not hasattr(tensorrt, "Builder") or not hasattr(tensorrt, "Runtime"):
        # tensorrt-stubs alone (or a half-removed install) leaves an empty namespace package.
        raise FSQDeployError(f"tensorrt: TensorRT is not installed (the 'tensorrt' package has no "
                             f"TensorRT API, only type stubs?). Note: {INSTALL_HINT}")
    return tensorrt


def cuda_unavailable_reason() -> str | None:
    """None when PyTorch sees a CUDA GPU (the runtime's device buffers are torch CUDA tensors)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if torch.version.cuda is None:
        return "this PyTorch is a CPU-only build (install a CUDA build of torch)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    return None


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT engines can be built and run here, else a one-line reason."""
    try:
        import_tensorrt()
    except FSQDeployError as e:
        return str(e).removeprefix("tensorrt: ")
    reason = cuda_unavailable_reason()
    return f"TensorRT is installed but {reason}" if reason else None


def require_tensorrt_and_gpu() -> Any:
    """The tensorrt module when it and a CUDA GPU are usable; else a one-line FSQDeployError."""
    trt_module = import_tensorrt()
    reason = cuda_unavailable_reason()
    if reason:
        raise FSQDeployError(f"tensorrt: TensorRT is installed but {reason}. "
                             "Note: engines are built and run on a machine with an NVIDIA GPU")
    return trt_module


def current_device_facts() -> dict[str, Any]:
    """What an engine is tied to: TensorRT and CUDA versions, GPU name and compute capability."""
    import torch

    trt_module = import_tensorrt()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "tensorrt_version": str(trt_module.__version__),
        "cuda_version": torch.version.cuda,
        "gpu_name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
    }


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); parts that are not numbers end it."""
    out = []
    for part in str(version).split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def tensorrt_major(trt_module: Any) -> int:
    """The major version of a tensorrt module (its ``__version__``); 0 when that is not a version."""
    return (version_tuple(str(getattr(trt_module, "__version__", ""))) or (0,))[0]


def dims_tuple(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))
