"""What ``fsqdeploy export --trt`` passes to the builder. Pure Python: the CLI reads its defaults
for the help text without importing the builder."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from fsqdeploy.errors import FSQDeployError

MAX_OPTIMIZATION_LEVEL = 5


@dataclass(frozen=True)
class BuildOptions:
    """One optimization profile for the batch axis, and how the builder may spend time and memory."""

    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 256
    workspace_mib: int = 2048
    optimization_level: int = 3
    timing_cache: Path | None = None  # None: ART/timing.cache
    version_compatible: bool = False
    hardware_compatible: bool = False

    @classmethod
    def from_given(cls, **given: Any) -> BuildOptions:
        """The options from what a user gave (field names; None means not given), the defaults
        filling the rest. Without ``opt_batch`` the default is clamped into the given range, so
        ``--max-batch 32`` alone tunes for 32 rather than failing the profile check."""
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"BuildOptions has no {sorted(unknown)}")
        options = replace(cls(), **{k: v for k, v in given.items() if v is not None})
        if given.get("opt_batch") is None:
            opt = min(max(cls.opt_batch, options.min_batch), options.max_batch)
            options = replace(options, opt_batch=opt)
        return options

    def check(self) -> None:
        """User input, validated before anything is written."""
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise FSQDeployError(
                f"tensorrt: the batch profile must satisfy 1 <= --min-batch <= --opt-batch <= --max-batch, "
                f"got {self.min_batch}, {self.opt_batch}, {self.max_batch}")
        if self.workspace_mib < 1:
            raise FSQDeployError(f"tensorrt: --workspace must be at least 1 MiB, got {self.workspace_mib}")
        if not 0 <= self.optimization_level <= MAX_OPTIMIZATION_LEVEL:
            raise FSQDeployError(f"tensorrt: --optimization-level must be in 0..{MAX_OPTIMIZATION_LEVEL}, "
                                 f"got {self.optimization_level}")
        cache = self.timing_cache
        if cache is not None and (cache.is_dir() or not cache.absolute().parent.is_dir()):
            raise FSQDeployError(f"tensorrt: --timing-cache '{cache}' must be a file in an existing directory")

    @property
    def profile(self) -> dict[str, int]:
        return {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}
