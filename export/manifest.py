"""ART/manifest.json: what an artifact directory holds, for which model, and how it was proven.

Later stages (FP16/INT8 graphs, TensorRT engines) add their files with ``add_files``; ``model_id``
(the checkpoint's model.safetensors sha256) never changes, so bitstreams stay tied to the model.
docs/artifacts.md lists every field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import sha256_file, write_json_atomic

MANIFEST_FILE = "manifest.json"
# The PyTorch reference travels with the graphs: ART/checkpoint/{config.json, model.safetensors}.
CHECKPOINT_DIR = "checkpoint"
ARTIFACT_FORMAT = "fsqdeploy-artifact"
ARTIFACT_VERSION = 1
REQUIRED_FIELDS = ("model_id", "levels", "latent_dim", "code_width", "image_size", "stages",
                   "temperature", "opset", "io", "files")


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def read_manifest(art_dir: str | Path) -> dict[str, Any]:
    """Read and sanity-check ART/manifest.json; every problem is one FSQDeployError line."""
    art = Path(art_dir)
    if not art.is_dir():
        raise FSQDeployError(f"artifact: directory '{art}' does not exist. Note: create it with fsqdeploy export")
    path = art / MANIFEST_FILE
    if not path.is_file():
        raise FSQDeployError(f"artifact: '{path}' is missing. Note: is '{art}' an fsqdeploy export directory?")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FSQDeployError(f"artifact: '{path}' is not valid JSON ({e}). Note: export again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise FSQDeployError(f"artifact: '{path}' is not an fsqdeploy artifact manifest")
    if manifest.get("format_version") != ARTIFACT_VERSION:
        raise FSQDeployError(f"artifact: '{path}' has format version {manifest.get('format_version')}, "
                             f"this fsqdeploy reads {ARTIFACT_VERSION}")
    missing = [k for k in REQUIRED_FIELDS if k not in manifest]
    files = manifest.get("files")
    if missing or not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
        for v in files.values()
    ):
        what = f"lacks {missing}" if missing else "has a malformed 'files' table"
        raise FSQDeployError(f"artifact: '{path}' {what}. Note: export again")
    return manifest


def verify_files(manifest: Mapping[str, Any], art_dir: str | Path) -> list[str]:
    """One problem string per listed file that is missing, resized or re-hashed; [] when all match."""
    art, problems = Path(art_dir), []
    for name, entry in manifest["files"].items():
        path = art / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{name}: size {size} != {entry['size']} in the manifest")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def write_manifest(art_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    write_json_atomic(Path(art_dir) / MANIFEST_FILE, dict(manifest))


def add_files(art_dir: str | Path, names: Iterable[str], updates: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """Hash ``names`` (paths relative to ART) into the manifest's ``files`` and merge ``updates``
    (e.g. {"fp16": {...}}) at the top level; the manifest is replaced atomically.

    ``model_id`` and ``format`` cannot be changed this way: they identify the model.
    """
    art = Path(art_dir)
    manifest = read_manifest(art)
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST_FILE:
            raise FSQDeployError(f"artifact: '{name}' must be a file inside '{art}', not the manifest")
        path = art / name
        if not path.is_file():
            raise FSQDeployError(f"artifact: cannot add '{path}' to the manifest: it does not exist")
        manifest["files"][Path(name).as_posix()] = file_entry(path)
    frozen = {"model_id", "format", "format_version", "files"} & set(updates or {})
    if frozen:
        raise FSQDeployError(f"artifact: {sorted(frozen)} cannot be changed by adding files")
    manifest.update(updates or {})
    write_manifest(art, manifest)
    return manifest
