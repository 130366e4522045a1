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
from collections.abc import Mapping

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
