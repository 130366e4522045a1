"""Whole-image coding of a fully convolutional codec in tiles, seamlessly: the result of every
tiling is exactly the one-pass result (the indices bit for bit, the pixels to float32 rounding).

Why it is exact: a tile's *core* is widened by a *halo* on every side into the *window* the
network sees, clipped at the image edges. A core output depends only on pixels (or cells) within
the network's receptive field, and the halo is at least that wide (fsqdeploy.config.tile_halos:
3f pixels for the encoder, 4 cells for the decoder), so the zeros a convolution pads a window
with never reach a core output, and where a window is clipped it ends where the image ends, as
in one pass. Windows start on whole latent cells, so every stride-2 layer sees the same pixel
phases as in one pass. Memory is bounded by the largest window, whatever the image size.

Every size here is in latent cells (f x f pixels) unless it says pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from fsqdeploy.images import float_to_uint8, hwc_uint8_to_chw

Span = tuple[int, int, int, int]  # window start, window end, core start, core end (cells)
Box = tuple[int, int, int, int]  # top, bottom, left, right (pixels, ends exclusive)


def spans(length: int, core: int, halo: int) -> list[Span]:
    """Cut ``[0, length)`` into cores of ``core`` cells (the last may be shorter), each widened by
    ``halo`` cells on both sides and clipped to ``[0, length)``."""
    if length < 1 or core < 1 or halo < 0:
        raise ValueError(f"spans({length}, {core}, {halo})")
    return [(max(0, start - halo), min(length, start + core + halo), start, min(length, start + core))
            for start in range(0, length, core)]


def _tiles(rows: int, cols: int, core: int, halo: int) -> Iterator[tuple[Span, Span]]:
    for row_span in spans(rows, core, halo):
        for col_span in spans(cols, core, halo):
            yield row_span, col_span


def encode_tiled(encode: Callable[[np.ndarray], np.ndarray], padded: np.ndarray, f: int, core: int,
                 halo: int) -> np.ndarray:
    """uint8 [H, W, 3] (H, W multiples of f) -> int32 indices [1, D, H/f, W/f].

    ``encode`` maps float images [1, 3, h, w] in [0, 1] to indices [1, D, h/f, w/f]; it sees one
    window at a time, of at most (core + 2*halo)*f pixels a side."""
    rows, cols = padded.shape[0] // f, padded.shape[1] // f
    cores = []
    for (wr0, wr1, r0, r1), (wc0, wc1, c0, c1) in _tiles(rows, cols, core, halo):
        out = encode(hwc_uint8_to_chw(padded[None, wr0 * f : wr1 * f, wc0 * f : wc1 * f]))
        cores.append((r0, r1, c0, c1, out[:, :, r0 - wr0 : r1 - wr0, c0 - wc0 : c1 - wc0]))
    grid = np.empty((1, cores[0][4].shape[1], rows, cols), dtype=cores[0][4].dtype)
    for r0, r1, c0, c1, indices in cores:
        grid[:, :, r0:r1, c0:c1] = indices
    return grid


def _decoded_cores(decode: Callable[[np.ndarray], np.ndarray], grid: np.ndarray, f: int, core: int, halo: int,
                   keep: Box | None = None) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Per tile: the core's pixel rows and columns, and the decoded core float [3, rows, cols]; with
    ``keep``, only the tiles whose core has pixels inside it."""
    for (wr0, wr1, r0, r1), (wc0, wc1, c0, c1) in _tiles(grid.shape[2], grid.shape[3], core, halo):
        if keep is not None and not (r0 * f < keep[1] and keep[0] < r1 * f and c0 * f < keep[3] and keep[2] < c1 * f):
            continue
        out = decode(np.ascontiguousarray(grid[:, :, wr0:wr1, wc0:wc1]))
        crop = out[0, :, (r0 - wr0) * f : (r1 - wr0) * f, (c0 - wc0) * f : (c1 - wc0) * f]
        yield slice(r0 * f, r1 * f), slice(c0 * f, c1 * f), crop


def decode_tiled(decode: Callable[[np.ndarray], np.ndarray], grid: np.ndarray, f: int, core: int,
                 halo: int, keep: Box | None = None) -> np.ndarray:
    """Indices [1, D, h, w] -> uint8 [h*f, w*f, 3], converted tile by tile (no float image of the
    whole size is ever held). ``keep`` (top, bottom, left, right pixels): only the tiles whose core
    reaches into it are decoded; the pixels outside it are then undefined (a region's window).

    ``decode`` maps indices [1, D, h', w'] to float images [1, 3, h'*f, w'*f] in [0, 1]; it sees
    one window at a time, of at most core + 2*halo cells a side."""
    image = np.empty((grid.shape[2] * f, grid.shape[3] * f, 3), dtype=np.uint8)
    for ys, xs, crop in _decoded_cores(decode, grid, f, core, halo, keep):
        image[ys, xs] = float_to_uint8(crop.transpose(1, 2, 0))
    return image


def decode_tiled_float(decode: Callable[[np.ndarray], np.ndarray], grid: np.ndarray, f: int, core: int,
                       halo: int) -> np.ndarray:
    """As ``decode_tiled``, but the decoder's float32 output [1, 3, h*f, w*f] (tests compare it)."""
    image = np.empty((1, 3, grid.shape[2] * f, grid.shape[3] * f), dtype=np.float32)
    for ys, xs, crop in _decoded_cores(decode, grid, f, core, halo):
        image[0, :, ys, xs] = crop
    return image
