"""Tokens: one integer per latent cell (or patch), for image tokenizers (docs/tokens.md).

A cell's D indices are one token, its mixed-radix value ``idx_0 + idx_1*L_0 + idx_2*L_0*L_1 + ...``
(``idx_0`` the least significant digit): the FSQ paper's implicit codebook index, the number the
fixed-rate .fsq payload stores per cell (docs/bitstream.md, "Packing the indices"), so a codebook
of ``prod(L)`` tokens. Exact integer arithmetic in int64, so the codebook may have up to 2^63
entries (the default conv model's 34 bits per cell fit; the paper model's 192 bits do not, and is
refused in one line).
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_with
from fsqdeploy.images import centre_crop, displayed_size, is_grey, read_image

if TYPE_CHECKING:
    from fsqdeploy.runtime.codec import Codec

TOKEN_DTYPE = np.int64
MAX_CODEBOOK = 1 << 63  # every token < prod(L) <= 2^63 fits int64


def codebook_size(levels: Sequence[int], component: str = "tokens") -> int:
    """prod(levels), the number of distinct tokens; refused when int64 cannot hold every token."""
    size = math.prod(int(level) for level in levels)
    if size > MAX_CODEBOOK:
        bits = (size - 1).bit_length()
        raise FSQDeployError(
            f"{component}: a cell of this model takes {bits} bits, more than the 63 an int64 token holds. "
            "Note: use the indices (Codec.encode), or train a tokenizer with fewer "
            "levels, e.g. --latent-dim 6 --levels 8,8,8,5,5,5 (64000 tokens)")
    return size


def indices_to_tokens(indices: Any, levels: Sequence[int], axis: int = -1, component: str = "tokens"
                      ) -> np.ndarray:
    """Integer indices with the D levels along ``axis`` (the codec's [N, D, h, w]: axis=1; cells
    [n, D]: -1) -> int64 tokens, that axis removed. Index d must be in [0, L_d)."""
    codebook_size(levels, component)
    idx = np.moveaxis(_integers(indices, "indices", component), axis, -1)
    if idx.shape[-1] != len(levels):
        raise FSQDeployError(f"{component}: indices have {idx.shape[-1]} levels along axis {axis}, the model "
                             f"has {len(levels)}. Note: pass the codec's indices ([N, D, h, w]: axis=1)")
    limit = np.asarray(levels, dtype=np.int64)
    bad = (idx < 0) | (idx >= limit)
    if bad.any():
        where = tuple(int(v) for v in np.argwhere(bad)[0])
        raise FSQDeployError(f"{component}: index {int(idx[where])} at {list(where)} (levels last) is outside "
                             f"[0, {levels[where[-1]]})")
    tokens = np.zeros(idx.shape[:-1], dtype=TOKEN_DTYPE)
    for d in reversed(range(len(levels))):  # Horner: no partial value exceeds the final token
        tokens = tokens * TOKEN_DTYPE(levels[d]) + idx[..., d].astype(TOKEN_DTYPE)
    return tokens


def tokens_to_indices(tokens: Any, levels: Sequence[int], axis: int = -1, component: str = "tokens"
                      ) -> np.ndarray:
    """int tokens -> int32 indices with the D levels as a new ``axis`` ([N, h, w] -> [N, D, h, w]
    with axis=1); a token outside [0, prod(levels)) is refused."""
    size = codebook_size(levels, component)
    values = _integers(tokens, "tokens", component)
    bad = (values < 0) | (values >= size)
    if bad.any():
        where = tuple(int(v) for v in np.argwhere(bad)[0])
        raise FSQDeployError(f"{component}: token {values[where]} at {list(where)} is outside the codebook "
                             f"[0, {size}). Note: tokens must come from a model with levels {list(levels)}")
    rest = values.astype(TOKEN_DTYPE)
    digits = []
    for level in levels:
        digits.append((rest % level).astype(np.int32))
        rest = rest // level
    return np.stack(digits, axis=axis)


def _integers(values: Any, what: str, component: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if type(values).__module__.startswith("torch") else np.asarray(values)
    if array.dtype.kind not in "iu":
        raise FSQDeployError(f"{component}: {what} must be integers, got {array.dtype}")
    return array


# --- token files (.npz): what ``fsqdeploy tokenize`` writes and ``fsqdeploy detokenize`` reads ----------

TOKEN_FORMAT, TOKEN_FORMAT_VERSION = "fsqdeploy-tokens", 2
READABLE_VERSIONS = (1, 2)  # 1 stored int64 tokens whatever the codebook; 2 the smallest type (storage_dtype)


def storage_dtype(levels: Sequence[int]) -> np.dtype:
    """The smallest integer type that holds every token of ``levels`` in a file: a 64,000-code
    tokenizer's tokens take 2 bytes, not int64's 8 (1.28M images of 256 tokens: 655 MB, not 2.6 GB).
    Readers get int64 back (``load_tokens``)."""
    size = codebook_size(levels) if levels else MAX_CODEBOOK
    for dtype in (np.uint8, np.uint16, np.int32):
        if size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(TOKEN_DTYPE)


@dataclass(frozen=True)
class TokenFile:
    """N images' token grids of one size, and what decoding them back needs."""

    tokens: np.ndarray  # int64 [N, rows, cols]
    names: tuple[str, ...]  # each image's output name: a relative path without suffix
    image_sizes: np.ndarray  # int64 [N, 2]: (height, width) of the image tokenized, before padding
    grey: np.ndarray  # bool [N]: the image had R = G = B everywhere (it decodes grey)
    levels: tuple[int, ...]
    model_id: str | None  # None for a bare .npy grid (a generative model's sample, say)
    cell_size: int | None


def token_grid(files: Sequence[Path], size: int, cell: int) -> tuple[int, int]:
    """The (rows, cols) token grid every file gives: S/cell square with ``size`` S (which must be a
    positive multiple of ``cell``), else the one grid all files give at their own sizes, from their
    headers (a mixed set is refused before anything is encoded)."""
    if size < 0 or size % cell:
        raise FSQDeployError(f"tokenize: --size {size} is not a positive multiple of the model's {cell}-pixel "
                             f"cells. Note: pass e.g. {max(cell, size // cell * cell)} or "
                             f"{max(2 * cell, (size // cell + 1) * cell)}, or 0")
    return (size // cell, size // cell) if size else _one_grid(files, cell)


def tokenize_files(codec: Codec, files: Sequence[Path], names: Sequence[str], size: int = 0,
                   progress: Callable[[int], None] | None = None, workers: int = 1,
                   grid: tuple[int, int] | None = None) -> TokenFile:
    """Every image file's tokens (``Codec.tokenize``), named ``names``: with ``size`` each image resized
    and centre-cropped to size x size (a multiple of the codec's cell size) first; without, all of them
    must give the same grid (``token_grid``; pass ``grid`` when it is known). Files are read by
    ``workers`` threads ahead of the encoder (0: in this thread), in order: any count gives the same
    file. ``progress(done)`` is called after each image."""
    from fsqdeploy.data import load_batches  # the decoding threads of folder:DIR training

    c = codec.cell_size
    codebook_size(codec.levels, "tokenize")
    if workers < 0:
        raise FSQDeployError(f"tokenize: --workers must be 0 or more, got {workers}")
    grid = grid or token_grid(files, size, c)
    # filled in place: the grids of a large set are held once (a list then np.stack held them twice)
    tokens = np.empty((len(files), *grid), dtype=TOKEN_DTYPE)
    sizes, grey = np.empty((len(files), 2), dtype=np.int64), np.empty(len(files), dtype=bool)
    images = load_batches(_Prepared(files, size), ([i] for i in range(len(files))), workers,
                          collate=lambda items: items[0], on_error=str)
    for i, image in enumerate(images):
        tokens[i], sizes[i], grey[i] = codec.tokenize(image), image.shape[:2], is_grey(image)
        if progress is not None:
            progress(i + 1)
    return TokenFile(tokens, tuple(names), sizes, grey, tuple(codec.levels), codec.model_id, c)


def _one_grid(files: Sequence[Path], c: int) -> tuple[int, int]:
    """The token grid every file gives at its own size (cells of c pixels), from the files' headers:
    one array holds one grid size, so a mixed set is refused before anything is encoded."""
    grids: dict[tuple[int, int], Path] = {}
    for path in files:
        try:
            height, width = displayed_size(path)
        except (OSError, ValueError, Image.DecompressionBombError):  # not an image: in read_image's words
            read_image(path, "tokenize")
            raise
        grids.setdefault((-(-height // c), -(-width // c)), path)
        if len(grids) > 1:
            (a, pa), (b, pb) = grids.items()
            raise FSQDeployError(f"tokenize: '{pa}' gives a {a[0]}x{a[1]} token grid and '{pb}' a {b[0]}x{b[1]} "
                                 "one, and one file holds one grid size. Note: pass --size S to resize and "
                                 "centre-crop every image to S x S")
    return next(iter(grids))


class _Prepared:
    """``[i]``: file i read (a JPEG at a reduced scale when it is resized next) and centre-cropped."""

    def __init__(self, files: Sequence[Path], size: int):
        self.files, self.size = files, size

    def __getitem__(self, i: int) -> np.ndarray:
        if not self.size:
            return read_image(self.files[i], "tokenize")
        return centre_crop(read_image(self.files[i], "tokenize", min_side=self.size), self.size)


def save_tokens(path: str | Path, tf: TokenFile) -> None:
    """Write ``tf`` as an .npz atomically (a killed run leaves no half-written file), its tokens in
    ``storage_dtype``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a temporary name
            np.savez(f, format=np.str_(TOKEN_FORMAT), format_version=np.int64(TOKEN_FORMAT_VERSION),
                     tokens=tf.tokens.astype(storage_dtype(tf.levels)), names=np.array(tf.names, dtype=np.str_),
                     image_sizes=tf.image_sizes.astype(np.int64), grey=tf.grey.astype(bool),
                     levels=np.array(tf.levels, dtype=np.int64), model_id=np.str_(tf.model_id or ""),
                     cell_size=np.int64(tf.cell_size or 0))

    write_with(path, write)


def load_tokens(path: str | Path, component: str = "detokenize") -> TokenFile:
    """A token file ``save_tokens`` wrote, or a bare integer .npy grid [rows, cols] / [N, rows, cols]
    (names 000000, 000001, ...; decoded whole, uncropped). Anything else is one clear line."""
    path = Path(path)
    if not path.is_file():
        raise FSQDeployError(f"{component}: '{path}' does not exist")
    try:
        if zipfile.is_zipfile(path):  # an .npz: numpy alone reads a damaged member without checking its CRC
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged is not None:
                raise FSQDeployError(f"{component}: '{path}' is damaged ({damaged} fails its CRC). "
                                     "Note: tokenize the images again")
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as e:
        # RuntimeError, NotImplementedError: zipfile's words for a member flagged encrypted or packed unknown
        raise FSQDeployError(f"{component}: '{path}' is not a .npz or .npy file ({e}). "
                             "Note: pass what fsqdeploy tokenize wrote, or an integer .npy grid") from None
    if isinstance(loaded, np.ndarray):
        grid = loaded[None] if loaded.ndim == 2 else loaded
        if grid.ndim != 3 or 0 in grid.shape or grid.dtype.kind not in "iu":
            raise FSQDeployError(f"{component}: '{path}' holds {loaded.dtype} {list(loaded.shape)}, expected "
                                 "integer tokens [rows, cols] or [N, rows, cols]")
        n = len(grid)
        return TokenFile(grid, tuple(f"{i:06d}" for i in range(n)), np.zeros((n, 2), np.int64),
                         np.zeros(n, bool), (), None, None)
    with loaded:
        try:
            if str(loaded["format"]) != TOKEN_FORMAT:
                raise KeyError("format")
            if int(loaded["format_version"]) not in READABLE_VERSIONS:
                raise FSQDeployError(f"{component}: '{path}' is token format version {int(loaded['format_version'])}"
                                     f", this fsqdeploy reads {' and '.join(map(str, READABLE_VERSIONS))}")
            tf = TokenFile(loaded["tokens"], tuple(str(n) for n in loaded["names"]), loaded["image_sizes"],
                           loaded["grey"], tuple(int(v) for v in loaded["levels"]), str(loaded["model_id"]),
                           int(loaded["cell_size"]))
        except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as e:
            raise FSQDeployError(f"{component}: '{path}' is not a token file of fsqdeploy tokenize "
                                 f"({type(e).__name__}: {e})") from None
    n = len(tf.tokens) if tf.tokens.ndim else 0
    if (tf.tokens.ndim != 3 or tf.tokens.dtype.kind not in "iu" or len(tf.names) != n
            or tf.image_sizes.shape != (n, 2) or tf.grey.shape != (n,)):
        raise FSQDeployError(f"{component}: '{path}' is damaged: tokenize writes integer tokens [N, rows, cols], "
                             f"names [N], image_sizes [N, 2] and grey [N], it holds {tf.tokens.dtype} tokens "
                             f"{list(tf.tokens.shape)}, {len(tf.names)} names, image_sizes {list(tf.image_sizes.shape)}"
                             f" and grey {list(tf.grey.shape)}")
    if tf.tokens.dtype.itemsize < 8:  # stored small (storage_dtype): int64, as TokenFile promises
        tf = dataclasses.replace(tf, tokens=tf.tokens.astype(TOKEN_DTYPE))
    bad = [name for name in tf.names if not name or Path(name).is_absolute() or ".." in Path(name).parts]
    if bad:
        raise FSQDeployError(f"{component}: '{path}' names an output {bad[0]!r} outside the output directory")
    return tf
