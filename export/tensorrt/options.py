"""What ``fsqdeploy export --trt`` passes to the builder. Pure Python: the CLI reads its defaults
for the help text without importing the builder."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from fsqdeploy.artifact import IMAGES
from fsqdeploy.errors import FSQDeployError

MAX_OPTIMIZATION_LEVEL = 5
Shape = tuple[int, int]  # (height, width) in pixels

# Spatial (conv) models take whole images of any size: their profile covers height and width too.
# The defaults span one latent cell to the codec's one-pass limit (runtime.codec.DEFAULT_MAX_PIXELS,
# 2048 x 2048: larger images are tiled), tuned for a 512 x 768 photo. A context allocates
# activation memory for the profile's maximum, so the batch range is small: whole images come one
# at a time, and 4 images of 2048 x 2048 already take the memory of 256 paper-size batches.
SPATIAL_BATCH = {"min_batch": 1, "opt_batch": 1, "max_batch": 4}
SPATIAL_OPT_SHAPE: Shape = (512, 768)
SPATIAL_MAX_SHAPE: Shape = (2048, 2048)
SHAPE_FIELDS = ("min_shape", "opt_shape", "max_shape")


def parse_shape(text: str, flag: str) -> Shape:
    """"512x768" (height x width, pixels) -> (512, 768); one line for anything else."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FSQDeployError(f"tensorrt: {flag} {text!r} is not HEIGHTxWIDTH. Note: e.g. {flag} 512x768") from None
    return height, width


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class BuildOptions:
    """One optimization profile (batch; for spatial models height and width too), and how the
    builder may spend time and memory."""

    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 256
    workspace_mib: int = 2048
    optimization_level: int = 3
    timing_cache: Path | None = None  # None: ART/timing.cache
    version_compatible: bool = False
    hardware_compatible: bool = False
    # Spatial models only: the downsampling factor f and the image sizes of the profile, in pixels
    # (multiples of f); the decoder's grid profile is these divided by f.
    downsample: int | None = None
    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None

    @classmethod
    def from_given(cls, downsample: int | None = None, **given: Any) -> BuildOptions:
        """The options from what a user gave (field names; None means not given), the defaults
        filling the rest. Without ``opt_batch`` the default is clamped into the given range, so
        ``--max-batch 32`` alone tunes for 32 rather than failing the profile check.
        ``downsample``: the model is spatial with that f; its batch and shape defaults apply."""
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"BuildOptions has no {sorted(unknown)}")
        if downsample is None:
            shape = next((k for k in SHAPE_FIELDS if given.get(k) is not None), None)
            if shape:
                raise FSQDeployError(f"tensorrt: --{shape.replace('_', '-')} is for spatial (conv) models, whose "
                                     "graphs take any image size. Note: patch models' profile is the batch only")
            base = cls()
        else:
            f = downsample
            base = replace(cls(), min_batch=SPATIAL_BATCH["min_batch"], opt_batch=SPATIAL_BATCH["opt_batch"],
                           max_batch=SPATIAL_BATCH["max_batch"], downsample=f, min_shape=(f, f),
                           opt_shape=(_round_up(SPATIAL_OPT_SHAPE[0], f), _round_up(SPATIAL_OPT_SHAPE[1], f)),
                           max_shape=(_round_up(SPATIAL_MAX_SHAPE[0], f), _round_up(SPATIAL_MAX_SHAPE[1], f)))
        options = replace(base, **{k: v for k, v in given.items() if v is not None})
        if given.get("opt_batch") is None:
            opt = min(max(base.opt_batch, options.min_batch), options.max_batch)
            options = replace(options, opt_batch=opt)
        if downsample is not None and given.get("opt_shape") is None:
            lo, hi, want = options.min_shape, options.max_shape, base.opt_shape
            assert lo is not None and hi is not None and want is not None
            options = replace(options, opt_shape=(min(max(want[0], lo[0]), hi[0]), min(max(want[1], lo[1]), hi[1])))
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
        if self.downsample is not None:
            self._check_shapes(self.downsample)
        cache = self.timing_cache
        if cache is not None and (cache.is_dir() or not cache.absolute().parent.is_dir()):
            raise FSQDeployError(f"tensorrt: --timing-cache '{cache}' must be a file in an existing directory")

    def _check_shapes(self, f: int) -> None:
        shapes = {k: getattr(self, k) for k in SHAPE_FIELDS}
        for name, shape in shapes.items():
            flag = f"--{name.replace('_', '-')}"
            if shape is None or len(shape) != 2 or any(d < f or d % f for d in shape):
                raise FSQDeployError(f"tensorrt: {flag} {shape} must be HEIGHTxWIDTH in positive multiples of {f} "
                                     "pixels (the model's downsampling factor)")
        lo, opt, hi = shapes.values()
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise FSQDeployError(f"tensorrt: the image profile must satisfy --min-shape <= --opt-shape <= --max-shape "
                                 f"in both height and width, got {lo}, {opt}, {hi}")

    @property
    def profile(self) -> dict[str, Any]:
        """The manifest's and sidecar's record of the profile (shapes as [height, width] pixels)."""
        record: dict[str, Any] = {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}
        if self.downsample is not None:
            record |= {"downsample": self.downsample, **{k: list(getattr(self, k)) for k in SHAPE_FIELDS}}
        return record

    def input_shapes(self, tensor: str, rest: tuple[int, ...]) -> list[list[int]]:
        """[min, opt, max] for a network input whose dims after the batch are ``rest`` (-1 where
        dynamic): the images' height and width from the shapes, the indices' grid those over f."""
        batches = (self.min_batch, self.opt_batch, self.max_batch)
        if not any(d < 0 for d in rest):
            return [[b, *rest] for b in batches]
        lo, opt, hi, f = self.min_shape, self.opt_shape, self.max_shape, self.downsample
        if lo is None or opt is None or hi is None or f is None or len(rest) != 3 or rest[0] < 0:
            raise FSQDeployError(f"tensorrt: input '{tensor}' has dynamic axes {list(rest)} besides the batch, "
                                 "and this model's profile covers the batch only")
        scale = 1 if tensor == IMAGES else f
        return [[b, rest[0], s[0] // scale, s[1] // scale] for b, s in zip(batches, (lo, opt, hi))]
