"""``fsqdeploy bench``: run every backend with warm-up and timing, then compare it against PyTorch.

Running and comparing stay apart (as in Polygraphy): ``measure_latency`` times a codec's runners
on batches of the bench images; ``measure_fidelity`` runs the same codec once over the whole
fidelity set and compares its indices and images with the PyTorch FP32 reference (backend
"torch", ART/checkpoint). ``run_bench`` does both for every requested backend and precision and
returns the report that docs/bench.md describes field by field; ``fsqdeploy.runtime.bench_report``
renders it as tables and a plot.

What is timed is the backend's inference (``runner.infer``): the Codec's input validation is the
same NumPy code for every backend, so it is left out. Warm-up calls are never recorded.

Beside the codec's rate and distortion stand JPEG and WebP (Pillow) on the same images, each
image at the highest quality whose file fits the codec's bytes per image, and at quality 1.
"""

from __future__ import annotations

import io
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import chw_to_hwc_uint8, hwc_uint8_to_chw
from fsqdeploy.metrics import fixed_bits
from fsqdeploy.runtime.codec import BACKENDS, Codec, backend_unavailable_reason

SCHEMA = "fsqdeploy-bench"
SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
STAGES = ("encode", "decode", "roundtrip")
DEFAULT_BATCH_SIZES = (1, 64, 256)
REFERENCE = "torch"
DEFAULT_SECONDS = 1.0
MIN_ITERS = 5  # a --seconds measurement always has at least this many samples
MAX_ITERS = 100_000
MAX_BATCH = 65_536
FSQ_FILE_OVERHEAD = 80  # .fsq bytes besides the payload: 76 + 2*D header (with its CRC) + 4 payload CRC


# -- what to run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSpec:
    """One row of the bench: a backend and the precision it runs at."""

    backend: str
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return self.backend if self.precision == "fp32" else f"{self.backend}:{self.precision}"

    @property
    def reduced(self) -> bool:
        return self.precision != "fp32"


def parse_backends(text: str) -> list[BackendSpec]:
    """"torch,onnxruntime,openvino:bf16" -> specs. Unknown names are user errors; a known precision
    that a backend cannot run (onnxruntime:int8) is not: bench reports it as a skipped row."""
    specs: list[BackendSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        backend, _, precision = part.partition(":")
        backend, precision = backend.strip(), (precision.strip() or "fp32")
        if backend not in BACKENDS:
            raise FSQDeployError(f"bench: unknown backend {backend!r}. Note: use {', '.join(BACKENDS)}, "
                                 "optionally with :fp16, :bf16 or :int8")
        if precision not in PRECISIONS:
            raise FSQDeployError(f"bench: unknown precision {precision!r} in {part!r}. "
                                 f"Note: use one of {', '.join(PRECISIONS)}")
        spec = BackendSpec(backend, precision)
        if spec in specs:
            raise FSQDeployError(f"bench: {spec.label} is listed twice in --backends")
        specs.append(spec)
    if not specs:
        raise FSQDeployError("bench: --backends is empty. Note: e.g. --backends torch,onnxruntime")
    return specs


def default_backends() -> list[BackendSpec]:
    """Every backend at FP32: the CPU ones run, the others become skipped rows where they cannot."""
    return [BackendSpec(b) for b in BACKENDS]


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
    images: int = 512  # fidelity set size
    warmup: int = 3
    iters: int | None = None  # exactly this many timed calls per measurement, or
    seconds: float | None = None  # timed calls until this much time has passed (default 1 s)
    threads: int | None = None  # None: every core this process may use
    gates: Gates = field(default_factory=Gates)
    baselines: bool = True
    tile_size: int = 256  # 0: no tile comparison
    tile_images: int = 8
    tile_data: str = "sample"

    def check(self) -> None:
        """Every user mistake in the settings, before anything is loaded."""
        if self.images < 1:
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


# -- the machine ---------------------------------------------------------------------------------

_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "avx_vnni")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpuinfo() -> tuple[str | None, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, []
    model, flags = None, []
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

    tensorrt = next((v for v in map(_version, ("tensorrt", "tensorrt-cu12", "tensorrt-cu11")) if v), None)
    return {
        "fsqdeploy": __version__,
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "openvino": _version("openvino"),
        "tensorrt": tensorrt,
        "numpy": np.__version__,
        "onnx": _version("onnx"),
        "pillow": _version("pillow"),
        "python": platform.python_version(),
    }


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    model, flags = _cpuinfo()
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "count": torch.cuda.device_count(),
               "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_features": [f for f in _CPU_FEATURES if f in flags],
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "gpu": gpu,
        "os": platform.platform(),
        "versions": library_versions(),
    }


# -- the images ----------------------------------------------------------------------------------


def load_bench_images(spec: str, image_size: int, count: int) -> tuple[np.ndarray, str]:
    """The first ``count`` test-split images of ``spec`` as float32 [N, 3, S, S] in [0, 1]."""
    from fsqdeploy.data import load_images
    from fsqdeploy.images import images_to_float

    splits = load_images(spec, image_size)
    if len(splits.test) == 0:
        raise FSQDeployError(f"bench: data {spec!r} has no test images. Note: pass --data SPEC")
    return images_to_float(splits.test[:count]), splits.source


def default_data(manifest: dict[str, Any]) -> str:
    parity = manifest.get("parity")
    spec = parity.get("data") if isinstance(parity, dict) else None
    return spec if isinstance(spec, str) and spec else "sample"


def cycle(array: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``array``, repeating it when it is shorter; C-contiguous."""
    return np.ascontiguousarray(array[np.arange(n) % len(array)])


# -- timing ----------------------------------------------------------------------------------------


class Clock(Protocol):
    """Times one call in seconds; ``name`` goes into every result row as ``timing``."""

    name: str

    def __call__(self, fn: Callable[[], object]) -> float: ...


class WallClock:
    """Host wall-clock time: every CPU backend's calls are synchronous on the host."""

    name = "wall"

    def __call__(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


class CudaEventClock:
    """GPU time between two CUDA events recorded on the current stream around the call. The call may
    return before the GPU is done (device-resident inputs): the interval ends when the GPU reaches
    the second event, not when the host returns, so launch overhead hidden by queueing is not counted
    and work still queued is."""

    name = "cuda-events"

    def __call__(self, fn: Callable[[], object]) -> float:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds


GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime-trt")


def clock_for(codec: Codec) -> Clock:
    """CUDA events for the GPU backends, host wall clock for the CPU ones."""
    return CudaEventClock() if codec.backend in GPU_BACKENDS else WallClock()


def measure(fn: Callable[[], object], clock: Clock, *, warmup: int, iters: int | None = None,
            seconds: float | None = None) -> list[float]:
    """Call ``fn`` ``warmup`` times unrecorded, then time it ``iters`` times, or for ``seconds``
    (at least MIN_ITERS calls). Returns each timed call's duration in seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if iters is not None:
        return [clock(fn) for _ in range(iters)]
    budget = DEFAULT_SECONDS if seconds is None else seconds
    started = time.perf_counter()
    while len(times) < MAX_ITERS and (len(times) < MIN_ITERS or time.perf_counter() - started < budget):
        times.append(clock(fn))
    return times


def latency_stats(times: Sequence[float], batch_size: int) -> dict[str, Any]:
    ms = np.asarray(times, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return {
        "latency_ms": {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean},
        "throughput_ips": batch_size / (mean / 1e3),
        "samples": len(times),
    }


def stage_calls(codec: Codec, images: np.ndarray, indices: np.ndarray) -> dict[str, Callable[[], object]]:
    """The three timed calls on one batch of host (NumPy) arrays, so a GPU backend's time includes
    the host<->device copies; the inputs are prepared once, outside the timing."""
    enc, dec = codec.encoder, codec.decoder
    images = np.ascontiguousarray(images, dtype=np.float32)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    return {
        "encode": lambda: enc.infer({"images": images}),
        "decode": lambda: dec.infer({"indices": indices}),
        "roundtrip": lambda: dec.infer({"indices": enc.infer({"images": images})["indices"]}),
    }


def device_stage_calls(codec: Codec, images: np.ndarray, indices: np.ndarray
                       ) -> dict[str, Callable[[], object]] | None:
    """The three calls on GPU-resident tensors (no host copies), for runners that take them (the
    TensorRT runner's ``infer_torch``); None for the others."""
    enc, dec = codec.encoder, codec.decoder
    if not (hasattr(enc, "infer_torch") and hasattr(dec, "infer_torch")):
        return None
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).cuda()
    idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int32)).cuda()
    return {
        "encode": lambda: enc.infer_torch(x),
        "decode": lambda: dec.infer_torch(idx),
        "roundtrip": lambda: dec.infer_torch(enc.infer_torch(x)),
    }


def measure_latency(codec: Codec, spec: BackendSpec, images: np.ndarray, indices: np.ndarray,
                    settings: BenchSettings, clock: Clock | None = None) -> list[dict[str, Any]]:
    """One result row per batch size, stage and I/O placement; ``images``/``indices`` are cycled up to
    the batch. ``io`` is ``"host"`` (NumPy in and out: what an application pays, copies included)
    for every backend, plus ``"device"`` (GPU tensors in and out) where the runners take them."""
    clock = clock or clock_for(codec)
    rows = []
    for batch in settings.batch_sizes:
        x, idx = cycle(images, batch), cycle(indices, batch)
        placements = [("host", stage_calls(codec, x, idx))]
        on_device = device_stage_calls(codec, x, idx)
        if on_device is not None:
            placements.append(("device", on_device))
        for placement, calls in placements:
            for stage in STAGES:
                times = measure(calls[stage], clock, warmup=settings.warmup, iters=settings.iters,
                                seconds=settings.timed_seconds)
                rows.append({"backend": spec.backend, "precision": spec.precision, "batch_size": batch,
                             "stage": stage, "timing": clock.name, "io": placement, **latency_stats(times, batch)})
    return rows


# -- fidelity against the PyTorch reference ------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The fidelity set and what PyTorch FP32 makes of it."""

    images: np.ndarray  # float32 [N, 3, S, S] in [0, 1]
    indices: np.ndarray  # int32 [N, W], the reference encoder's
    decoded: np.ndarray  # float32 [N, 3, S, S], the reference decoder on ``indices``


def reference_outputs(reference: Codec, images: np.ndarray) -> Reference:
    indices = reference.encode(images)
    return Reference(images, indices, reference.decode(indices))


def rate(levels: Sequence[int], image_size: int) -> dict[str, float]:
    bits = fixed_bits(levels)
    return {"bits_per_image": bits, "bits_per_pixel": bits / (image_size * image_size)}


def _psnr_ssim(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from fsqdeploy.metrics import psnr, ssim

    ta, tb = torch.from_numpy(np.asarray(a, np.float32)), torch.from_numpy(np.asarray(b, np.float32))
    return psnr(ta, tb).numpy(), ssim(ta, tb).numpy()


def _pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the mean squared error over the whole set (not a mean of per-image PSNRs, which the
    100 dB cap for identical images would dominate when only a few images differ)."""
    import torch

    from fsqdeploy.metrics import psnr

    return float(psnr(torch.from_numpy(a).reshape(1, -1), torch.from_numpy(b).reshape(1, -1))[0])


def compare_to_reference(spec: BackendSpec, ref: Reference, indices: np.ndarray, decoded: np.ndarray,
                         decoded_ref_indices: np.ndarray, levels: Sequence[int]) -> dict[str, Any]:
    """The fidelity row (without its gate) from a backend's outputs on the fidelity set:
    ``indices`` = its encoder on ref.images, ``decoded`` = its decoder on ``indices``,
    ``decoded_ref_indices`` = its decoder on ref.indices (isolates the decoder's error)."""
    equal = np.asarray(indices) == ref.indices
    psnr_in, ssim_in = _psnr_ssim(decoded, ref.images)
    return {
        "backend": spec.backend,
        "precision": spec.precision,
        "reference": spec == BackendSpec(REFERENCE),
        "images": len(ref.images),
        "index_agreement": float(equal.mean()),
        "images_with_flips": float((~equal).any(axis=1).mean()),
        "psnr_vs_reference": _pooled_psnr(decoded, ref.decoded),
        "max_abs_error_vs_reference": float(np.abs(decoded - ref.decoded).max()),
        "decoder_psnr_vs_reference": _pooled_psnr(decoded_ref_indices, ref.decoded),
        "decoder_max_abs_error": float(np.abs(decoded_ref_indices - ref.decoded).max()),
        "psnr_vs_input": float(psnr_in.mean()),
        "ssim_vs_input": float(ssim_in.mean()),
        **rate(levels, ref.images.shape[-1]),
    }


def measure_fidelity(codec: Codec, spec: BackendSpec, ref: Reference) -> dict[str, Any]:
    indices = codec.encode(ref.images)
    return compare_to_reference(spec, ref, indices, codec.decode(indices), codec.decode(ref.indices), codec.levels)


def check_gate(row: dict[str, Any], gates: Gates) -> dict[str, Any]:
    """{passed, reasons} for one fidelity row; the reference row passes by definition."""
    reasons = []
    if row["reference"]:
        return {"passed": True, "reasons": []}
    if row["precision"] == "fp32":
        if row["index_agreement"] < gates.min_index_agreement:
            reasons.append(f"index agreement {100 * row['index_agreement']:.4f}% < "
                           f"{100 * gates.min_index_agreement:.4g}% (--min-index-agreement)")
        if row["decoder_max_abs_error"] > gates.max_decoder_error:
            reasons.append(f"decoder max abs error {row['decoder_max_abs_error']:.3g} > "
                           f"{gates.max_decoder_error:.3g} (--max-decoder-error)")
    else:
        if row["index_agreement"] < gates.min_index_agreement_reduced:
            reasons.append(f"index agreement {100 * row['index_agreement']:.4f}% < "
                           f"{100 * gates.min_index_agreement_reduced:.4g}% (--min-index-agreement-reduced)")
        if row["psnr_vs_reference"] < gates.min_psnr_vs_reference:
            reasons.append(f"PSNR vs reference {row['psnr_vs_reference']:.2f} dB < "
                           f"{gates.min_psnr_vs_reference:g} dB (--min-psnr-vs-reference)")
    return {"passed": not reasons, "reasons": reasons}


# -- JPEG and WebP at the codec's rate -----------------------------------------------------------

BASELINE_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
# JPEG with optimized Huffman tables and WebP at its slowest, smallest method: the baselines' best.
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {"jpeg": {"optimize": True}, "webp": {"method": 6}}
MIN_QUALITY, MAX_QUALITY = 1, 95


def encode_image(image: np.ndarray, codec: str, quality: int) -> bytes:
    """uint8 [H, W, 3] -> the bytes of a whole JPEG or WebP file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=BASELINE_FORMATS[codec], quality=quality, **_SAVE_OPTIONS[codec])
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def best_quality_within(image: np.ndarray, codec: str, budget: int) -> tuple[int, bytes] | None:
    """The highest quality in 1..95 whose file is at most ``budget`` bytes, by binary search
    (file size grows with quality), and that file; None when even quality 1 is larger."""
    lo_data = encode_image(image, codec, MIN_QUALITY)
    if len(lo_data) > budget:
        return None
    lo, hi = MIN_QUALITY, MAX_QUALITY
    best = (lo, lo_data)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        data = encode_image(image, codec, mid)
        if len(data) <= budget:
            lo, best = mid, (mid, data)
        else:
            hi = mid - 1
    return best


def baseline_rows(images: np.ndarray, budget_bytes: int, scope: str) -> list[dict[str, Any]]:
    """JPEG and WebP on float images [N, 3, H, W]: one row at the codec's byte budget (per image,
    the best quality that fits) and one at quality 1 (where each format's rate bottoms out)."""
    originals = chw_to_hwc_uint8(images)
    pixels = originals.shape[1] * originals.shape[2]
    rows = []
    for codec in BASELINE_FORMATS:
        common = {"codec": codec, "scope": scope, "image_size": list(originals.shape[1:3]),
                  "images": len(originals), "options": _SAVE_OPTIONS[codec]}
        fits = [best_quality_within(img, codec, budget_bytes) for img in originals]
        kept = [i for i, f in enumerate(fits) if f is not None]
        row = {**common, "mode": "equal_bytes", "budget_bytes": budget_bytes, "images_within_budget": len(kept),
               "quality_mean": None, "bytes_mean": None, "bits_per_pixel": None,
               "psnr_vs_input": None, "ssim_vs_input": None, "note": None}
        smallest = [len(encode_image(img, codec, MIN_QUALITY)) for img in originals]
        if kept:
            files = [fits[i] for i in kept]  # type: ignore[misc]
            decoded = hwc_uint8_to_chw(np.stack([decode_image(f[1]) for f in files]))
            p, s = _psnr_ssim(decoded, hwc_uint8_to_chw(originals[kept]))
            nbytes = np.array([len(f[1]) for f in files])
            row.update(quality_mean=float(np.mean([f[0] for f in files])), bytes_mean=float(nbytes.mean()),
                       bits_per_pixel=float(nbytes.mean() * 8 / pixels),
                       psnr_vs_input=float(p.mean()), ssim_vs_input=float(s.mean()))
        if len(kept) < len(originals):
            over = [smallest[i] for i in range(len(originals)) if fits[i] is None]
            row["note"] = (f"n/a for {len(over)} of {len(originals)} images: smallest {codec.upper()} is "
                           f"{min(over)} bytes > {budget_bytes}" + ("" if min(over) == max(over) else
                                                                     f" (up to {max(over)})"))
        rows.append(row)

        files = [encode_image(img, codec, MIN_QUALITY) for img in originals]
        decoded = hwc_uint8_to_chw(np.stack([decode_image(f) for f in files]))
        p, s = _psnr_ssim(decoded, hwc_uint8_to_chw(originals))
        nbytes = np.array([len(f) for f in files])
        rows.append({**common, "mode": "min_quality", "quality": MIN_QUALITY, "bytes_mean": float(nbytes.mean()),
                     "bits_per_pixel": float(nbytes.mean() * 8 / pixels),
                     "psnr_vs_input": float(p.mean()), "ssim_vs_input": float(s.mean())})
    return rows


def codec_row(scope: str, images: int, image_size: Sequence[int], payload_bytes: float, pixels: int,
              psnr_in: float, ssim_in: float, **extra: Any) -> dict[str, Any]:
    return {"codec": "fsq", "scope": scope, "image_size": list(image_size), "images": images,
            "mode": "codec", "bytes_mean": payload_bytes, "bits_per_pixel": payload_bytes * 8 / pixels,
            "psnr_vs_input": psnr_in, "ssim_vs_input": ssim_in, **extra}


def tile_rows(reference: Codec, settings: BenchSettings) -> list[dict[str, Any]]:
    """Whole tiles (e.g. 256x256 photo crops) through the codec's tiling vs JPEG/WebP at equal bytes."""
    from fsqdeploy.data import load_images
    from fsqdeploy.images import from_patches, to_patches

    size = settings.tile_size
    try:
        splits = load_images(settings.tile_data, size)
    except FSQDeployError as e:
        return [{"codec": "fsq", "scope": "tile", "mode": "codec", "note": f"n/a: {e}"}]
    crops = np.concatenate([splits.test, splits.train])[: settings.tile_images]
    if len(crops) == 0:
        note = f"n/a: {settings.tile_data!r} has no images"
        return [{"codec": "fsq", "scope": "tile", "mode": "codec", "note": note}]
    originals = crops.transpose(0, 2, 3, 1)  # uint8 [N, H, W, 3]
    decoded, patches_per_tile = [], 0
    for img in originals:
        patches, rows, cols = to_patches(img, reference.image_size)
        patches_per_tile = rows * cols
        decoded.append(from_patches(reference.decode(reference.encode(patches)), rows, cols, size, size))
    bits = fixed_bits(reference.levels) * patches_per_tile
    payload = math.ceil(bits / 8)
    p, s = _psnr_ssim(hwc_uint8_to_chw(np.stack(decoded)), hwc_uint8_to_chw(originals))
    row = codec_row("tile", len(crops), (size, size), float(payload), size * size, float(p.mean()), float(s.mean()),
                    data=splits.source, patches_per_tile=patches_per_tile,
                    file_bytes=payload + FSQ_FILE_OVERHEAD + 2 * len(reference.levels))
    return [row, *baseline_rows(hwc_uint8_to_chw(originals), payload, "tile")]


# -- the whole bench -----------------------------------------------------------------------------


def _load(art: Path, spec: BackendSpec, threads: int) -> Codec | str:
    """A loaded codec, or the one-line reason it cannot run here (a skipped row, never a traceback)."""
    reason = backend_unavailable_reason(spec.backend)
    if reason:
        return reason
    try:
        return Codec.load(art, spec.backend, precision=spec.precision, threads=threads, verify=False)
    except FSQDeployError as e:
        return str(e).removeprefix("codec: ")


def run_bench(art: str | Path, settings: BenchSettings,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every backend in ``settings`` and compare it with PyTorch; returns the report."""
    from fsqdeploy.artifact import CHECKPOINT_DIR, read_manifest, verify_files

    settings.check()
    say = progress or (lambda _msg: None)
    art = Path(art)
    manifest = read_manifest(art)
    problems = verify_files(manifest, art)
    if problems:
        raise FSQDeployError(f"bench: '{art}' failed verification: {problems[0]}. Note: export again")
    if not (art / CHECKPOINT_DIR / "config.json").is_file():
        raise FSQDeployError(f"bench: '{art}' holds no {CHECKPOINT_DIR}/ for the PyTorch reference. "
                             "Note: export it again with this fsqdeploy")
    threads = settings.resolved_threads()
    image_size = int(manifest["image_size"])

    spec_data = settings.data or default_data(manifest)
    data_note = None
    try:
        images, source = load_bench_images(spec_data, image_size, settings.images)
    except FSQDeployError as e:
        if settings.data is not None:
            raise
        data_note = f"the export's parity data could not be loaded ({e}); used 'sample'"
        say(f"bench: {data_note}")
        images, source = load_bench_images("sample", image_size, settings.images)

    say(f"bench: PyTorch reference on {len(images)} images of {source}")
    reference = Codec.load(art, REFERENCE, threads=threads, verify=False)
    results: list[dict[str, Any]] = []
    fidelity: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    try:
        ref = reference_outputs(reference, images)
        for spec in settings.backends:
            codec = reference if spec == BackendSpec(REFERENCE) else _load(art, spec, threads)
            if isinstance(codec, str):
                skipped.append({"backend": spec.backend, "precision": spec.precision, "reason": codec})
                say(f"bench: {spec.label} skipped: {codec}")
                continue
            try:
                say(f"bench: timing {spec.label} at batch sizes {', '.join(map(str, settings.batch_sizes))}")
                results += measure_latency(codec, spec, ref.images, ref.indices, settings)
                row = measure_fidelity(codec, spec, ref)
                row["gate"] = check_gate(row, settings.gates)
                fidelity.append(row)
            finally:
                if codec is not reference:
                    codec.close()
        baselines: list[dict[str, Any]] = []
        if settings.baselines:
            say("bench: JPEG and WebP at the codec's rate")
            r = rate(reference.levels, image_size)
            psnr_in, ssim_in = _psnr_ssim(ref.decoded, ref.images)
            baselines.append(codec_row("patch", len(images), (image_size, image_size), r["bits_per_image"] / 8,
                                       image_size * image_size, float(psnr_in.mean()), float(ssim_in.mean())))
            baselines += baseline_rows(images, math.ceil(r["bits_per_image"] / 8), "patch")
            if settings.tile_size:
                baselines += tile_rows(reference, settings)
    finally:
        reference.close()

    failures = [f"{row['backend']} {row['precision']}: {reason}"
                for row in fidelity for reason in row["gate"]["reasons"]]
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "artifact": artifact_info(art, manifest),
        "machine": machine_info(threads),
        "settings": {**settings.to_json(), "data": source, "data_note": data_note, "images": len(images),
                     "images_requested": settings.images,
                     "tiles": {"size": settings.tile_size, "images": settings.tile_images, "data": settings.tile_data}
                     if settings.baselines and settings.tile_size else None},
        "results": results,
        "fidelity": fidelity,
        "skipped": skipped,
        "baselines": baselines,
        "gates": {"passed": not failures, "failures": failures},
    }


def artifact_info(art: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    levels = [int(v) for v in manifest["levels"]]
    return {
        "path": str(art.absolute()),
        "model_id": manifest["model_id"],
        "levels": levels,
        "image_size": int(manifest["image_size"]),
        "code_width": len(levels),
        "latent_dim": manifest.get("latent_dim"),
        "stages": manifest.get("stages"),
        "opset": manifest.get("opset"),
        **rate(levels, int(manifest["image_size"])),
    }

