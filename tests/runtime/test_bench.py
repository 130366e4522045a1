"""fsqdeploy bench: the report's schema, agreement of every FP32 runner with PyTorch, gates, skipped
backends (including ones that fail while running), the GPU rows' clocks and comparisons (faked where
this machine has no GPU), user errors, and the JPEG/WebP byte-budget search. Speed is never asserted.
Where a result depends on the machine (a GPU, BF16, installed runtimes), the test asks the machine."""

import json

import numpy as np
import pytest
import torch

from fsqdeploy import FSQDeployError
from fsqdeploy.backends import REGISTRY
from fsqdeploy.compare import Run
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.runtime import bench
from fsqdeploy.runtime.bench import BackendSpec, Gates, Reference, baselines, machine, report, timing
from fsqdeploy.runtime.bitstream import FsqHeader, bits_per_patch, file_length, write_fsq
from fsqdeploy.runtime.codec import Codec

CPU_FP32 = ["torch", "onnxruntime", "openvino"]
GPU_BACKENDS = [name for name, b in REGISTRY.items() if b.gpu]
FAST = ["--warmup", "1", "--iters", "2", "--batch-sizes", "1,3", "--images", "24", "--data", "sample"]
CUDA = torch.cuda.is_available()


def unavailable(backend: str) -> str | None:
    return REGISTRY[backend].unavailable_reason()


def needs(backend: str) -> None:
    reason = unavailable(backend)
    if reason:
        pytest.skip(reason)


def has_bf16() -> bool:
    from fsqdeploy.backends.openvino import openvino_supports_bf16

    return unavailable("openvino") is None and openvino_supports_bf16()


def needs_bf16() -> None:
    needs("openvino")
    if not has_bf16():
        pytest.skip("this CPU has no BF16 support")


# -- the report ----------------------------------------------------------------------------------


def test_report_schema(cli, art32, tmp_path):
    needs("openvino")
    bf16 = has_bf16()  # where the CPU has none, openvino:bf16 is a skipped row and the rest still holds
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    code, stdout, err = cli(
        "bench", art32.art, *FAST,
        "--backends", "torch,onnxruntime,openvino,openvino:bf16,onnxruntime-cuda,tensorrt:fp16",
        "--min-index-agreement-reduced", "0", "--min-psnr-vs-reference", "0",  # random weights: bf16 may flip
        "--tile-size", "64", "--tile-images", "2", "--json", out, "--plot", plot)
    assert code == 0, err
    assert "latency" in stdout and "fidelity" in stdout and "all gates passed" in stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads(out.read_text())

    assert (r["schema"], r["version"]) == ("fsqdeploy-bench", 4)  # 4: photo latency rows (test_bench_photos.py)
    assert list(r) == ["schema", "version", "artifact", "machine", "settings", "results", "fidelity", "skipped",
                       "baselines", "gates"]
    a = r["artifact"]
    levels = art32.model.levels
    assert a["model_id"] and a["levels"] == levels and a["image_size"] == 32 and a["code_width"] == 16
    assert a["bits_per_image"] == bits_per_patch(levels) == 48 and a["bits_per_pixel"] == 48 / 1024
    m = r["machine"]
    assert isinstance(m["cpu"], str) and m["cores"] >= 1 and m["threads"] >= 1
    assert (m["gpu"] is None) == (not CUDA) and (not CUDA or isinstance(m["gpu"]["name"], str))
    assert {"fsqdeploy", "torch", "onnxruntime", "openvino", "tensorrt", "numpy"} <= set(m["versions"])
    s = r["settings"]
    assert s["batch_sizes"] == [1, 3] and s["iters"] == 2 and s["images"] == 24 and s["data"] == "sample"
    assert s["reference"] == ("torch:cuda" if CUDA else "torch")

    # What runs depends on the machine: torch:cuda where PyTorch sees a GPU, BF16 where the CPU has
    # it, the CUDA provider where onnxruntime-gpu loads it; art32 has no engines, so tensorrt never runs.
    ran = ([("torch", "fp32", "cuda")] if CUDA else []) + [
        ("torch", "fp32", "cpu"), ("onnxruntime", "fp32", "cpu"), ("openvino", "fp32", "cpu")]
    ran += [("openvino", "bf16", "cpu")] if bf16 else []
    ran += [("onnxruntime-cuda", "fp32", "cuda")] if unavailable("onnxruntime-cuda") is None else []
    assert s["backends"][: 2 if CUDA else 1] == (["torch:cuda", "torch"] if CUDA else ["torch"])
    assert len(r["results"]) == len(ran) * 2 * 3
    for row in r["results"]:
        assert (row["backend"], row["precision"], row["device"]) in ran
        assert row["stage"] in ("encode", "decode", "roundtrip") and row["batch_size"] in (1, 3)
        assert row["timing"] == ("cuda-events" if row["device"] == "cuda" else "wall") and row["samples"] == 2
        lat = row["latency_ms"]
        assert set(lat) == {"p50", "p90", "p99", "mean"} and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert row["throughput_ips"] == pytest.approx(row["batch_size"] / lat["mean"] * 1e3)

    assert [(f["backend"], f["precision"], f["device"]) for f in r["fidelity"]] == ran
    for f in r["fidelity"]:
        assert f["images"] == 24 and f["bits_per_image"] == 48 and f["gate"]["passed"]
        for key in ("index_agreement", "flipped_image_share", "psnr_vs_reference", "max_abs_error",
                    "roundtrip_psnr_vs_reference", "roundtrip_max_abs_error", "psnr_vs_input", "ssim_vs_input"):
            assert isinstance(f[key], float), key
        assert isinstance(f["flipped_images"], int) and isinstance(f["flipped_indices"], int)
        if f["precision"] == "fp32":
            assert f["index_agreement"] == 1.0 and f["flipped_image_share"] == 0.0 and f["flipped_images"] == 0
            assert f["max_abs_error"] < 1e-5 and f["roundtrip_max_abs_error"] < 1e-5
    assert r["fidelity"][0]["reference"] and r["fidelity"][0]["roundtrip_max_abs_error"] == 0.0
    assert [f["reference"] for f in r["fidelity"]].count(True) == 1
    # every backend decodes to the same picture as the reference, to within its precision
    assert len({round(f["psnr_vs_input"], 1) for f in r["fidelity"]}) == 1

    skipped = {(k["backend"], k["precision"]): k["reason"] for k in r["skipped"]}
    assert set(skipped) | {(f["backend"], f["precision"]) for f in r["fidelity"]} == {
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"),
        ("onnxruntime-cuda", "fp32"), ("tensorrt", "fp16")}
    if unavailable("tensorrt"):
        assert "TensorRT" in skipped[("tensorrt", "fp16")]
    else:
        assert "encoder.fp16.plan" in skipped[("tensorrt", "fp16")]
    if unavailable("onnxruntime-cuda"):
        assert "CUDAExecutionProvider" in skipped[("onnxruntime-cuda", "fp32")]

    by = {(b["codec"], b["scope"], b["mode"]): b for b in r["baselines"]}
    assert by[("fsq", "patch", "codec")]["bytes_mean"] == 6 and by[("fsq", "tile", "codec")]["images"] == 2
    tile = by[("fsq", "tile", "codec")]
    assert tile["patches_per_tile"] == 4 and tile["file_bytes"] == file_length(levels, 4) == 24 + 114 + 2 * 16
    for codec in ("jpeg", "webp"):
        at_budget = by[(codec, "patch", "equal_bytes")]
        assert at_budget["budget_bytes"] == 6 and at_budget["images_within_budget"] == 0
        assert at_budget["note"].startswith(f"n/a for 24 of 24 images: smallest {codec.upper()} is")
        q1 = by[(codec, "patch", "min_quality")]
        assert q1["quality"] == 1 and q1["bits_per_pixel"] > 48 / 1024 and q1["psnr_vs_input"] > 15
    # a patch model's whole photos too: the sample's held-out photos, its .fsq files (layout 0: patches)
    photos = [b for b in r["baselines"] if b["scope"] == "photo" and b["mode"] == "codec"]
    assert [b["image"] for b in photos] == ["coffee", "rocket", "chelsea", None] == [*s["photos"]["names"], None]
    assert all(b["layout"] == "patches" and b["file_bytes"] > b["payload_bytes"] > 0 for b in photos[:-1])
    assert r["gates"] == {"passed": True, "failures": []}


# -- every FP32 runner equals PyTorch ---------------------------------------------------------------


@pytest.fixture(scope="module")
def references(art32):
    """PyTorch's indices and images for 64 real and 64 uniformly random images."""
    images = {"real": images_to_float(load_images("sample", 32).test[:64]),
              "random": np.random.default_rng(0).random((64, 3, 32, 32), dtype=np.float32)}
    with Codec.load(art32.art, "torch") as reference:
        return {kind: bench.reference_outputs(reference, x) for kind, x in images.items()}


@pytest.mark.parametrize("backend", CPU_FP32)
@pytest.mark.parametrize("kind", ["random", "real"])
def test_fp32_runners_agree_with_pytorch(art32, references, backend, kind):
    needs(backend)
    ref = references[kind]
    assert np.array_equal(ref.indices, art32.model.encode(ref.images).numpy())  # the reference is the model
    with Codec.load(art32.art, backend) as codec:
        row = bench.measure_fidelity(codec, BackendSpec(backend), ref)
    assert row["index_agreement"] == 1.0 and row["flipped_image_share"] == 0.0
    assert row["roundtrip_max_abs_error"] < 1e-5 and row["max_abs_error"] < 1e-5
    assert row["bits_per_image"] == bits_per_patch(art32.model.levels) == 48
    assert bench.check_gate(row, Gates())["passed"]


def test_fidelity_numbers():
    """Three flipped indices in two images, a decoder off by 0.01 everywhere: the row says so."""
    rng = np.random.default_rng(1)
    images = rng.random((10, 3, 32, 32), dtype=np.float32) * 0.5
    indices = rng.integers(0, 8, (10, 4)).astype(np.int32)
    ref = Reference(images, indices, images.copy())
    flipped = indices.copy()
    flipped[[2, 2, 7], [0, 3, 1]] = (flipped[[2, 2, 7], [0, 3, 1]] + 1) % 8
    decoded = images + np.float32(0.01)
    row = bench.fidelity.compare_to_reference(BackendSpec("openvino", "bf16"), ref, Run(flipped, decoded, decoded),
                                              [8] * 4)
    assert row["index_agreement"] == pytest.approx(1 - 3 / 40) and row["flipped_image_share"] == pytest.approx(0.2)
    assert row["flipped_images"] == 2 and row["flipped_indices"] == 3
    assert row["roundtrip_psnr_vs_reference"] == pytest.approx(40.0, abs=1e-3)  # MSE 1e-4
    assert row["max_abs_error"] == pytest.approx(0.01, abs=1e-6)
    assert row["bits_per_image"] == 12 and row["bits_per_pixel"] == 12 / 1024 and not row["reference"]


@pytest.mark.parametrize(
    "precision,changes,match",
    [
        ("fp32", {"index_agreement": 0.9999}, "--min-index-agreement"),
        ("fp32", {"max_abs_error": 1e-3}, "--max-decoder-error"),
        ("bf16", {"index_agreement": 0.98}, "--min-index-agreement-reduced"),
        ("bf16", {"roundtrip_psnr_vs_reference": 39.0}, "--min-psnr-vs-reference"),
    ],
)
def test_gates(precision, changes, match):
    row = {"backend": "x", "precision": precision, "reference": False, "index_agreement": 1.0,
           "max_abs_error": 0.0, "roundtrip_psnr_vs_reference": 100.0}
    assert bench.check_gate(row, Gates()) == {"passed": True, "reasons": []}
    gate = bench.check_gate({**row, **changes}, Gates())
    assert not gate["passed"] and len(gate["reasons"]) == 1 and match in gate["reasons"][0]


def test_fp32_by_name_only_is_gated_as_reduced():
    """The TensorRT provider computes "fp32" in TF32 (the registry says so): its row says why and is
    held to the reduced-precision gates, not to exact FP32."""
    spec = BackendSpec("onnxruntime-trt")
    assert spec.reduced and "TF32" in spec.reduced_reason and not BackendSpec("onnxruntime").reduced
    row = {"backend": spec.backend, "precision": "fp32", "reference": False, "reduced_precision": spec.reduced_reason,
           "index_agreement": 0.995, "max_abs_error": 1e-3, "roundtrip_psnr_vs_reference": 60.0}
    assert bench.check_gate(row, Gates())["passed"]
    assert not bench.check_gate({**row, "reduced_precision": None}, Gates())["passed"]


def test_failed_gate_exits_1(cli, art32, tmp_path):
    needs_bf16()
    out = tmp_path / "bench.json"
    code, stdout, err = cli("bench", art32.art, *FAST, "--backends", "torch,onnxruntime,openvino:bf16",
                                  "--min-psnr-vs-reference", "1000", "--no-baselines", "--json", out)
    assert code == 1, err
    assert "gate failed: openvino bf16: PSNR vs reference" in stdout and "Traceback" not in err
    gates = json.loads(out.read_text())["gates"]  # the report is written before the exit
    assert not gates["passed"] and len(gates["failures"]) == 1 and "1000 dB" in gates["failures"][0]


# -- skipped backends ------------------------------------------------------------------------------


def test_default_backends_skip_what_cannot_run(cli, art32, tmp_path):
    if all(unavailable(b) is None for b in GPU_BACKENDS):
        pytest.skip("every backend can run here")
    out = tmp_path / "bench.json"
    code, stdout, err = cli("bench", art32.art, *FAST, "--batch-sizes", "2", "--no-baselines",
                                  "--json", out)
    assert code == 0, err
    r = json.loads(out.read_text())
    ran = {f["backend"] for f in r["fidelity"]}
    skipped = {k["backend"]: k["reason"] for k in r["skipped"]}
    assert ran | set(skipped) == set(REGISTRY) and not ran & set(skipped)
    assert {b for b in CPU_FP32 if unavailable(b) is None} <= ran
    for backend in GPU_BACKENDS:
        if unavailable(backend):
            assert skipped[backend] == unavailable(backend)
    assert "skipped:" in stdout and "Traceback" not in stdout + err


def test_unavailable_precisions_are_skipped_rows(cli, art32, tmp_path):
    out = tmp_path / "bench.json"
    code, _, err = cli("bench", art32.art, *FAST, "--backends", "onnxruntime,onnxruntime:int8,tensorrt:int8,"
                             "onnxruntime-trt:fp16,torch:cuda", "--no-baselines", "--json", out)
    assert code == 0, err
    skipped = {(k["backend"], k["precision"]): k["reason"] for k in json.loads(out.read_text())["skipped"]}
    assert "int8" in skipped[("onnxruntime", "int8")]  # no int8 graphs until fsqdeploy calibrate
    assert CUDA or "CUDA" in skipped[("torch", "fp32")]  # torch:cuda where PyTorch has no GPU
    assert ("tensorrt", "int8") in skipped  # nor int8 engines, on any machine


# -- user errors: one line, exit 2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,match",
    [
        (["--backends", "tflite"], "unknown backend 'tflite'"),
        (["--backends", "openvino:fp8"], "unknown precision 'fp8'"),
        (["--backends", "torch,torch"], "torch is listed twice"),
        (["--backends", "onnxruntime:cuda"], "only torch takes a device"),
        (["--backends", ","], "--backends is empty"),
        (["--batch-sizes", "0,x"], "not a comma-separated list of integers"),
        (["--batch-sizes", "0"], "batch size 0 is outside"),
        (["--min-index-agreement", "1.5"], "must lie in [0, 1]"),
        (["--min-index-agreement-reduced", "-0.1"], "must lie in [0, 1]"),
        (["--iters", "3", "--seconds", "1"], "--iters or --seconds, not both"),
        (["--images", "0"], "--images must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--data", "folder:/nonexistent/bench"], "does not exist"),
        (["--json", "."], "is a directory"),
        (["--photo-size", "768"], "--photo-size must be WxH (e.g. 768x512) or 0 (off), got '768'"),
        (["--photo-size", "0x512"], "--photo-size must be WxH"),
        (["--photo-size", "axb"], "--photo-size must be WxH"),
    ],
)
def test_bad_input_is_one_line(cli, one_line_error, art32, args, match):
    code, _, err = cli("bench", art32.art, *args)
    one_line_error(code, err, match)


def test_missing_artifact_is_one_line(cli, one_line_error, tmp_path):
    code, _, err = cli("bench", tmp_path / "nothing", "--iters", "1")
    one_line_error(code, err, "does not exist")


def test_artifact_without_reference_is_one_line(cli, one_line_error, art32, tmp_path):
    import shutil

    from fsqdeploy.artifact import read_manifest, write_manifest

    art = tmp_path / "art"
    shutil.copytree(art32.art, art)
    shutil.rmtree(art / "checkpoint")
    manifest = read_manifest(art)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("checkpoint/")}
    write_manifest(art, manifest)
    code, _, err = cli("bench", art, "--iters", "1")
    one_line_error(code, err, "PyTorch reference")


# -- timing and baselines ----------------------------------------------------------------------------


class FixedClock:
    name = "fixed"

    def __call__(self, fn):
        fn()
        return 0.002


def test_measure_counts_and_clock_is_pluggable():
    calls = []
    times = timing.measure(lambda: calls.append(1), FixedClock(), warmup=2, iters=5)
    assert len(calls) == 7 and times == [0.002] * 5
    assert len(timing.measure(lambda: None, timing.WallClock(), warmup=0, seconds=1e-6)) == timing.MIN_ITERS
    stats = timing.latency_stats(times, batch_size=64)
    assert stats["latency_ms"] == pytest.approx({"p50": 2.0, "p90": 2.0, "p99": 2.0, "mean": 2.0})
    assert stats["throughput_ips"] == pytest.approx(32_000) and stats["samples"] == 5


def test_latency_rows_carry_the_clock(art32):
    with Codec.load(art32.art, "onnxruntime") as codec:
        x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
        settings = bench.BenchSettings(batch_sizes=[1, 5], warmup=0, iters=3)
        rows = bench.measure_latency(codec, BackendSpec("onnxruntime"), x, codec.encode(x), settings, FixedClock())
    assert [(r["batch_size"], r["stage"]) for r in rows] == [(b, s) for b in (1, 5) for s in bench.STAGES]
    assert all(r["timing"] == "fixed" and r["latency_ms"]["p50"] == pytest.approx(2.0) for r in rows)
    assert all(r["io"] == "host" and r["device"] == "cpu" for r in rows)  # CPU runners take no device tensors
    assert not codec.encoder.takes_device_tensors and not codec.decoder.takes_device_tensors


def test_device_tensors_are_a_declared_capability(monkeypatch):
    from types import SimpleNamespace

    from fsqdeploy.backends.tensorrt import TensorRTRunner

    assert TensorRTRunner.takes_device_tensors
    runner = SimpleNamespace(takes_device_tensors=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the runners say yes, torch has no CUDA
    x = np.zeros((1, 3, 32, 32), np.float32)
    assert timing.device_stage_calls(SimpleNamespace(encoder=runner, decoder=runner), x, x) is None


@pytest.mark.parametrize("cuda", [True, False])
def test_gpu_rows_get_cuda_events_only_where_torch_has_cuda(cuda):
    """onnxruntime-gpu beside a CPU build of PyTorch: the GPU rows fall back to the wall clock."""
    gpu = timing.CudaEventClock if cuda else timing.WallClock
    for backend in GPU_BACKENDS:
        assert isinstance(timing.clock_for(BackendSpec(backend), cuda=cuda), gpu)
    assert isinstance(timing.clock_for(BackendSpec("torch", device="cuda"), cuda=cuda), gpu)
    for backend in ("torch", "onnxruntime", "openvino"):
        assert isinstance(timing.clock_for(BackendSpec(backend), cuda=cuda), timing.WallClock)


def test_device_rows_are_labelled_and_compared_with_torch(capsys):
    from rich.console import Console

    from fsqdeploy.runtime.bench.report import print_report, speedups

    def row(backend, io, p50, timing="wall"):
        return {"backend": backend, "precision": "fp16" if backend == "tensorrt" else "fp32", "batch_size": 64,
                "stage": "encode", "timing": timing, "io": io, "samples": 5, "throughput_ips": 64 / p50 * 1e3,
                "latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50}}

    results = [row("torch", "host", 8.0), row("tensorrt", "host", 2.0, "cuda-events"),
               row("tensorrt", "device", 0.5, "cuda-events")]
    ratio = speedups(results)
    assert ratio[("tensorrt", "fp16", "cuda", "patch", 64, "encode", "host")] == 4.0
    assert ratio[("tensorrt", "fp16", "cuda", "patch", 64, "encode", "device")] == 16.0
    report = {"machine": {"gpu": {"name": "A GPU"}, "cpu": "cpu", "usable_cores": 2, "cores": 2},
              "settings": {"iters": 5, "warmup": 1, "threads": 2, "images": 8, "data": "sample"},
              "artifact": {"path": "art", "model_id": "0" * 16, "image_size": 32, "code_width": 16,
                           "bits_per_image": 48, "bits_per_pixel": 0.047},
              "results": results, "skipped": [], "fidelity": [], "baselines": [],
              "gates": {"passed": True, "failures": []}}
    print_report(report, Console(width=200, force_terminal=False))
    out = capsys.readouterr().out
    assert "CUDA events" in out and "tensorrt:fp16 (device io)" in out and "16.00x" in out

    # With torch:cuda in the report, GPU rows are compared with it and CPU rows with CPU torch.
    results += [{**row("torch", "host", 1.0, "cuda-events"), "device": "cuda"}, row("onnxruntime", "host", 4.0)]
    ratio = speedups(results)
    assert ratio[("tensorrt", "fp16", "cuda", "patch", 64, "encode", "host")] == 0.5
    assert ratio[("tensorrt", "fp16", "cuda", "patch", 64, "encode", "device")] == 2.0
    assert ratio[("onnxruntime", "fp32", "cpu", "patch", 64, "encode", "host")] == 2.0
    assert ratio[("torch", "fp32", "cuda", "patch", 64, "encode", "host")] == 1.0
    print_report({**report, "results": results}, Console(width=200, force_terminal=False))
    out = capsys.readouterr().out
    assert "torch:cuda" in out and "GPU rows against torch:cuda" in out


def test_best_quality_is_the_largest_file_within_budget():
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut()[100:164, 200:264])
    assert [b.name for b in baselines.BASELINES] == ["jpeg", "webp"]
    for codec in baselines.BASELINES:
        budget = len(codec.encode(image, 40)) + 3
        quality, data = codec.best_quality_within(image, budget)
        assert len(data) <= budget and quality >= 40
        assert quality == codec.max_quality or len(codec.encode(image, quality + 1)) > budget
        assert codec.best_quality_within(image, 10) is None  # even quality 1 has headers


def test_a_grey_image_is_saved_as_one_channel_by_the_baselines():
    """A fair baseline for a grey photo is its greyscale file: JPEG then carries no chroma."""
    import io

    import skimage.data
    from PIL import Image

    grey = np.repeat(skimage.data.camera()[100:196, 200:328, None], 3, axis=2)
    jpeg = next(b for b in baselines.BASELINES if b.name == "jpeg")
    data = jpeg.encode(grey, 30)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L"
    as_rgb = io.BytesIO()
    Image.fromarray(grey).save(as_rgb, format="JPEG", quality=30, **jpeg.options)
    assert len(data) < len(as_rgb.getvalue())
    assert np.ptp(jpeg.decode(data), axis=2).max() == 0  # decoded as grey RGB, what the metrics compare
    colour = skimage.data.astronaut()[:96, :128]
    with Image.open(io.BytesIO(jpeg.encode(colour, 30))) as img:
        assert img.mode == "RGB"


def test_baselines_at_a_generous_budget():
    images = images_to_float(load_images("sample", 32).test[:6])
    rows = baselines.baseline_rows(images, budget_bytes=4000, scope="patch")
    fit = {r["codec"]: r for r in rows if r["mode"] == "equal_bytes"}
    for r in fit.values():
        assert r["images_within_budget"] == 6 and r["note"] is None and r["bytes_mean"] <= 4000
        assert r["quality_mean"] > 50 and r["psnr_vs_input"] > 30


@pytest.mark.parametrize(
    "text,expected",
    [
        ("torch", [BackendSpec("torch")]),
        (" onnxruntime , openvino:bf16", [BackendSpec("onnxruntime"), BackendSpec("openvino", "bf16")]),
        ("tensorrt:int8,onnxruntime-trt:fp16",
         [BackendSpec("tensorrt", "int8"), BackendSpec("onnxruntime-trt", "fp16")]),
        ("torch,torch:cuda", [BackendSpec("torch"), BackendSpec("torch", device="cuda")]),
    ],
)
def test_parse_backends(text, expected):
    assert bench.parse_backends(text) == expected
    assert [s.label for s in expected][-1] == text.split(",")[-1].strip().removesuffix(":fp32")


def test_settings_are_checked_before_loading(tmp_path):
    with pytest.raises(FSQDeployError, match="multiple of 16"):
        bench.run_bench(tmp_path, bench.BenchSettings(tile_size=100))


def test_the_payload_and_file_bytes_are_the_bitstreams():
    levels = [8, 5, 5, 5] * 4
    indices = np.zeros((6, len(levels)), np.int32)
    header = FsqHeader.for_patches("0" * 64, 64, 96, 32, levels)  # what a paper codec writes
    assert len(write_fsq(header, indices)) == file_length(levels, 6)
    assert bench.fidelity.rate(levels, 32)["bits_per_image"] == bits_per_patch(levels)


# -- a backend that fails here, and a GPU machine (faked) -----------------------------------------


QUICK = {"batch_sizes": [2], "warmup": 0, "iters": 1, "images": 8, "data": "sample", "baselines": False}


@pytest.mark.parametrize("when", ["load", "run"])
def test_a_runtime_that_fails_is_a_skipped_row(art32, monkeypatch, when):
    """A third-party runtime raising anything (a missing CUDA library at load, a CUDA error while
    timing) becomes a skipped row with its reason; the other rows and the report stand."""
    load, closed = Codec.load, []

    def failing_load(art, backend, **kwargs):
        if backend == "onnxruntime" and when == "load":
            raise OSError("libcudnn.so.9: cannot open shared object file\nmore lines")
        codec = load(art, backend, **kwargs)
        if backend == "onnxruntime":
            def infer(feed):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            codec.encoder.infer = infer
            close = codec.close
            codec.close = lambda: (closed.append(backend), close())
        return codec

    monkeypatch.setattr(Codec, "load", failing_load)
    settings = bench.BenchSettings(backends=[BackendSpec("torch"), BackendSpec("onnxruntime")], **QUICK)
    r = bench.run_bench(art32.art, settings)
    reason = {"load": "failed here: OSError: libcudnn.so.9: cannot open shared object file",
              "run": "failed here: RuntimeError: CUDA error: an illegal memory access was encountered"}[when]
    assert r["skipped"] == [{"backend": "onnxruntime", "precision": "fp32", "device": "cpu", "reason": reason}]
    assert {row["backend"] for row in r["results"]} == {"torch"} and [f["backend"] for f in r["fidelity"]] == ["torch"]
    assert r["gates"]["passed"] and closed == (["onnxruntime"] if when == "run" else [])


def test_a_gpu_machine_gets_a_torch_cuda_reference_and_row(art32, monkeypatch, capsys):
    """Where PyTorch sees a GPU (faked: CUDA calls run on the CPU), the reference is torch:cuda, FP32
    without TF32; it is timed with CUDA events and the CPU torch row stays, compared with it."""
    from rich.console import Console

    load, loaded = Codec.load, []

    def load_on_cpu(art, backend, *, device="cpu", **kwargs):
        loaded.append((backend, device, torch.backends.cudnn.allow_tf32))
        return load(art, backend, device="cpu", **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(machine, "gpu_info", lambda: {"name": "Fake GPU", "count": 1, "memory_gib": 1.0, "cuda": "12"})
    monkeypatch.setattr(timing.CudaEventClock, "__call__", timing.WallClock.__call__)
    monkeypatch.setattr(Codec, "load", load_on_cpu)
    tf32 = torch.backends.cudnn.allow_tf32
    settings = bench.BenchSettings(backends=[BackendSpec("torch"), BackendSpec("onnxruntime")], **QUICK)
    r = bench.run_bench(art32.art, settings)

    assert loaded == [("torch", "cuda", False), ("torch", "cpu", False), ("onnxruntime", "cpu", False)]
    assert torch.backends.cudnn.allow_tf32 == tf32  # restored
    assert r["settings"]["reference"] == "torch:cuda" and r["settings"]["backends"] == ["torch:cuda", "torch",
                                                                                         "onnxruntime"]
    assert r["machine"]["gpu"]["name"] == "Fake GPU"
    rows = [(f["backend"], f["device"], f["reference"]) for f in r["fidelity"]]
    assert rows == [("torch", "cuda", True), ("torch", "cpu", False), ("onnxruntime", "cpu", False)]
    clocks = {(row["backend"], row["device"]): row["timing"] for row in r["results"]}
    assert clocks == {("torch", "cuda"): "cuda-events", ("torch", "cpu"): "wall", ("onnxruntime", "cpu"): "wall"}
    assert r["gates"]["passed"]
    report.print_report(r, Console(width=200, force_terminal=False))
    out = capsys.readouterr().out
    assert "against torch:cuda" in out and "GPU rows against torch:cuda" in out
