"""`fsqdeploy export` from the command line: the default gate, --force, --data, and one-line errors
that write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsqdeploy.backends.onnxruntime import ort_session


def test_export_cli_default_gate(cli, run32, tmp_path):
    out = tmp_path / "art"
    code, stdout, err = cli("export", run32, "--out", out)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    p = m["parity"]
    assert p["images"] == 512 and p["batch1_images"] == 64 and p["passed"]
    assert p["index_agreement"] == 1.0 and p["max_abs_error"] <= 1e-5 and p["adversarial_mismatches"] == 0
    assert p["adversarial_cases"] == 3 * 7 * 2 + 2  # per-stage and chain placements + 2 constant images
    assert "indices 100% equal" in stdout and str(out) in stdout
    idx = ort_session(out / "encoder.onnx").run(None, {"images": np.zeros((3, 3, 32, 32), np.float32)})[0]
    assert idx.dtype == np.int32 and idx.shape == (3, 16) and (idx == idx[0]).all()


def test_force_replaces_and_data_overrides(cli, run32, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, _, err = cli("export", run32, "--out", out, "--force", "--inline", "--data", "synthetic",
                       "--parity-images", "24", "--opset", "17")
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert not (out / "stale.txt").exists()
    assert m["parity"]["data"] == "synthetic" and m["parity"]["images"] == 24
    assert m["inline"] is True and m["custom_domain"] is None and m["opset"] == 17
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary directories left


def _corrupt_config(run):
    (run / "config.json").write_text("{")


def _corrupt_weights(run):
    (run / "model.safetensors").write_bytes(b"\x00" * 16)


@pytest.mark.parametrize("setup, args, match", [
    (lambda run, out: None, ["--opset", "13"], "opset 13 is not supported"),
    (lambda run, out: (out.mkdir(), (out / "x").write_text("x")), [], "not empty"),
    (lambda run, out: _corrupt_config(run), [], "not valid JSON"),
    (lambda run, out: _corrupt_weights(run), [], "is corrupt"),
    (lambda run, out: (run / "config.json").unlink(), [], "config.json' is missing"),
    (lambda run, out: None, ["--data", "nosuch"], "unknown data source"),
    (lambda run, out: None, ["--parity-images", "0"], "at least 1"),
])
def test_export_errors_are_one_line_and_write_nothing(cli, one_line_error, run32, tmp_path, setup, args, match):
    import shutil

    run, out = tmp_path / "run", tmp_path / "art"
    shutil.copytree(run32, run)
    setup(run, out)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, stdout, err = cli("export", run, "--out", out, *args)
    one_line_error(code, err, match)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and stdout == ""


def test_missing_run_dir(cli, one_line_error, tmp_path):
    code, _, err = cli("export", tmp_path / "nope", "--out", tmp_path / "art")
    one_line_error(code, err, "does not exist")
    assert not (tmp_path / "art").exists()


def test_an_explicit_default_is_a_given_flag(cli, one_line_error, art_copy):
    """Flags default to None, so `--opset 18` (the default) is seen: into an artifact it is refused."""
    from fsqdeploy.artifact import DEFAULT_EVAL_IMAGES
    from fsqdeploy.export.onnx_export import DEFAULT_OPSET

    before = sorted(p.name for p in art_copy.iterdir())
    for args, flag in ((["--opset", DEFAULT_OPSET], "--opset"), (["--parity-images", DEFAULT_EVAL_IMAGES],
                                                                   "--parity-images")):
        one_line_error(*cli("export", art_copy, "--trt", *args)[::2],
                       f"{flag} does not apply when building engines into the artifact")
    assert sorted(p.name for p in art_copy.iterdir()) == before


def test_trt_help_defaults_come_from_build_options():
    """The help states BuildOptions' defaults; the options themselves default to "not given"."""
    import dataclasses

    import typer

    from fsqdeploy.export.commands import TRT_FLAGS, export
    from fsqdeploy.export.tensorrt.options import BuildOptions

    app = typer.Typer()
    app.command()(export)
    options = {p.opts[0]: p for p in typer.main.get_command(app).params}
    # Every field is a flag but the spatial model's f, which comes from the model itself.
    assert set(TRT_FLAGS) == {f.name for f in dataclasses.fields(BuildOptions)} - {"downsample"}
    defaults = BuildOptions()
    for field, flag in TRT_FLAGS.items():
        assert options[flag].default in (None, False), flag
        value = getattr(defaults, field)
        if isinstance(value, int) and not isinstance(value, bool):
            assert f"[{value}" in options[flag].help, (flag, options[flag].help)
    spatial = BuildOptions.from_given(downsample=8)
    for field in ("opt_shape", "max_shape"):
        h, w = getattr(spatial, field)
        assert f"[{h}x{w}" in options[TRT_FLAGS[field]].help
    assert options["--opset"].default is None and options["--parity-images"].default is None


def test_the_export_command_loads_the_builder_only_for_trt():
    import subprocess
    import sys

    code = ("import sys, fsqdeploy.export.commands; "
            "print(sorted(m for m in sys.modules if m.startswith('fsqdeploy.export.tensorrt')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['fsqdeploy.export.tensorrt', 'fsqdeploy.export.tensorrt.options']"
