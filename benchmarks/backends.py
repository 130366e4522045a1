"""Every CPU backend side by side on one artifact, on its default graphs and on this machine's tuned ones.

    python benchmarks/backends.py [ART] [--run RUN] [--batch-sizes 1,64,256] [--threads N] [--retune]

Without ART it exports RUN, or, without RUN, trains a paper-shape model (default channels and
latent) for one epoch on the sample photos and exports that: its speed is the real model's, its
fidelity a fresh model's. Fidelity comes from fsqdeploy.runtime.bench (the same code as
``fsqdeploy bench``).

Every run prints both columns: "default" is each CPU runtime on the graphs it runs without a tuning
record (the codecs are loaded with ``FSQDEPLOY_CACHE_DIR`` pointed at an empty directory), "tuned"
on the variant ``fsqdeploy tune`` chose for this machine (``tune_artifact``: the record in the
cache when there is one for this CPU, versions and model, else measured now; ``--retune`` measures
again). PyTorch eager, the INT8 graphs (when ART has them) and the backends tuning does not touch
have one column. "auto" is the codec ``Codec.load(ART, "auto")`` opens: the table names the backend
it picked, whose row it is (timing the same codec twice would only double the run).

Latency is measured in alternating blocks: every codec is loaded once, then for each batch size
and stage ``--blocks`` rounds each run a block of ``--block-calls`` calls of every codec in turn
(the order rotating per round). A block's median is its time; the ratio against PyTorch is taken
per round (the same stretch of time for both) and each cell shows the median ratio with its spread
over rounds (min-max), so drift and a neighbour's load on a shared machine hit both sides of a
ratio alike and a quoted ratio says how much it moves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.runtime.bench import STAGES, BackendSpec, BenchSettings, Gates, parse_batch_sizes, run_bench
from fsqdeploy.runtime.bench.timing import alternating_blocks, cycle, round_ratios, stage_calls

BACKENDS = [BackendSpec("torch"), BackendSpec("onnxruntime"), BackendSpec("openvino"), BackendSpec("openvino", "bf16")]


def quick_artifact(work: Path, run: Path | None) -> Path:
    """Export ``run``, or train the paper-shape model for one epoch on sample and export it."""
    from fsqdeploy.config import ModelConfig, TrainConfig
    from fsqdeploy.export.onnx_export import DEFAULT_OPSET
    from fsqdeploy.export.pipeline import export_artifact

    if run is None:
        from fsqdeploy.train.loop import train

        run = work / "run"
        started = time.perf_counter()
        train(ModelConfig(), TrainConfig(data="sample", epochs=1, device="cpu"), run)
        print(f"trained {run} (1 epoch on sample) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    art = work / "art"
    export_artifact(run, art, opset=DEFAULT_OPSET, parity_images=512)
    return art


@dataclass
class Column:
    """One timed codec: a backend on its default graphs ("default") or on this machine's tuned ones."""

    spec: BackendSpec
    mode: str  # "default" or "tuned"
    codec: Any

    @property
    def key(self) -> str:
        return f"{self.spec.label} {self.mode}"


def runner_variant(runner: Any) -> str:
    """What one runner runs: its graph rewrites, threads and (OpenVINO) performance hint and streams."""
    runner = getattr(runner, "large", runner)  # a patch encoder's batch switch: the large-batch graph
    parts = [runner.variant or "exported graph"]
    threads = getattr(runner, "threads", None)
    parts.append(f"{threads} threads" if threads else "default threads")
    if getattr(runner, "applied", None):
        parts.append(f"hint {runner.applied['PERFORMANCE_HINT']}, {runner.applied['NUM_STREAMS']} streams")
    elif getattr(runner, "hint", None):
        parts.append(f"hint {runner.hint}")
    parts.append("tuned record" if runner.tuned else "defaults")
    return ", ".join(parts)


def codec_variant(codec: Any) -> str:
    """The encoder's and decoder's variants, read off the activated runners (OpenVINO's applied hint
    exists only once compiled)."""
    enc, dec = runner_variant(codec.encoder), runner_variant(codec.decoder)
    return f"encoder {enc}; decoder {dec}" if enc != dec else f"encoder and decoder {enc}"


@contextmanager
def cache_dir(path: Path | None) -> Iterator[None]:
    """``FSQDEPLOY_CACHE_DIR`` set to ``path`` (None: left as it is) while codecs are loaded: the
    tuning record is read when a codec is opened, so an empty directory gives the default graphs."""
    if path is None:
        yield
        return
    before = os.environ.get("FSQDEPLOY_CACHE_DIR")
    os.environ["FSQDEPLOY_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FSQDEPLOY_CACHE_DIR", None)
        else:
            os.environ["FSQDEPLOY_CACHE_DIR"] = before


def tune(art: Path, threads: int | None, retune: bool) -> dict[str, dict[str, Any]]:
    """This machine's tuning record per CPU runtime that can run here (cached, or measured now)."""
    from fsqdeploy.artifact import Manifest
    from fsqdeploy.backends import get_backend
    from fsqdeploy.backends.tuning import FAMILIES, tune_artifact

    manifest = Manifest.load(art, component="benchmark")
    records = {}
    for runtime in FAMILIES:
        if get_backend(runtime).unavailable_reason() is None:
            records[runtime] = tune_artifact(manifest, runtime, threads, force=retune)
    return records


def load_columns(art: Path, specs: list[BackendSpec], threads: int | None, empty_cache: Path,
                 tuned: dict[str, dict[str, Any]]) -> tuple[list[Column], str | None]:
    """Every codec to time, and the backend "auto" picked (None: auto could not load)."""
    from fsqdeploy.backends.tuning import FAMILIES
    from fsqdeploy.runtime import Codec

    columns = []

    def add(spec: BackendSpec, mode: str) -> None:
        try:
            codec = Codec.load(art, spec.backend, precision=spec.precision, threads=threads)
            codec.encoder.activate()  # what OpenVINO applied is known once compiled
            codec.decoder.activate()
        except Exception as e:  # noqa: BLE001 - a backend that cannot run here is left out, with why
            print(f"{spec.label} {mode}: not timed ({type(e).__name__}: {str(e).splitlines()[0]})", file=sys.stderr)
            return
        columns.append(Column(spec, mode, codec))

    with cache_dir(empty_cache):
        for spec in specs:
            add(spec, "default")
    for spec in specs:
        if spec.backend in FAMILIES and spec.precision == "fp32" and spec.backend in tuned:
            add(spec, "tuned")
    auto = None
    try:
        with cache_dir(empty_cache):
            probe = Codec.load(art, "auto", threads=threads)
        auto = probe.backend
        probe.close()
    except Exception as e:  # noqa: BLE001
        print(f"auto: not loaded ({type(e).__name__}: {str(e).splitlines()[0]})", file=sys.stderr)
    return columns, auto


def time_columns(columns: list[Column], batch_sizes: list[int], *, blocks: int, block_calls: int, warmup: int
                 ) -> tuple[dict[tuple[str, int, str], list[float]], dict[str, float]]:
    """(column key, batch, stage) -> one time per round (the median of a block of calls, in ms), with
    every codec's blocks of a round run back to back in an order that rotates from round to round;
    and each column's share of indices equal to PyTorch's on the timed images."""
    from fsqdeploy.data import load_images
    from fsqdeploy.images import images_to_float

    if not columns:
        raise SystemExit("backends: no backend could be loaded (the reasons are above)")
    first = columns[0].codec
    images = images_to_float(load_images("sample", first.image_size).test[:256])
    indices = first.encode(images)
    reference = next((c.codec for c in columns if c.spec.backend == "torch"), first).encode(images)
    equal = {c.key: float(np.mean(c.codec.encode(images) == reference)) for c in columns}
    times: dict[tuple[str, int, str], list[float]] = {}
    for batch in batch_sizes:
        calls = {c.key: stage_calls(c.codec, cycle(images, batch), cycle(indices, batch)) for c in columns}
        rounds = alternating_blocks(calls, STAGES, blocks=blocks, block_calls=block_calls, warmup=warmup)
        times.update({(key, batch, stage): ms for (key, stage), ms in rounds.items()})
    return times, equal


def side_by_side(times: dict[tuple[str, int, str], list[float]], columns: list[Column], batch_sizes: list[int],
                 auto: str | None = None) -> str:
    """Per batch and stage, one line per backend: its default and tuned cells side by side, each the
    median block time in ms and the median speed-up over PyTorch eager in the same round with its
    spread over rounds (min-max). "auto" repeats the row of the backend it picked."""
    labels = list(dict.fromkeys(c.spec.label for c in columns))
    rows = [(label, label) for label in labels]
    if auto is not None and auto in labels:
        rows.append((f"auto ({auto})", auto))
    torch_key = next((c.key for c in columns if c.spec.backend == "torch"), None)
    width, name_width = 31, max(len(r[0]) for r in rows) + 2

    def cell(key: str, batch: int, stage: str) -> str:
        own = times.get((key, batch, stage))
        if own is None:
            return "-"
        text = f"{statistics.median(own):8.3f}"
        base = times.get((torch_key, batch, stage)) if torch_key else None
        if base:
            ratio, low, high = round_ratios(base, own)
            text += f" {ratio:5.2f}x ({low:.2f}-{high:.2f})"
        return text

    lines = [f"{'batch':>5}  {'stage':<9}  {'backend':<{name_width}}{'default':>{width}}{'tuned':>{width}}",
             f"{'':>5}  {'':<9}  {'':<{name_width}}" + f"{'ms  x torch (min-max)':>{width}}" * 2]
    for batch in batch_sizes:
        for stage in STAGES:
            for name, label in rows:
                lines.append(f"{batch:>5}  {stage:<9}  {name:<{name_width}}"
                             f"{cell(f'{label} default', batch, stage):>{width}}"
                             f"{cell(f'{label} tuned', batch, stage):>{width}}")
    return "\n".join(lines)


def variant_lines(columns: list[Column], equal: dict[str, float], tuned: dict[str, dict[str, Any]]) -> str:
    """What ran in each column, with its indices' agreement with PyTorch on the timed images, and
    where each tuning record came from."""
    lines = [f"{c.key:<24} indices = torch {100 * equal[c.key]:8.4f}%  {codec_variant(c.codec)}" for c in columns]
    for runtime, record in tuned.items():
        how = "from this machine's cache" if record.get("cached") else "measured now"
        pick = "; ".join(f"{g} exported graph {record['choice'][g]['untuned_ms']:.2f} ms -> "
                         f"{'+'.join(record['choice'][g]['rewrites']) or 'none'} {record['choice'][g]['ms']:.2f} ms"
                         for g in ("encoder", "decoder"))
        lines.append(f"tuning record {runtime}: {how} (took {record['seconds']:.1f} s); {pick} "
                     f"at the tuner's input {record['inputs']}")
    return "\n".join(lines)


def fidelity_lines(report: dict[str, Any], times: dict[tuple[str, int, str], list[float]], largest: int) -> str:
    """Each backend's agreement with PyTorch, BF16's next to its speed-up over OpenVINO FP32."""
    lines = []
    for f in report["fidelity"]:
        label = BackendSpec(f["backend"], f["precision"]).label
        line = (f"{label:<14} indices equal {100 * f['index_agreement']:8.4f}%  images with a flip "
                f"{100 * f['flipped_image_share']:6.2f}%  PSNR vs torch "
                f"{min(f['roundtrip_psnr_vs_reference'], 100):6.2f} dB  decoder max err {f['max_abs_error']:.1e}")
        base = times.get(("openvino default", largest, "roundtrip"))
        own = times.get((f"{label} default", largest, "roundtrip"))
        if f["precision"] != "fp32" and base and own:
            speed = round_ratios(base, own)[0]
            line += f"  | roundtrip at batch {largest}: {speed:.2f}x OpenVINO FP32"
        lines.append(line)
    for k in report["skipped"]:
        lines.append(f"{BackendSpec(k['backend'], k['precision']).label:<14} skipped: {k['reason']}")
    return "\n".join(lines)


def int8_specs(art: Path) -> list[BackendSpec]:
    """ONNX Runtime INT8 when ART holds calibrated graphs."""
    from fsqdeploy.artifact import read_manifest

    return [BackendSpec("onnxruntime", "int8")] if read_manifest(art).get("int8") else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("art", nargs="?", type=Path, help="artifact directory (default: export one)")
    parser.add_argument("--run", type=Path, help="training run to export when no ART is given")
    parser.add_argument("--batch-sizes", default="1,64,256")
    parser.add_argument("--blocks", type=int, default=7, help="rounds of alternating blocks per measurement")
    parser.add_argument("--block-calls", type=int, default=10, help="calls per block")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--images", type=int, default=512, help="fidelity set size")
    parser.add_argument("--retune", action="store_true", help="measure the tuned variants again, ignoring the cache")
    args = parser.parse_args()

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    # bench gives the fidelity rows and the machine; its own one-stretch latency is not used here
    settings = BenchSettings(backends=BACKENDS, batch_sizes=[1], data=None, images=args.images, warmup=0, iters=1,
                             threads=args.threads, gates=Gates(min_index_agreement_reduced=0.0,
                                                               min_psnr_vs_reference=0.0),
                             baselines=False, tile_size=0)
    with tempfile.TemporaryDirectory(prefix="fsq-backends-") as tmp:
        art = args.art or quick_artifact(Path(tmp), args.run)
        empty_cache = Path(tmp) / "no-tuning"
        empty_cache.mkdir()
        with cache_dir(empty_cache):  # bench's fidelity rows are the default graphs'
            report = run_bench(art, settings, progress=lambda msg: print(msg, file=sys.stderr))
        runnable = [s for s in BACKENDS if any((k["backend"], k["precision"]) == (s.backend, s.precision)
                                               for k in report["fidelity"])]
        tuned = tune(art, args.threads, args.retune)
        columns, auto = load_columns(art, runnable + int8_specs(art), args.threads, empty_cache, tuned)
        try:
            times, equal = time_columns(columns, batch_sizes, blocks=args.blocks, block_calls=args.block_calls,
                                        warmup=args.warmup)
            variants = variant_lines(columns, equal, tuned)
        finally:
            for c in columns:
                c.codec.close()
    m, a = report["machine"], report["artifact"]
    v = m["versions"]
    print(f"{m['cpu']} ({', '.join(m['cpu_features']) or 'no AVX2'}), {m['threads']} threads; torch {v['torch']}, "
          f"onnxruntime {v['onnxruntime']}, openvino {v['openvino']}")
    print(f"model {a['model_id'][:12]}: {a['image_size']} px, {a['code_width']} indices, levels "
          f"{sorted(set(a['levels']))}, {a['bits_per_image']} bits/image; {args.blocks} rounds of "
          f"{args.block_calls}-call blocks per measurement after {args.warmup} warm-up calls, wall clock")
    print()
    print(side_by_side(times, columns, batch_sizes, auto))
    print()
    print(variants)
    print()
    print(fidelity_lines(report, times, max(batch_sizes)))


if __name__ == "__main__":
    from fsqdeploy.errors import FSQDeployError

    try:
        main()
    except FSQDeployError as e:  # a bad artifact or input: its one line, as heldout_vs_jpeg.py does
        raise SystemExit(str(e)) from None
