"""What a bench runs: backend rows (``BackendSpec``), batch sizes, gates and the other settings,
parsed from the CLI's strings and checked before anything is loaded."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fsqdeploy.artifact import PRECISIONS
from fsqdeploy.backends import REGISTRY
from fsqdeploy.backends.tuning import usable_cores  # noqa: F401 - bench's settings and machine facts read it here
from fsqdeploy.errors import FSQDeployError

DEFAULT_BATCH_SIZES = (1, 64, 256)
REFERENCE = "torch"  # the PyTorch FP32 model in ART/checkpoint; every fidelity row is against it
DEVICES = ("cpu", "cuda")  # where the reference backend may run; the other backends' device is their own
DEFAULT_SECONDS = 1.0
MAX_ITERS = 100_000
MAX_BATCH = 65_536


@dataclass(frozen=True)
class BackendSpec:
    """One row of the bench: a backend, the precision it runs at and, for the PyTorch reference
    only, the device (``torch:cuda``: so GPU rows have a like-for-like PyTorch to compare with)."""

    backend: str
    precision: str = "fp32"
    device: str = "cpu"

    @property
    def label(self) -> str:
        label = self.backend if self.precision == "fp32" else f"{self.backend}:{self.precision}"
        return f"{label}:{self.device}" if self.device != "cpu" else label

    @property
    def reduced_reason(self) -> str | None:
        """Why the backend computes in less than this precision says (TF32 for an "fp32"), or None."""
        return REGISTRY[self.backend].reduced.get(self.precision)

    @property
    def reduced(self) -> bool:
        """Held to the reduced-precision gates: below FP32, or FP32 by name only."""
        return self.precision != "fp32" or self.reduced_reason is not None

    @property
    def gpu(self) -> bool:
        """Runs on an NVIDIA GPU: a GPU backend, or the reference placed on CUDA."""
        return self.device == "cuda" or REGISTRY[self.backend].gpu

    @property
    def clock(self) -> str:
        """The clock this row wants: CUDA events on the GPU (where torch has CUDA), else the wall clock."""
        return "cuda-events" if self.device == "cuda" else REGISTRY[self.backend].clock

    @property
    def placement(self) -> str:
        """The ``device`` every row of this spec carries in the report."""
        return "cuda" if self.gpu else "cpu"


def parse_backends(text: str) -> list[BackendSpec]:
    """"torch,torch:cuda,onnxruntime,openvino:bf16" -> specs. Unknown names are user errors; a known
    precision that a backend cannot run (onnxruntime:int8) is not: bench reports it as a skipped row."""
    specs: list[BackendSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        backend, _, suffix = (s.strip() for s in part.partition(":"))
        if backend not in REGISTRY:
            raise FSQDeployError(f"bench: unknown backend {backend!r}. Note: use {', '.join(REGISTRY)}, "
                                 f"optionally with :{', :'.join(p for p in PRECISIONS if p != 'fp32')} "
                                 f"({REFERENCE}:cuda: PyTorch on the GPU)")
        spec = _with_suffix(backend, suffix or "fp32", part)
        if spec in specs:
            raise FSQDeployError(f"bench: {spec.label} is listed twice in --backends")
        specs.append(spec)
    if not specs:
        raise FSQDeployError("bench: --backends is empty. Note: e.g. --backends torch,onnxruntime")
    return specs


def _with_suffix(backend: str, suffix: str, part: str) -> BackendSpec:
    """The part after ':' is a precision, or for the reference a device (torch:cuda)."""
    if suffix in DEVICES:
        if backend != REFERENCE:
            raise FSQDeployError(f"bench: {part!r}: only {REFERENCE} takes a device. Note: the GPU routes are "
                                 f"backends of their own: {', '.join(n for n, b in REGISTRY.items() if b.gpu)}")
        return BackendSpec(backend, device=suffix)
    if suffix not in PRECISIONS:
        raise FSQDeployError(f"bench: unknown precision {suffix!r} in {part!r}. "
                             f"Note: use one of {', '.join(PRECISIONS)}")
    return BackendSpec(backend, suffix)


def default_backends() -> list[BackendSpec]:
    """Every registered backend at FP32: the CPU ones run, the others become skipped rows where
    they cannot (run_bench adds torch:cuda beside torch where PyTorch sees a GPU)."""
    return [BackendSpec(name) for name in REGISTRY]


def parse_photo_size(text: str) -> tuple[int, int] | None:
    """``--photo-size WxH`` (width first, as image sizes are written) -> (height, width); "0": None."""
    if text.strip() == "0":
        return None
    width, sep, height = text.strip().lower().partition("x")
    if not sep or not (width.isdigit() and height.isdigit()) or min(int(width), int(height)) < 1:
        raise FSQDeployError(f"bench: --photo-size must be WxH (e.g. 768x512) or 0 (off), got {text!r}")
    return int(height), int(width)


def parse_batch_sizes(text: str) -> list[int]:
    try:
        parsed = [int(part) for part in text.split(",")]
    except ValueError:
        raise FSQDeployError(f"bench: --batch-sizes {text!r} is not a comma-separated list of integers. "
                             "Note: e.g. --batch-sizes 1,64,256") from None
    sizes: list[int] = []
    for size in parsed:
        if not 1 <= size <= MAX_BATCH:
            raise FSQDeployError(f"bench: batch size {size} is outside 1..{MAX_BATCH}")
        if size not in sizes:
            sizes.append(size)
    return sizes


@dataclass(frozen=True)
class Gates:
    """Pass/fail thresholds; fp32 rows and reduced-precision rows (fp16, bf16, int8) differ."""

    min_index_agreement: float = 1.0  # fp32 rows: every index equal to PyTorch's
    max_decoder_error: float = 1e-5  # fp32 rows: max |decode(ref indices) - reference decode|, as export parity
    min_index_agreement_reduced: float = 0.99
    min_psnr_vs_reference: float = 40.0  # reduced rows: dB, own indices decoded vs the reference decode

    def check(self) -> None:
        for name in ("min_index_agreement", "min_index_agreement_reduced"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FSQDeployError(f"bench: --{name.replace('_', '-')} must lie in [0, 1] (a share of "
                                     f"indices), got {value}")
        if not math.isfinite(self.min_psnr_vs_reference):
            raise FSQDeployError("bench: --min-psnr-vs-reference must be a finite number of dB")
        if not self.max_decoder_error >= 0:
            raise FSQDeployError(f"bench: --max-decoder-error must be >= 0, got {self.max_decoder_error}")


@dataclass
class BenchSettings:
    backends: list[BackendSpec] = field(default_factory=default_backends)
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    data: str | None = None  # None: the data the export's parity gate used, else "sample"
    images: int | None = None  # fidelity set size; None: as many as the export's parity gate used
    warmup: int = 3
    iters: int | None = None  # exactly this many timed calls per measurement, or
    seconds: float | None = None  # timed calls until this much time has passed (default 1 s)
    threads: int | None = None  # None: every core this process may use
    gates: Gates = field(default_factory=Gates)
    baselines: bool = True
    tile_size: int = 256  # 0: no tile comparison
    tile_images: int = 8
    tile_data: str = "sample"
    photo_data: str | None = None  # whole photos; None: --data when it is sample or folder:DIR, else sample
    photo_images: int | None = None  # the first N held-out photos; None: all; 0: no photo rows
    sweep: bool = False  # also each baseline's quality sweep over the photos (the rate-distortion plot's curves)
    # Spatial models: also time batch 1 at this (height, width), padded up to multiples of f; None: off.
    # The default is the TensorRT profile's opt shape and fsqdeploy tune's: a 768 x 512 photo.
    photo_size: tuple[int, int] | None = (512, 768)

    def check(self) -> None:
        """Every user mistake in the settings, before anything is loaded."""
        if self.images is not None and self.images < 1:
            raise FSQDeployError(f"bench: --images must be at least 1, got {self.images}")
        if self.warmup < 0:
            raise FSQDeployError(f"bench: --warmup must be >= 0, got {self.warmup}")
        if self.iters is not None and self.seconds is not None:
            raise FSQDeployError("bench: pass --iters or --seconds, not both")
        if self.iters is not None and not 1 <= self.iters <= MAX_ITERS:
            raise FSQDeployError(f"bench: --iters must lie in 1..{MAX_ITERS}, got {self.iters}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise FSQDeployError(f"bench: --seconds must be positive, got {self.seconds}")
        if self.threads is not None and self.threads < 1:
            raise FSQDeployError(f"bench: --threads must be at least 1, got {self.threads}")
        if self.tile_size < 0 or self.tile_size % 16:
            raise FSQDeployError(f"bench: --tile-size must be 0 (off) or a multiple of 16, got {self.tile_size}")
        if self.tile_images < 1:
            raise FSQDeployError(f"bench: --tile-images must be at least 1, got {self.tile_images}")
        if self.photo_images is not None and self.photo_images < 0:
            raise FSQDeployError(f"bench: --photo-images must be 0 (off) or more, got {self.photo_images}")
        if self.photo_size is not None and not (len(self.photo_size) == 2 and min(self.photo_size) >= 1):
            raise FSQDeployError(f"bench: --photo-size must be WxH with both at least 1, got {self.photo_size}")
        self.gates.check()

    @property
    def timed_seconds(self) -> float | None:
        """Seconds per measurement, or None when --iters fixes the count."""
        return None if self.iters is not None else (self.seconds or DEFAULT_SECONDS)

    def resolved_threads(self) -> int:
        return self.threads or usable_cores()

    def to_json(self) -> dict[str, Any]:
        return {
            "backends": [s.label for s in self.backends],
            "batch_sizes": list(self.batch_sizes),
            "warmup": self.warmup,
            "iters": self.iters,
            "seconds": self.timed_seconds,
            "threads": self.resolved_threads(),
            "gates": asdict(self.gates),
        }
