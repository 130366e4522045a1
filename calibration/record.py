"""ART/calibration.json: what the INT8 graphs were calibrated on and with, and the results.

The record is reused when every input matches: the FP32 graphs (their sha256 in the manifest),
the data (source, calibration subset digest, test subset digest), the method and settings, the
sample count and batch size, and the ONNX Runtime version (its quantizer writes the graphs).
Anything else changed means recalibrating; ``differences`` says what changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD_FILE = "calibration.json"
RECORD_FORMAT = "fsqdeploy-calibration"
RECORD_VERSION = 1
# Bump when the calibration procedure changes in a way that changes its output for the same inputs.
PROCEDURE_VERSION = 3  # 2: narrow convolutions stay in float; 3: TensorRT graphs
KEY_FIELDS = ("source_onnx", "data", "method", "samples", "settings")


def read_record(art: Path) -> dict[str, Any] | None:
    """The record, or None when there is none or it is not one this version can reuse."""
    path = art / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = (isinstance(record, dict) and record.get("format") == RECORD_FORMAT
          and record.get("format_version") == RECORD_VERSION and all(k in record for k in KEY_FIELDS)
          and isinstance(record.get("ranges"), dict) and isinstance(record.get("float_nodes"), dict)
          and isinstance(record.get("files"), dict))
    return record if ok else None


def differences(record: dict[str, Any], key: dict[str, Any]) -> list[str]:
    """Human-readable reasons why ``record`` does not match the inputs ``key`` (empty: reuse it)."""
    reasons = []
    for name, sha in key["source_onnx"].items():
        if record["source_onnx"].get(name) != sha:
            reasons.append(f"the model changed ({name} sha256)")
    old_data, new_data = record["data"], key["data"]
    if old_data != new_data:
        changed = [k for k in sorted(set(old_data) | set(new_data)) if old_data.get(k) != new_data.get(k)]
        reasons.append(f"the data changed ({', '.join(changed)})")
    for name in ("method", "samples"):
        if record[name] != key[name]:
            reasons.append(f"--{name} changed ({record[name]} -> {key[name]})")
    old_settings, new_settings = record["settings"], key["settings"]
    changed = [k for k in sorted(set(old_settings) | set(new_settings)) if old_settings.get(k) != new_settings.get(k)]
    if changed:
        reasons.append(f"the settings changed ({', '.join(changed)})")
    return reasons
