"""The benchmark scripts' tables on the tiny test artifacts: their rows and columns, never timings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fsqdeploy.runtime.bench import BackendSpec

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_backends_prints_default_and_tuned_side_by_side(tmp_path, art32):
    backends = load_script("backends")
    empty = tmp_path / "empty"
    empty.mkdir()
    tuned = backends.tune(art32.art, None, retune=False)
    specs = [BackendSpec("torch"), BackendSpec("onnxruntime"), BackendSpec("openvino")]
    columns, auto = backends.load_columns(art32.art, specs, None, empty, tuned)
    try:
        times, equal = backends.time_columns(columns, [8], blocks=2, block_calls=1, warmup=0)
        variants = backends.variant_lines(columns, equal, tuned)
    finally:
        for c in columns:
            c.codec.close()
    keys = {c.key for c in columns}
    assert {"torch default", "onnxruntime default", "onnxruntime tuned"} <= keys
    assert "torch tuned" not in keys  # tuning leaves PyTorch alone: one column
    # the FP32 runtimes compute PyTorch's indices, default and tuned alike
    assert all(equal[k] == 1.0 for k in keys)
    table = backends.side_by_side(times, columns, [8], auto).splitlines()
    assert table[0].split()[-2:] == ["default", "tuned"]
    rows = [line.split() for line in table[2:]]
    assert len(rows) == 3 * (len({c.spec.label for c in columns}) + (auto is not None))
    ort = next(r for r in rows if r[1] == "encode" and r[2] == "onnxruntime")
    assert ort[3:] and ort[4].endswith("x") and ort[7].endswith("x")  # a default and a tuned ratio
    torch_row = next(r for r in rows if r[1] == "encode" and r[2] == "torch")
    assert torch_row[4] == "1.00x" and torch_row[-1] == "-"
    if auto is not None:
        assert any(r[2] == "auto" and r[3] == f"({auto})" for r in rows)
    assert "onnxruntime tuned" in variants and "tuned record" in variants
    assert "onnxruntime default" in variants and "defaults" in variants
    assert "tuning record onnxruntime:" in variants


def test_backends_default_column_ignores_the_tuning_record(tmp_path, art32):
    backends = load_script("backends")
    empty = tmp_path / "empty"
    empty.mkdir()
    tuned = backends.tune(art32.art, 1, retune=False)
    columns, _ = backends.load_columns(art32.art, [BackendSpec("onnxruntime")], 1, empty, tuned)
    try:
        by_mode = {c.mode: c.codec for c in columns}
        assert not by_mode["default"].decoder.tuned and by_mode["tuned"].decoder.tuned
    finally:
        for c in columns:
            c.codec.close()


def test_int8_profile_table_breaks_both_graphs_down_by_op_type(tmp_path, art_copy):
    from fsqdeploy.calibration.pipeline import calibrate_artifact

    int8 = load_script("int8")
    calibrate_artifact(art_copy, samples=64, eval_images=64)
    work = tmp_path / "work"
    work.mkdir()
    rows = int8.profile_rows(art_copy, art_copy, 8, 1, work)
    assert list(work.iterdir()) == []  # the profile files are deleted
    runtimes = {r["runtime"] for r in rows}
    assert "onnxruntime" in runtimes
    assert [(r["runtime"], r["graph"]) for r in rows if r["runtime"] == "onnxruntime"] == [
        ("onnxruntime", "encoder"), ("onnxruntime", "decoder")]
    ort_enc = rows[0]
    assert ort_enc["fp32_ms"] > 0 and ort_enc["int8_ms"] > 0
    # the INT8 graph runs integer kernels the FP32 graph does not have
    assert set(ort_enc["int8_ops"]) - set(ort_enc["fp32_ops"])
    assert not any(op.startswith(("QLinear", "QuantizeLinear", "MatMulInteger")) for op in ort_enc["fp32_ops"])
    table = int8.profile_table(rows).splitlines()
    assert table[0].split()[:5] == ["runtime", "graph", "FP32", "ms", "INT8"]
    assert sum(line.startswith("onnxruntime  both") for line in table) == 1
    assert len(table) == 1 + 2 * len(rows) + len(runtimes) + 1
    assert table[-1].startswith("onnxruntime INT8 vs the best FP32 (")



def test_entropy_coding_rows_cover_both_codings(conv_exported):
    """Each coding the prior has, on a timed photo and on every held-out photo: a payload that
    decodes back (the script asserts it) and sits just above its own tables' cross-entropy."""
    from fsqdeploy.runtime.codec import Codec

    script = load_script("entropy_coding")
    with Codec.load(conv_exported.art, "onnxruntime", threads=1) as codec:
        fast = script.speed(codec, codec.prior, (96, 64), repeats=1, tool=None)
        held_out = script.sizes(codec, codec.prior)
    assert [r["coding"] for r in fast] == [1, 2]
    assert all(r["python_total_ms"] > 0 and "cpp_total_ms" not in r for r in fast)
    assert len(held_out) == 3
    for row in held_out:
        assert row["coding"] in (0, 2)  # compress writes coding 2, or 0 where that is smaller
        for number in (1, 2):
            coded = row[f"coding{number}"]
            assert coded["ideal_bytes"] <= coded["payload_bytes"] <= coded["ideal_bytes"] + 4 * coded["lanes"] + 2


def test_train_throughput_prints_fp32_and_bfloat16_side_by_side(monkeypatch, capsys):
    script = load_script("train_throughput")
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--steps", "2", "--warmup", "0", "--batch-size", "2"])
    script.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("machine: ") and "conv, batch 2" in lines[0]
    assert lines[1].split(":")[0].strip() == "fp32" and lines[2].split(":")[0].strip() == "bf16 autocast"
    assert all("ms per step" in line for line in lines[1:3])
    assert lines[3].startswith("bf16 / fp32 step time: ") and "x; fsqdeploy train --amp " in lines[3]


def test_region_decode_prints_regions_beside_the_whole_decode(conv_exported, capsys):
    """Every region's time, its ratio to the whole decode and its pixels against the whole decode's crop."""
    script = load_script("region_decode")
    assert script.main([str(conv_exported.art), "--size", "200x120", "--regions", "16,64,500", "--repeats", "1",
                        "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "200x120 photo" in out and "whole image" in out and "entropy decode alone" in out
    for region in ("16x16 at 92,52", "64x64 at 68,28", "200x120 at 0,0"):  # a side past the image: all of it
        line = next(line for line in out.splitlines() if region in line)
        assert float(line.split("%")[0].split()[-1]) > 99.9 and "the rest" in line
