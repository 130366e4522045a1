"""Runners: one small interface over PyTorch, ONNX Runtime, OpenVINO and TensorRT (after Polygraphy).

A runner wraps one graph (the encoder or the decoder). ``activate()`` builds the heavy object (a
session, a compiled model, an engine) from a small loader, ``infer(feed)`` maps input names to
numpy arrays and returns output names to numpy arrays, ``deactivate()`` frees it, and
``last_inference_time`` holds the wall time of the last ``infer`` in seconds. Nothing imports
onnxruntime, openvino or tensorrt until a runner of that kind is activated.

A ``Backend`` is one runtime as Codec, bench and the CLI see it (the registry is
fsqdeploy/backends/__init__.py): its name, the precisions it runs, whether it runs on an NVIDIA GPU,
why it cannot run on this machine, what an artifact must hold for it, and how to open its two runners.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fsqdeploy.artifact import PRECISIONS, how_to_make
from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    from fsqdeploy.artifact import Manifest


class Runner(ABC):
    name: str = "runner"
    precision: str = "fp32"
    takes_device_tensors = False  # True: infer_torch(x) takes and returns CUDA torch tensors (bench times it)

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None
        # CPU runtimes: the graph rewrites this runner runs ("matmul+phase-ort", "none"), and whether
        # this machine's tuning record chose them (fsqdeploy.backends.tuning) or the defaults did.
        self.variant: str | None = None
        self.tuned = False

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
    on. Some exact rewrites pay off only on large batches (cpu_graphs.py measures one that
    halves a single image's speed and saves a quarter at 256), and a dynamic batch axis cannot tell."""

    def __init__(self, small: Runner, large: Runner, threshold: int):
        super().__init__()
        self.small, self.large, self.threshold = small, large, threshold
        self.name, self.precision = large.name, large.precision
        self.variant, self.tuned = large.variant, large.tuned  # the batch sizes tuning measures

    def _activate(self) -> None:
        self.small.activate()
        self.large.activate()

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feed.values())))
        return (self.small if batch < self.threshold else self.large).infer(feed)

    def _deactivate(self) -> None:
        self.small.deactivate()
        self.large.deactivate()


class Backend(ABC):
    """One runtime, declared once in its module and listed in the registry.

    ``precisions``: the subset of fsqdeploy.artifact.PRECISIONS it runs, the first the default.
    ``auto_rank``: where ``Codec.load(backend="auto")`` tries it (lower first: the faster backends);
    None keeps it out of "auto". ``reduced``: precisions it is asked for by name but computes in less,
    each with the reason (e.g. TF32 where "fp32" is asked), so callers gate and label those rows as
    reduced precision instead of holding them to exact FP32.
    """

    def __init__(self, name: str, precisions: Sequence[str], *, gpu: bool = False, auto_rank: int | None = None,
                 reduced: Mapping[str, str] | None = None) -> None:
        unknown = [p for p in precisions if p not in PRECISIONS]
        if not precisions or unknown or not set(reduced or {}) <= set(precisions):
            raise ValueError(f"backend {name}: precisions {list(precisions)} (reduced {list(reduced or {})}) "
                             f"must be a non-empty subset of {PRECISIONS}")
        self.name, self.precisions, self.gpu, self.auto_rank = name, tuple(precisions), gpu, auto_rank
        self.reduced = dict(reduced or {})

    @property
    def clock(self) -> str:
        """How bench times it: CUDA events for GPU backends (where torch has CUDA), else the wall clock."""
        return "cuda-events" if self.gpu else "wall"

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when the packages and devices it needs are here, else a one-line reason."""

    def files(self, precision: str) -> tuple[str, ...]:
        """The files of ART it reads at ``precision`` (names from fsqdeploy.artifact's layout)."""
        return ()

    def precision_problem(self, precision: str) -> str | None:
        if precision in self.precisions:
            return None
        return f"backend {self.name} does not run {precision} (it runs {', '.join(self.precisions)})"

    def artifact_problem(self, manifest: Manifest, precision: str) -> str | None:
        """What this artifact lacks to run here at ``precision`` (one line with a Note), or None."""
        problem = self.precision_problem(precision)
        if problem:
            return problem
        missing = next((name for name in self.files(precision) if not manifest.has(name)), None)
        return f"'{manifest.art}' has no {missing}. Note: {how_to_make(missing)}" if missing else None

    @abstractmethod
    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        """The encoder and decoder runners, not yet activated (activation loads sessions or engines)."""

    def __repr__(self) -> str:
        return f"<backend {self.name}: {', '.join(self.precisions)}>"
