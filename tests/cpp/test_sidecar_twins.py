"""The Python half of the twins' sidecar table: runtime/cpp/tests/sidecar_cases.json.

ctest's Engines.SidecarTableSharedWithPython runs fsq::check_engine over the same table; both must
give the table's verdict and message word for word, so C++ and Python accept and refuse the same
engines (version-compatible, hardware-compatible, hash, precision, damaged sidecars).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from fsqdeploy.artifact import sidecar_path
from fsqdeploy.backends.tensorrt import check_sidecar
from fsqdeploy.errors import FSQDeployError

TABLE = Path(__file__).resolve().parents[2] / "runtime" / "cpp" / "tests" / "sidecar_cases.json"
SPEC: dict[str, Any] = json.loads(TABLE.read_text())


def write_case(directory: Path, case: dict[str, Any]) -> Path:
    """The engine and sidecar the case describes (the C++ twin: write_case in test_manifest.cpp)."""
    engine = directory / SPEC["engine_file"]
    engine.write_bytes(SPEC["engine"].encode())
    sidecar = dict(SPEC["sidecar"])
    if case.get("record_hash", True):
        sidecar["engine_sha256"] = hashlib.sha256(SPEC["engine"].encode()).hexdigest()
    sidecar.update(case.get("sidecar", {}))
    for key in case.get("drop", []):
        del sidecar[key]
    sidecar_path(engine).write_text(case.get("sidecar_text", json.dumps(sidecar)))
    if "engine_after" in case:
        engine.write_bytes(case["engine_after"].encode())
    if case.get("remove") == "engine":
        engine.unlink()
    elif case.get("remove") == "sidecar":
        sidecar_path(engine).unlink()
    return engine


def test_the_table_covers_every_rule():
    names = [c["name"] for c in SPEC["cases"]]
    assert len(names) == len(set(names)) and len(names) >= 20
    accepted = sum(c["refused"] is None for c in SPEC["cases"])
    assert 5 <= accepted < len(names)  # both verdicts, many times


@pytest.mark.parametrize("case", SPEC["cases"], ids=[c["name"] for c in SPEC["cases"]])
def test_python_gives_the_tables_verdict(tmp_path, case):
    engine = write_case(tmp_path, case)
    here = {**SPEC["here"], **case.get("here", {})}
    if case["refused"] is None:
        assert check_sidecar(engine, here, precision=case.get("precision"))["precision"] == "fp16"
    else:
        with pytest.raises(FSQDeployError) as e:
            check_sidecar(engine, here, precision=case.get("precision"))
        assert str(e.value) == case["refused"].replace("{dir}", str(tmp_path))
