"""Atomic writes and hashing (an artifact either exists whole or not at all), and listing a tree."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsqdeploy.errors import FSQDeployError


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600; give the artifact the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_format_json(path: Path, *, component: str, fmt: str, version: int, describes: str,
                     missing_note: str, invalid_note: str = "") -> dict[str, Any]:
    """A JSON object that names its ``format`` and ``format_version`` (config.json, manifest.json),
    with one clear line for a missing file, bad JSON, another kind of file or another version."""
    if not path.is_file():
        raise FSQDeployError(f"{component}: '{path}' is missing. Note: {missing_note}")
    try:
        d = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FSQDeployError(f"{component}: '{path}' is not valid JSON ({e}){invalid_note}") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise FSQDeployError(f"{component}: '{path}' is not {describes}")
    if d.get("format_version") != version:
        raise FSQDeployError(f"{component}: '{path}' has format version {d.get('format_version')}, "
                             f"this fsqdeploy reads {version}")
    return d


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished directory ``src`` to ``dst``; an existing ``dst`` is moved aside first,
    then deleted, so a reader sees the old directory or the new one, never a mix."""
    import shutil

    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.absolute().parent))
    os.replace(dst, old / dst.name)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def files_under(root: Path, suffixes: tuple[str, ...]) -> tuple[Path, ...]:
    """Every file under ``root`` (recursively) whose suffix, in any case, is one of ``suffixes``,
    sorted by its path relative to ``root``: the one listing of folder:DIR data and of a directory
    given to compress or decompress."""
    found = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                   if p.suffix.lower() in suffixes and p.is_file())
    return tuple(path for _, path in found)
