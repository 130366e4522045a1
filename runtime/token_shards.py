"""Token shards: a large dataset tokenized into a directory, shard by shard, so that a killed run loses
at most the shard it was coding and ``fsqdeploy tokenize --resume`` continues it (docs/tokens.md).

``OUT/tokens.json`` names the run (the model, the options, how many images, the shard size and a hash
of the images' names in order). ``OUT/tokens-00000.npz``, ... are token files (runtime/tokens.py) of
``shard_size`` images each, the last one fewer, each written atomically and each readable alone. A
shard that exists is finished: resuming checks it (its CRCs, its names) and codes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import read_format_json, write_text_atomic
from fsqdeploy.runtime.tokens import TokenFile, codebook_size, load_tokens, save_tokens, token_grid, tokenize_files

if TYPE_CHECKING:
    from fsqdeploy.runtime.codec import Codec

MANIFEST = "tokens.json"
SHARDS_FORMAT, SHARDS_FORMAT_VERSION = "fsqdeploy-token-shards", 1
DEFAULT_SHARD_SIZE = 10_000  # at 256 tokens an image: 20 MB of int64 in memory, 5 MB of uint16 on disk


def shard_file(k: int) -> str:
    return f"tokens-{k:05d}.npz"


@dataclass(frozen=True)
class ShardsWritten:
    images: int  # this part's (every image without parts)
    shards: int  # this part's
    of: int  # shards in the whole tokenization
    kept: int  # shards a resumed run found finished
    grid: tuple[int, int]
    distinct: int  # distinct tokens over every shard


def tokenize_shards(codec: Codec, files: Sequence[Path], names: Sequence[str], out: Path, *, size: int = 0,
                    shard_size: int = DEFAULT_SHARD_SIZE, resume: bool = False, force: bool = False,
                    part: tuple[int, int] = (0, 1), workers: int = 1,
                    progress: Callable[[int, int], None] | None = None,
                    warn: Callable[[str], None] = print) -> ShardsWritten:
    """Tokenize ``files`` (as ``tokenize_files``) into ``out``, ``shard_size`` images a shard. ``resume``
    continues the same tokenization (the same images, model and options, else refused) or starts one;
    ``force`` replaces what ``out`` holds. ``part=(i, n)`` codes only shards k with k % n == i, so n
    processes (on n machines or GPUs) share one tokenization: a part always resumes, and never
    replaces. ``progress(done, total)`` counts this part's images, kept shards included."""
    i, n = part
    if shard_size < 1:
        raise FSQDeployError(f"tokenize: --shard-size must be 1 or more, got {shard_size}")
    if not 0 <= i < n:
        raise FSQDeployError(f"tokenize: --part {i}/{n} is not a part: I/N needs 0 <= I < N, e.g. 0/4 to 3/4")
    if n > 1 and force:
        raise FSQDeployError("tokenize: --force with --part would delete the other parts' shards. Note: replace "
                             "the directory once, without --part, or pass a new one")
    if out.exists() and not out.is_dir():
        raise FSQDeployError(f"tokenize: --out '{out}' is a file. Note: a directory of shards is written "
                             "there; pass a new path, or OUT.npz for one file")
    codebook_size(codec.levels, "tokenize")
    grid = token_grid(files, size, codec.cell_size)
    manifest = {"format": SHARDS_FORMAT, "format_version": SHARDS_FORMAT_VERSION, "model_id": codec.model_id,
                "levels": list(codec.levels), "cell_size": codec.cell_size, "size": size, "grid": list(grid),
                "images": len(files), "shard_size": shard_size, "shards": -(-len(files) // shard_size),
                "names_sha256": _names_hash(names)}
    mine, resume = range(i, manifest["shards"], n), resume or n > 1
    _prepare(out, manifest, resume, force, mine if n > 1 else None)

    spans = [(k * shard_size, min(len(files), (k + 1) * shard_size)) for k in mine]
    total, done = sum(hi - lo for lo, hi in spans), 0
    distinct, kept = np.empty(0, dtype=np.int64), 0
    for k, (lo, hi) in zip(mine, spans):
        path = out / shard_file(k)
        tf = _finished(path, manifest, names[lo:hi], warn) if resume else None
        if tf is None:
            tf = tokenize_files(codec, files[lo:hi], names[lo:hi], size, None if progress is None else
                                (lambda d, base=done: progress(base + d, total)), workers, grid)
            save_tokens(path, tf)
        else:
            kept += 1
            if progress is not None:
                progress(done + hi - lo, total)
        done += hi - lo
        distinct = np.union1d(distinct, tf.tokens)
    return ShardsWritten(total, len(mine), manifest["shards"], kept, grid, len(distinct))


def _names_hash(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def _prepare(out: Path, manifest: dict[str, Any], resume: bool, force: bool, mine: range | None) -> None:
    """Make ``out`` ready for ``manifest``'s shards and write the manifest: an earlier run's shards stay
    only where it was the same tokenization and ``resume`` asks to continue it. ``mine``: the shards
    of this part, when other parts may be writing theirs beside it."""
    shards = sorted(out.glob("tokens-*.npz")) if out.is_dir() else []
    before = out / MANIFEST
    if (before.exists() or shards) and not (resume or force):
        raise FSQDeployError(f"tokenize: '{out}' holds a tokenization. Note: pass --resume to continue it, "
                             "or --force to replace it")
    if resume and shards and not before.exists():
        raise FSQDeployError(f"tokenize: '{out}' holds shards but no {MANIFEST}, so they cannot be checked. "
                             "Note: pass --force to replace them")
    if resume and before.exists():
        old = _read_manifest(out, "tokenize")
        changed = [k for k in manifest if old.get(k) != manifest[k]]
        if changed:
            what = "the images (their names or order)" if changed[0] == "names_sha256" else \
                f"{changed[0]} {old.get(changed[0])!r}, this run {manifest[changed[0]]!r}"
            raise FSQDeployError(f"tokenize: '{out}' is another tokenization ({what}). Note: resume with the same "
                                 "images, model and options, or pass --force to replace it")
        shards = []  # kept: each is checked before it is skipped
    # A killed run's half-written files, never renamed into place; not another part's, in flight.
    temporaries = sorted(out.glob(".tokens*.tmp")) if mine is None else \
        [tmp for k in mine for tmp in sorted(out.glob(f".{shard_file(k)}.*.tmp"))]
    for path in shards + temporaries:
        path.unlink()
    write_text_atomic(before, json.dumps(manifest, indent=2) + "\n")


def _finished(path: Path, manifest: dict[str, Any], names: Sequence[str],
              warn: Callable[[str], None]) -> TokenFile | None:
    """The earlier run's shard at ``path`` if it is whole and is these images' tokens, else None
    (it is coded again: a shard is renamed into place only when written, so that is damage)."""
    if not path.exists():
        return None
    try:
        tf = _checked(load_tokens(path, "tokenize"), path, manifest, len(names), "tokenize")
    except FSQDeployError as e:
        reason = str(e).removeprefix("tokenize: ").split(". Note:")[0]  # the note is a reader's
        warn(f"tokenize: coding '{path}' again: {reason}")
        return None
    if tf.names != tuple(names):
        warn(f"tokenize: coding '{path}' again: it holds other images than its manifest names")
        return None
    return tf


def _checked(tf: TokenFile, path: Path, manifest: dict[str, Any], images: int, component: str) -> TokenFile:
    expected = (manifest["model_id"], tuple(manifest["levels"]), (images, *manifest["grid"]))
    if (tf.model_id, tf.levels, tf.tokens.shape) != expected:
        raise FSQDeployError(f"{component}: '{path}' is not the shard its manifest describes (model "
                             f"{tf.model_id}, levels {list(tf.levels)}, tokens {list(tf.tokens.shape)}; the "
                             f"manifest: model {expected[0]}, levels {list(expected[1])}, tokens {list(expected[2])})")
    return tf


def _read_manifest(out: Path, component: str) -> dict[str, Any]:
    manifest = read_format_json(out / MANIFEST, component=component, fmt=SHARDS_FORMAT,
                                version=SHARDS_FORMAT_VERSION, describes="a token shard manifest of fsqdeploy "
                                "tokenize", missing_note="pass a directory that fsqdeploy tokenize wrote, or a "
                                "token file")
    kinds = {"model_id": str, "levels": list, "grid": list, "images": int, "shard_size": int, "shards": int}
    bad = [k for k, kind in kinds.items() if not isinstance(manifest.get(k), kind)]
    if bad or manifest["shards"] != -(-manifest["images"] // max(1, manifest["shard_size"])):
        raise FSQDeployError(f"{component}: '{out / MANIFEST}' is damaged ({bad[0] if bad else 'shards'} is "
                             "not what tokenize writes). Note: tokenize the images again")
    return manifest


def token_files(path: Path, component: str = "detokenize") -> Iterator[TokenFile]:
    """A token file, or a shard directory's token files in order, each checked against its manifest:
    a directory whose tokenize did not finish is refused before anything is read."""
    if not path.is_dir():
        yield load_tokens(path, component)
        return
    manifest = _read_manifest(path, component)
    shards = [path / shard_file(k) for k in range(manifest["shards"])]
    missing = [s for s in shards if not s.is_file()]
    if missing:
        raise FSQDeployError(f"{component}: '{path}' holds {len(shards) - len(missing)} of its {len(shards)} shards "
                             f"('{missing[0].name}' is missing): its tokenize did not finish. Note: run the same "
                             "tokenize again with --resume")
    names: list[str] = []
    for k, shard in enumerate(shards):
        images = min(manifest["shard_size"], manifest["images"] - k * manifest["shard_size"])
        tf = _checked(load_tokens(shard, component), shard, manifest, images, component)
        names += tf.names
        if k == len(shards) - 1 and _names_hash(names) != manifest.get("names_sha256"):
            raise FSQDeployError(f"{component}: the shards in '{path}' name other images than its manifest. "
                                 "Note: tokenize the images again")
        yield tf
