"""``run_bench``: the manifest read and verified once, the images, the PyTorch reference, then every
backend row timed and compared (or skipped with its reason), the baselines, and the report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.artifact import CONFIG_FILE, Manifest
from fsqdeploy.backends import REGISTRY
from fsqdeploy.config import read_config
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.metrics import fixed_bits
from fsqdeploy.runtime.bench.fidelity import (
    Reference,
    check_gate,
    measure_fidelity,
    photo_codes,
    rate,
    reference_outputs,
)
from fsqdeploy.runtime.bench.machine import fp32_without_tf32, machine_info, torch_has_cuda
from fsqdeploy.runtime.bench.photos import Photos, load_bench_photos, photo_rows, photo_source
from fsqdeploy.runtime.bench.ratedistortion import patch_rows, tile_rows
from fsqdeploy.runtime.bench.settings import REFERENCE, BackendSpec, BenchSettings
from fsqdeploy.runtime.bench.timing import measure_latency
from fsqdeploy.runtime.codec import Codec

SCHEMA = "fsqdeploy-bench"
SCHEMA_VERSION = 4  # 4: results rows of scope photo; 3: whole-photo and quality-sweep rows, spatial artifacts;
# 2: compare's vocabulary, device
SET_SCHEMA = "fsqdeploy-bench-set"  # several artifacts benched in one call: their reports in order
SET_SCHEMA_VERSION = 1

Say = Callable[[str], None]


def load_bench_images(spec: str, image_size: int, count: int) -> tuple[np.ndarray, str]:
    """The first ``count`` test-split images of ``spec`` as float32 [N, 3, S, S] in [0, 1]."""
    from fsqdeploy.data import load_images
    from fsqdeploy.images import images_to_float

    splits = load_images(spec, image_size)
    if len(splits.test) == 0:
        raise FSQDeployError(f"bench: data {spec!r} has no test images. Note: pass --data SPEC")
    return images_to_float(splits.test[:count]), splits.source


def bench_images(manifest: Manifest, settings: BenchSettings, say: Say) -> tuple[np.ndarray, str, str | None]:
    """(images, canonical data spec, note): --data, else the export's parity data, else sample
    (with a note saying why, when the parity data cannot be loaded here)."""
    count = settings.images or manifest.default_images()
    if settings.data is not None:
        return (*load_bench_images(settings.data, manifest.image_size, count), None)
    try:
        return (*load_bench_images(manifest.default_data() or "sample", manifest.image_size, count), None)
    except FSQDeployError as e:
        note = f"the export's parity data could not be loaded ({e}); used 'sample'"
        say(f"bench: {note}")
        return (*load_bench_images("sample", manifest.image_size, count), note)


def with_reference(specs: list[BackendSpec], reference: BackendSpec) -> list[BackendSpec]:
    """Where PyTorch sees a GPU the reference is torch:cuda; it runs first, beside the CPU torch row
    that was asked for, so GPU rows are compared with PyTorch on the same device."""
    cpu = BackendSpec(REFERENCE)
    if reference in specs or cpu not in specs:
        return list(specs)
    at = specs.index(cpu)
    return [*specs[:at], reference, *specs[at:]]


def failure_reason(e: Exception) -> str:
    """One line for a skipped row: ours as written, a third-party runtime's with its type."""
    if isinstance(e, FSQDeployError):
        return str(e).removeprefix("codec: ")
    first = (str(e).strip().splitlines() or [""])[0]
    return f"failed here: {type(e).__name__}: {first}"[:500]


def unavailable_reason(spec: BackendSpec, manifest: Manifest) -> str | None:
    """Why the registry says this row cannot run here: the precision, this machine, then this ART."""
    backend = REGISTRY[spec.backend]
    return (backend.precision_problem(spec.precision) or backend.unavailable_reason()
            or backend.artifact_problem(manifest, spec.precision))


def open_codec(manifest: Manifest, spec: BackendSpec, threads: int) -> Codec | str:
    """A loaded codec, or the one-line reason it cannot run here (a skipped row, never a traceback)."""
    reason = unavailable_reason(spec, manifest)
    if reason:
        return reason
    try:
        return Codec.load(manifest, spec.backend, precision=spec.precision, threads=threads, device=spec.device)
    except Exception as e:  # a runtime that cannot load here is a skipped row
        return failure_reason(e)


def measure_row(codec: Codec, spec: BackendSpec, ref: Reference, settings: BenchSettings, *, close: bool
                ) -> tuple[list[dict[str, Any]], dict[str, Any]] | str:
    """The latency rows and the gated fidelity row of one loaded backend, or why it failed while
    running (a skipped row, never a traceback); ``close``: close the codec afterwards."""
    try:
        latency = measure_latency(codec, spec, ref.images, ref.indices, settings, photo=ref.timing_photo)
        row = measure_fidelity(codec, spec, ref)
        row["gate"] = check_gate(row, settings.gates)
        return latency, row
    except Exception as e:  # e.g. a CUDA error inside a third-party runtime
        return failure_reason(e)
    finally:
        if close:
            codec.close()


def load_reference(manifest: Manifest, spec: BackendSpec, threads: int, images: np.ndarray
                   ) -> tuple[Codec, Reference]:
    """The PyTorch FP32 codec and its outputs on the fidelity set; without them there is no bench."""
    codec = open_codec(manifest, spec, threads)
    if isinstance(codec, str):
        raise FSQDeployError(f"bench: the PyTorch reference ({spec.label}) cannot run: {codec}")
    try:
        return codec, reference_outputs(codec, images, spec)
    except Exception as e:
        codec.close()
        raise FSQDeployError(f"bench: the PyTorch reference ({spec.label}) failed: {failure_reason(e)}") from e


def run_rows(manifest: Manifest, specs: list[BackendSpec], reference: Codec, ref: Reference,
             settings: BenchSettings, say: Say) -> tuple[list[dict[str, Any]], ...]:
    """(results, fidelity, skipped) over ``specs`` in order: each backend loaded, timed, compared and
    closed before the next; the reference row reuses the loaded reference."""
    results: list[dict[str, Any]] = []
    fidelity: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    threads = settings.resolved_threads()
    for spec in specs:
        codec = reference if spec == ref.spec else open_codec(manifest, spec, threads)
        if not isinstance(codec, str):
            say(f"bench: timing {spec.label} at batch sizes {', '.join(map(str, settings.batch_sizes))}")
        outcome = codec if isinstance(codec, str) else measure_row(codec, spec, ref, settings,
                                                                   close=codec is not reference)
        if isinstance(outcome, str):
            skipped.append({"backend": spec.backend, "precision": spec.precision, "device": spec.placement,
                            "reason": outcome})
            say(f"bench: {spec.label} skipped: {outcome}")
        else:
            results += outcome[0]
            fidelity.append(outcome[1])
    return results, fidelity, skipped


def bench_photos(manifest: Manifest, settings: BenchSettings, say: Say) -> tuple[Photos | None, str | None]:
    """(the whole photos, a note): None when turned off; a source the user named must load, the
    default (sample) may fail here with a note instead. The photos are ones the model never trained
    on, told by the run's ``training.data`` (runtime.bench.photos.load_bench_photos)."""
    if not settings.baselines or settings.photo_images == 0:
        return None, None
    spec, explicit = photo_source(settings.photo_data, settings.data)
    try:
        photos = load_bench_photos(spec, settings.photo_images, training_data(manifest))
        return photos, photos.warning
    except FSQDeployError as e:
        if explicit:
            raise
        say(f"bench: no whole photos: {e}")
        return None, f"no whole photos: {e}"


def timing_photo(images: np.ndarray, size: tuple[int, int], f: int) -> np.ndarray:
    """float32 [1, 3, H, W]: the first bench image tiled to ``size`` rounded up to multiples of f, as
    compress pads a photo; a conv network's time depends on the size, not on the pixels."""
    height, width = (-(-side // f) * f for side in size)
    reps = (1, -(-height // images.shape[2]), -(-width // images.shape[3]))
    return np.ascontiguousarray(np.tile(images[0], reps)[None, :, :height, :width], dtype=np.float32)


def training_data(manifest: Manifest) -> str | None:
    """The data spec the artifact's model trained on (its checkpoint's ``training.data``), if recorded.
    The checkpoint was verified with the manifest, and the reference loads it next."""
    data = (read_config(manifest.checkpoint_dir).get("training") or {}).get("data")
    return data if isinstance(data, str) and data else None


def rate_distortion(reference: Codec, ref: Reference, photos: Photos | None, settings: BenchSettings,
                    say: Say) -> list[dict[str, Any]]:
    if not settings.baselines:
        return []
    say("bench: JPEG and WebP at the codec's rate")
    rows = patch_rows(ref, reference.levels)
    if settings.tile_size and not reference.spatial:  # a spatial codec's whole images are the photo rows
        rows += tile_rows(reference, settings)
    if photos is not None:
        sweep = " and their quality sweep" if settings.sweep else ""
        say(f"bench: {len(photos.images)} whole photos of {photos.source} ({photos.selection}) through "
            f"compress/decompress, JPEG and WebP at no more bytes{sweep}")
        rows += photo_rows(reference, photos, sweep=settings.sweep)
    return rows


def run_bench(art: str | Path, settings: BenchSettings, progress: Say | None = None) -> dict[str, Any]:
    """Measure every backend in ``settings`` and compare it with PyTorch; returns the report."""
    settings.check()
    say = progress or (lambda _msg: None)
    manifest = Manifest.load(art, verify=True, component="bench")
    if not (manifest.checkpoint_dir / CONFIG_FILE).is_file():
        raise FSQDeployError(f"bench: '{manifest.art}' holds no {manifest.checkpoint_dir.name}/ for the PyTorch "
                             "reference. Note: export it again with this fsqdeploy")
    images, source, data_note = bench_images(manifest, settings, say)
    photos, photo_note = bench_photos(manifest, settings, say)
    reference_spec = BackendSpec(REFERENCE, device="cuda" if torch_has_cuda() else "cpu")
    specs = with_reference(settings.backends, reference_spec)

    say(f"bench: PyTorch reference ({reference_spec.label}) on {len(images)} images of {source}")
    with fp32_without_tf32():
        reference, ref = load_reference(manifest, reference_spec, settings.resolved_threads(), images)
        try:
            if manifest.spatial and photos is not None:  # each backend's indices and pixels of whole photos too
                cells, pixels = photo_codes(reference, photos.images)
                ref = dataclasses.replace(ref, photos=photos.images, photo_cells=tuple(cells),
                                          photo_pixels=tuple(pixels))
            if manifest.spatial and settings.photo_size is not None:
                photo = timing_photo(images, settings.photo_size, manifest.downsample)
                ref = dataclasses.replace(ref, timing_photo=(photo, np.asarray(reference.encode(photo))))
            results, fidelity, skipped = run_rows(manifest, specs, reference, ref, settings, say)
            baselines = rate_distortion(reference, ref, photos, settings, say)
        finally:
            reference.close()

    ref_photo_size = None if ref.timing_photo is None else ref.timing_photo[0].shape[2:]
    failures = [f"{row['backend']} {row['precision']}: {reason}"
                for row in fidelity for reason in row["gate"]["reasons"]]
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "artifact": artifact_info(manifest),
        "machine": machine_info(settings.resolved_threads()),
        "settings": {**settings.to_json(), "backends": [s.label for s in specs], "reference": reference_spec.label,
                     "data": source, "data_note": data_note, "images": len(images),
                     "images_requested": settings.images or manifest.default_images(),
                     "tiles": {"size": settings.tile_size, "images": settings.tile_images, "data": settings.tile_data}
                     if settings.baselines and settings.tile_size and not manifest.spatial else None,
                     "photos": None if photos is None else {"data": photos.source, "images": len(photos.images),
                                                            "names": list(photos.names), "sweep": settings.sweep,
                                                            "selection": photos.selection},
                     "photo_note": photo_note,
                     "photo_size": None if ref_photo_size is None else list(ref_photo_size)},
        "results": results,
        "fidelity": fidelity,
        "skipped": skipped,
        "baselines": baselines,
        "gates": {"passed": not failures, "failures": failures},
    }


def artifact_info(manifest: Manifest) -> dict[str, Any]:
    """The manifest's model; the rate is that of one image_size x image_size bench image: one patch,
    or for a spatial model the (image_size / f)^2 cells of a training-size crop."""
    f = manifest.downsample
    cells = (manifest.image_size // f) ** 2 if manifest.spatial else 1
    return {
        "path": str(manifest.art.absolute()),
        "model_id": manifest.model_id,
        "arch": manifest.arch,
        "downsample": f if manifest.spatial else None,
        "levels": list(manifest.levels),
        "image_size": manifest.image_size,
        "code_width": manifest.code_width,
        "latent_dim": manifest.latent_dim,
        "stages": manifest.stages,
        "opset": manifest.opset,
        **rate(manifest.levels, manifest.image_size, cells),
        "bits_per_cell": fixed_bits(manifest.levels),
    }


def run_benches(arts: list[str | Path], settings: BenchSettings, progress: Say | None = None
                ) -> list[dict[str, Any]]:
    """``run_bench`` on every artifact in turn, with the same settings (so the same photos)."""
    say = progress or (lambda _msg: None)
    reports = []
    for i, art in enumerate(arts):
        if len(arts) > 1:
            say(f"bench: artifact {i + 1} of {len(arts)}: {art}")
        reports.append(run_bench(art, settings, say))
    return reports


def report_set(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON of a bench over several artifacts: each report as ``run_bench`` returns it."""
    return {"schema": SET_SCHEMA, "version": SET_SCHEMA_VERSION, "reports": reports}
