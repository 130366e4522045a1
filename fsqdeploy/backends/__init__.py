"""The backend registry: every runtime a codec can run on, read by Codec, bench and the CLI help.

Each module here declares its backends (``Backend`` objects: name, precisions, GPU or not, why it
cannot run here, what an artifact must hold for it, how to open its runners) and imports nothing
heavy until a runner is opened or activated. Adding a backend is one module plus one line in
``_BUILTIN``; a test or a plugin calls ``register`` / ``unregister``::

    from fsqdeploy.backends import REGISTRY, AUTO_ORDER, get_backend
    b = get_backend("onnxruntime")
    b.unavailable_reason(), b.artifact_problem(manifest, "fp32")   # None, None: it can run this ART
    encoder, decoder = b.open(manifest, "fp32")                     # runners, not yet activated

``REGISTRY`` keeps registration order (the display order); ``AUTO_ORDER`` is the order
``Codec.load(backend="auto")`` tries them in, fastest first, from each backend's ``auto_rank``.
"""

from __future__ import annotations

from fsqdeploy.backends import onnxruntime, openvino, pytorch, tensorrt
from fsqdeploy.backends.base import Backend, Runner
from fsqdeploy.errors import FSQDeployError

__all__ = ["AUTO_ORDER", "REGISTRY", "Backend", "Runner", "get_backend", "register", "unregister"]

REGISTRY: dict[str, Backend] = {}
AUTO_ORDER: tuple[str, ...] = ()

_BUILTIN = (
    pytorch.TORCH,
    onnxruntime.ONNXRUNTIME,
    onnxruntime.ONNXRUNTIME_CUDA,
    onnxruntime.ONNXRUNTIME_TRT,
    openvino.OPENVINO,
    tensorrt.TENSORRT,
)


def _auto_order() -> tuple[str, ...]:
    ranked = sorted((b for b in REGISTRY.values() if b.auto_rank is not None), key=lambda b: b.auto_rank or 0)
    return tuple(b.name for b in ranked)


def register(backend: Backend) -> Backend:
    """Add ``backend`` (its name must be new); it joins ``AUTO_ORDER`` when it has an ``auto_rank``."""
    global AUTO_ORDER
    if backend.name in REGISTRY or backend.name == "auto":
        raise ValueError(f"backend {backend.name!r} is already registered (or reserved)")
    REGISTRY[backend.name] = backend
    AUTO_ORDER = _auto_order()
    return backend


def unregister(name: str) -> Backend:
    global AUTO_ORDER
    backend = REGISTRY.pop(name)
    AUTO_ORDER = _auto_order()
    return backend


def get_backend(name: str, component: str = "backends") -> Backend:
    """The backend called ``name``; one FSQDeployError line that lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise FSQDeployError(f"{component}: unknown backend {name!r}. Note: use one of {', '.join(REGISTRY)}") from None


for _backend in _BUILTIN:
    register(_backend)
