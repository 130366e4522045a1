"""`fsqdeploy check ART`: a clean artifact passes; tampering, missing files, an unsupported op and
a wrong I/O dtype each fail with exit 1; a missing or corrupt directory is one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fsqdeploy.artifact import add_files
from fsqdeploy.export.check import check_artifact
from fsqdeploy.export.fp16 import fp16_at_risk


def statuses(report) -> dict[str, str]:
    return {f.check: f.status for f in report.findings}


def test_clean_artifacts_pass(exported):
    report = check_artifact(exported.art)
    assert report.passed, report.findings
    assert statuses(report)["quantizer FP16 risk"] == "info"
    risk = report.fp16_risk
    assert len(risk["stages"]) == exported.model.config.stages
    assert all(0.0 <= s["share"] <= 1.0 and s["values"] > 0 for s in risk["stages"])
    assert risk["images"] == json.loads((exported.art / "manifest.json").read_text())["parity"]["images"]


def test_inline_artifact_passes(art64_inline):
    assert check_artifact(art64_inline.art).passed


def test_fp16_risk_definition():
    t = np.array([[-1.0, 0.5, np.inf]], np.float32)
    u = np.array([[0.5, 0.5 * (1 + 2.0**-11), 0.5 * (1 + 2.0**-8), -1.0 - 2.0**-12, 0.0, 1e-9]], np.float32).T
    got = fp16_at_risk(u.reshape(-1, 1), t).ravel()
    assert got.tolist() == [True, True, False, True, False, False]


def test_check_cli_json_and_table(cli, art64):
    code, out, _ = cli("check", art64.art, "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["trt_version"] == 10
    assert {c["status"] for c in report["checks"]} == {"pass", "info"}
    code, out, _ = cli("check", art64.art)
    assert code == 0 and "all checks passed" in out and "FAIL" not in out
    assert out.count("PASS") == 8 and "INFO" in out and "FP16 risk" in out


def test_tampered_file_fails(cli, art_copy):
    path = art_copy / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside a weight: still parses, but the hash no longer matches
    path.write_bytes(bytes(data))
    code, out, _ = cli("check", art_copy)
    assert code == 1 and "FAIL" in out and "sha256 differs" in out
    assert statuses(check_artifact(art_copy))["manifest files"] == "fail"


def test_missing_file_fails(cli, art_copy):
    (art_copy / "encoder.onnx").unlink()
    code, out, _ = cli("check", art_copy, "--json")
    report = json.loads(out)
    assert code == 1 and not report["passed"]
    failed = {c["check"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}
    assert "encoder.onnx: missing" in failed["manifest files"] and "encoder.onnx" in failed


def _rewrite(art, name, edit) -> None:
    model = onnx.load(str(art / name))
    edit(model.graph)
    onnx.save(model, str(art / name))
    add_files(art, [name])  # re-hash, so only the injected defect remains


def test_unsupported_op_fails_the_tensorrt_lint(art_copy):
    def inject(g):  # indices -> BitwiseNot -> BitwiseNot: same values, an op TensorRT 10 lacks
        for n in g.node:
            n.output[:] = ["raw_indices" if o == "indices" else o for o in n.output]
        g.node.extend([helper.make_node("BitwiseNot", ["raw_indices"], ["not_indices"]),
                       helper.make_node("BitwiseNot", ["not_indices"], ["indices"])])

    _rewrite(art_copy, "encoder.onnx", inject)
    report = check_artifact(art_copy, fp16=False)
    s = statuses(report)
    assert not report.passed and s["encoder.onnx: TensorRT 10"] == "fail"
    assert s["manifest files"] == s["encoder.onnx: onnx checker"] == s["encoder.onnx: I/O contract"] == "pass"
    detail = next(f.detail for f in report.findings if f.check == "encoder.onnx: TensorRT 10")
    assert detail == "ops not supported by TensorRT 10: BitwiseNot"


def test_wrong_io_dtype_fails(art_copy):
    def widen(g):  # the encoder now returns int64 indices
        for n in g.node:
            n.output[:] = ["indices32" if o == "indices" else o for o in n.output]
        g.node.append(helper.make_node("Cast", ["indices32"], ["indices"], to=TensorProto.INT64))
        g.output[0].type.tensor_type.elem_type = TensorProto.INT64

    _rewrite(art_copy, "encoder.onnx", widen)
    report = check_artifact(art_copy, fp16=False)
    assert statuses(report)["encoder.onnx: I/O contract"] == "fail"
    assert statuses(report)["encoder.onnx: onnx checker"] == "pass"
    assert "int64" in next(f.detail for f in report.findings if f.check == "encoder.onnx: I/O contract")


def test_tensorrt_8_needs_inline(art64):
    report = check_artifact(art64.art, trt_version=8, fp16=False)
    detail = next(f.detail for f in report.findings if f.check == "encoder.onnx: TensorRT 8")
    assert not report.passed and "local functions" in detail and "opset 18" in detail


@pytest.mark.parametrize("damage, match", [
    (lambda art: None, "does not exist"),
    (lambda art: art.mkdir(), "manifest.json' is missing"),
    (lambda art: (art.mkdir(), (art / "manifest.json").write_bytes(b"\x00\xff")), "not valid JSON"),
])
def test_missing_or_corrupt_directory_is_one_line(cli, one_line_error, tmp_path, damage, match):
    art = tmp_path / "art"
    damage(art)
    code, out, err = cli("check", art)
    one_line_error(code, err, match)
    assert out == ""


def test_unknown_trt_version_is_one_line(cli, one_line_error, art64):
    code, _, err = cli("check", art64.art, "--trt-version", "7")
    one_line_error(code, err, "TensorRT 7 is not known")


def test_fp16_risk_data_override_and_skip(art32, tmp_path):
    report = check_artifact(art32.art, data="synthetic", images=16)
    assert report.passed and report.fp16_risk["images"] == 16
    report = check_artifact(art32.art, data=f"folder:{tmp_path / 'absent'}")
    assert report.passed and report.fp16_risk is None
    detail = next(f.detail for f in report.findings if f.check == "quantizer FP16 risk")
    assert detail.startswith("skipped: data: folder") and "does not exist" in detail
