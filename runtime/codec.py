"""``Codec``: the exported FSQ codec on any backend, in three lines::

    from fsqdeploy.runtime import Codec
    codec = Codec.load("art", backend="auto")      # says which backend it picked: codec.backend
    images = codec.decode(codec.encode(images))     # float [N,3,S,S] -> int32 [N,W] -> float

    data = codec.compress(photo)                    # uint8 [H,W,3] (or grey [H,W]), any size -> .fsq bytes
    photo = codec.decompress(data)                  # -> uint8 [H,W,3]; another model's file is refused

A spatial (conv) artifact takes whole images: ``encode`` maps float [N,3,H,W] (H, W multiples of
f) to int32 [N,D,H/f,W/f] and ``decode`` back; ``compress`` edge-pads a photo to multiples of f,
encodes it in one pass (or, above ``max_pixels``, in tiles with a halo that give exactly the
one-pass indices: runtime/tiles.py) and writes a .fsq v2 latent grid (layout 1); ``decompress``
decodes it the same way and crops back. A patch (paper) artifact cuts photos into model-sized
patches, as before, and writes layout 0.

An artifact with a prior (ART/prior.json, conv exports) makes ``compress`` entropy-code the indices
(coding 2, or 1 with a prior without context tables: fsqdeploy/entropy.py); ``Codec.load(...,
entropy=False)`` keeps fixed-rate files (coding 0).
``decompress`` reads every coding, and refuses an entropy-coded file made with another artifact's prior.

The manifest's hashes are verified before anything is loaded. Backends come from the registry
(fsqdeploy/backends): Codec knows none by name. Inputs are validated at the boundary (shape, dtype,
[0, 1] range, NaN, index range) with the same messages as ``FSQVAE``. Nothing here imports torch,
so an app that embeds the ONNX Runtime codec needs no PyTorch.
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy import backends
from fsqdeploy.artifact import Manifest
from fsqdeploy.backends import REGISTRY, Backend, Runner, get_backend
from fsqdeploy.entropy import Prior
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import check_photo, from_patches, is_grey, pad_to_multiple, to_grey, to_patches
from fsqdeploy.runtime.bitstream import (
    LAYOUT_GRID,
    LAYOUT_PATCHES,
    FsqHeader,
    cells_to_grid,
    check_model,
    file_length,
    grid_to_cells,
    read_fsq,
    write_fsq,
)
from fsqdeploy.runtime.tiles import decode_tiled, encode_tiled
from fsqdeploy.runtime.tokens import codebook_size, indices_to_tokens, tokens_to_indices
from fsqdeploy.validation import check_images, check_indices

log = logging.getLogger("fsqdeploy")

# A spatial codec runs a whole image in one pass up to this many (padded) pixels, 2048 x 2048, and
# in tiles of at most this many pixels (halo included) beyond: the memory of one call stays bounded
# whatever the image size. The first layer's activations of a 128-channel model at this size are
# 128 * 1024 * 1024 floats = 512 MiB.
DEFAULT_MAX_PIXELS = 2048 * 2048
# How many images (or patches) one backend call takes, at most, when no pixel budget applies.
MAX_BATCH = 1024


class Codec:
    def __init__(self, manifest: Manifest, backend: Backend, encoder: Runner, decoder: Runner, precision: str):
        self.manifest, self.art = manifest, manifest.art
        self.backend: str = backend.name
        self.encoder, self.decoder = encoder, decoder
        self.precision = precision
        self.levels: list[int] = list(manifest.levels)
        self.image_size: int = manifest.image_size  # patch models: the patch size; spatial: the training crop
        self.model_id: str = manifest.model_id
        self.spatial: bool = manifest.spatial
        self.downsample: int = manifest.downsample  # f: pixels per latent cell along each axis (spatial)
        self.encoder_halo, self.decoder_halo = _halo_cells(manifest) if self.spatial else (0, 0)
        self.max_pixels: int = DEFAULT_MAX_PIXELS
        self.tile: int | None = None  # core side of a whole-image tile in pixels; None: by max_pixels
        self.prior: Prior | None = artifact_prior(manifest)  # the entropy coder's tables, if ART has them
        self.entropy: bool = self.prior is not None  # compress entropy-codes (load(entropy=False): coding 0)
        # With backend="auto": the faster backends passed over, each with the reason.
        self.auto_skipped: list[tuple[str, str]] = []

    @property
    def code_width(self) -> int:
        return len(self.levels)

    @classmethod
    def load(
        cls,
        art: str | Path | Manifest,
        backend: str = "auto",
        *,
        precision: str = "fp32",
        threads: int | None = None,
        verify: bool = True,
        device: str = "cpu",
        tile: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        entropy: bool = True,
        tune: bool = False,
    ) -> Codec:
        """The artifact ``art`` on ``backend`` (a registry name, or "auto": the fastest backend that
        can run here and finds what it needs in ``art``), activated and ready. ``art`` may be a loaded
        Manifest (bench opens many codecs on one): it is then used as it is, ``verify`` ignored.

        Spatial artifacts only: ``compress``/``decompress`` run an image in one pass when it has at
        most ``max_pixels`` pixels (padded), else in tiles whose window has at most that many;
        ``tile`` (pixels, a multiple of f) sets the tiles' core side instead. Either gives the
        one-pass result; they bound memory only. Patch models encode patch by patch anyway.

        ``entropy``: when ART has a prior, ``compress`` entropy-codes (coding 2 or 1); False writes
        fixed-rate files (coding 0). Either is read back.

        ``tune``: for the CPU runtimes (onnxruntime, openvino; "auto": each installed one) at fp32,
        time their exact graph variants on this machine first unless it has a record already
        (fsqdeploy.backends.tuning); a record, once made, is used on every later load here."""
        manifest = art if isinstance(art, Manifest) else Manifest.load(art, verify=verify, component="codec")
        _check_tiling(manifest, tile, max_pixels)
        if tune and precision == "fp32":
            _tune(manifest, backend, threads)
        codec = cls._select(manifest, backend, precision, threads, device)
        codec.tile, codec.max_pixels = tile, max_pixels
        codec.entropy = bool(entropy) and codec.prior is not None
        return codec

    @classmethod
    def _select(cls, manifest: Manifest, backend: str, precision: str, threads: int | None, device: str) -> Codec:
        if backend == "auto":
            return cls._auto(manifest, precision, threads, device)
        if backend not in REGISTRY:
            raise FSQDeployError(f"codec: unknown backend {backend!r}. Note: use auto or one of {', '.join(REGISTRY)}")
        chosen = get_backend(backend)
        problem = chosen.precision_problem(precision)
        if problem is None and (reason := chosen.unavailable_reason()):
            raise FSQDeployError(f"codec: backend {backend} cannot run here: {reason}")
        problem = problem or chosen.artifact_problem(manifest, precision)
        if problem:
            raise FSQDeployError(f"codec: {problem}")
        return cls._open(manifest, chosen, precision, threads, device)

    @classmethod
    def _auto(cls, manifest: Manifest, precision: str, threads: int | None, device: str) -> Codec:
        skipped: list[tuple[str, str]] = []
        for name in backends.AUTO_ORDER:  # read at call time: register() may have added one
            candidate = REGISTRY[name]
            why = candidate.unavailable_reason() or candidate.artifact_problem(manifest, precision)
            if why is None:
                try:
                    codec = cls._open(manifest, candidate, precision, threads, device)
                except FSQDeployError as e:  # e.g. a provider that is listed but does not load
                    why = str(e)
                else:
                    codec.auto_skipped = skipped
                    passed = "".join(f"; skipped {n}: {r}" for n, r in skipped)
                    log.info("codec: backend auto -> %s%s", name, passed)
                    return codec
            skipped.append((name, why))
        tried = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise FSQDeployError(f"codec: no backend can run '{manifest.art}' at {precision} here ({tried}). "
                             "Note: each reason says what that backend needs")

    @classmethod
    def _open(cls, manifest: Manifest, backend: Backend, precision: str, threads: int | None, device: str) -> Codec:
        encoder, decoder = backend.open(manifest, precision, threads=threads, device=device)
        codec = cls(manifest, backend, encoder, decoder, precision)
        try:
            encoder.activate()
            decoder.activate()
        except FSQDeployError:
            codec.close()
            raise
        return codec

    # -- images <-> indices ------------------------------------------------------------------------
    def encode(self, images: Any) -> Any:
        """Float images in [0, 1] -> int32 indices (a torch tensor for a tensor): [N, 3, S, S] ->
        [N, W] (patch models), or [N, 3, H, W] -> [N, D, H/f, W/f], H and W multiples of f (spatial)."""
        if self.spatial:
            check_images(images, None, "encode", multiple_of=self.downsample)
        else:
            check_images(images, self.image_size, "encode")
        as_torch = type(images).__module__.startswith("torch")
        x = images.detach().cpu().numpy() if as_torch else np.asarray(images)
        chunk = self._batch_for(x.shape[2] * x.shape[3])
        out = self._chunked(self.encoder, "images", x.astype(np.float32, copy=False), "indices", chunk)
        return _like(out, images) if as_torch else out

    def decode(self, indices: Any) -> Any:
        """Integer indices -> float32 images in [0, 1]: [N, W] -> [N, 3, S, S] (patch models), or
        [N, D, h, w] -> [N, 3, h*f, w*f] (spatial)."""
        check_indices(indices, self.levels, "decode", spatial=self.spatial)
        as_torch = type(indices).__module__.startswith("torch")
        idx = indices.detach().cpu().numpy() if as_torch else np.asarray(indices)
        pixels = idx.shape[2] * idx.shape[3] * self.downsample**2 if self.spatial else self.image_size**2
        out = self._chunked(self.decoder, "indices", idx.astype(np.int32, copy=False), "images",
                            self._batch_for(pixels))
        return _like(out, indices) if as_torch else out

    def _batch_for(self, pixels_per_image: int) -> int:
        """Images per backend call: MAX_BATCH patches, or as many whole images as max_pixels allows."""
        if not self.spatial:
            return MAX_BATCH
        return max(1, min(MAX_BATCH, self.max_pixels // max(1, pixels_per_image)))

    def _chunked(self, runner: Runner, name: str, x: np.ndarray, out_name: str, chunk: int = MAX_BATCH
                 ) -> np.ndarray:
        if len(x) <= chunk:
            return runner.infer({name: np.ascontiguousarray(x)})[out_name]
        parts = [runner.infer({name: np.ascontiguousarray(x[i : i + chunk])})[out_name]
                 for i in range(0, len(x), chunk)]
        return np.concatenate(parts)

    # -- images of any size <-> .fsq bitstreams (the C++ fsq::Codec's compress/decompress) ----------
    def encode_image(self, image: np.ndarray) -> tuple[FsqHeader, np.ndarray]:
        """uint8 [H, W, 3] -> the fixed-rate .fsq v2 header (coding 0) and int32 indices [cells, D],
        what the file holds (``encode_file`` picks the coding and also returns the file's bytes).

        Spatial: the image edge-padded on the bottom and right to multiples of f, encoded whole
        (tiled beyond ``max_pixels``, with the same result), one cell per latent position, row-major
        (layout 1). Patch models: the image padded to whole patches, tiled row by row, each patch
        encoded (layout 0)."""
        image = check_photo(image, "compress")
        height, width = image.shape[:2]
        grey = is_grey(image)
        if not self.spatial:
            patches, _, _ = to_patches(image, self.image_size)
            header = FsqHeader.for_patches(self.model_id, height, width, self.image_size, self.levels)
            return replace(header, grey=grey), self.encode(patches)
        header = replace(FsqHeader.for_grid(self.model_id, height, width, self.downsample, self.levels), grey=grey)
        padded = pad_to_multiple(image, self.downsample)
        core = self._core_cells(padded.shape[:2], self.encoder_halo)
        grid = encode_tiled(self.encode, padded, self.downsample, core, self.encoder_halo)
        return header, grid_to_cells(grid)

    def encode_file(self, image: np.ndarray) -> tuple[FsqHeader, np.ndarray, bytes]:
        """``encode_image``'s header and indices, and the whole .fsq file they make: spatial models
        write coding 2 over the artifact's prior (coding 1 with a prior that has no context tables)
        unless ``entropy`` is off or the prior would code this image into more bytes than fixed-rate
        packing does (a photo unlike the training photos can), in which case coding 0: a file is never
        larger than the fixed rate. Patch models write coding 0."""
        header, cells = self.encode_image(image)
        if self.spatial and self.entropy and self.prior is not None:
            coded = header.with_prior(self.prior)
            data = write_fsq(coded, cells, self.prior)
            if len(data) < file_length(self.levels, header.num_cells):
                return coded, cells, data
        return header, cells, write_fsq(header, cells)

    def decode_image(self, header: FsqHeader, indices: np.ndarray,
                     region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """A header and indices this model wrote -> uint8 [H, W, 3]; another model's are refused.
        ``region`` (x, y, width, height in pixels) decodes only that part of the image: the cells
        (or patches) under it and, for a spatial model, the decoder's halo around them, so its
        pixels are the whole decode's (to float32 rounding, as tiling is) at a fraction of the work."""
        check_model(header, self.model_id, self.levels)
        layout, cell = (LAYOUT_GRID, self.downsample) if self.spatial else (LAYOUT_PATCHES, self.image_size)
        if (header.layout, header.cell_size) != (layout, cell):
            kinds = {LAYOUT_PATCHES: "pixel patches", LAYOUT_GRID: "pixel latent cells"}
            raise FSQDeployError(
                f"decompress: the file holds {header.cell_size}-{kinds.get(header.layout, 'pixel cells')} "
                f"(layout {header.layout}), the model reads {cell}-{kinds[layout]} (layout {layout}). "
                "Note: decompress with the model that compressed it")
        if np.shape(indices) != (header.num_cells, len(self.levels)):
            raise FSQDeployError(f"decompress: indices have shape {list(np.shape(indices))}, the header's "
                                 f"{header.grid_rows}x{header.grid_cols} grid needs [{header.num_cells}, "
                                 f"{len(self.levels)}]. Note: pass the indices read_fsq returned with it")
        x, y, width, height = check_region(header, region)
        if not self.spatial:  # the patches under the region, each decoded alone as always
            p = self.image_size
            rows, cols = slice(y // p, -(-(y + height) // p)), slice(x // p, -(-(x + width) // p))
            under = np.asarray(indices).reshape(header.grid_rows, header.grid_cols, -1)[rows, cols]
            n_rows, n_cols = under.shape[:2]
            image = from_patches(self.decode(under.reshape(n_rows * n_cols, -1)), n_rows, n_cols, n_rows * p,
                                 n_cols * p)
            top, left = rows.start * p, cols.start * p
        else:  # the cells under the region widened by the decoder's halo: a window decoded as the whole image is
            grid, f, halo = cells_to_grid(header, indices), self.downsample, self.decoder_halo
            r0, r1 = max(0, y // f - halo), min(grid.shape[2], -(-(y + height) // f) + halo)
            c0, c1 = max(0, x // f - halo), min(grid.shape[3], -(-(x + width) // f) + halo)
            window = np.ascontiguousarray(grid[:, :, r0:r1, c0:c1])
            core = self._core_cells(((r1 - r0) * f, (c1 - c0) * f), halo)
            top, left = r0 * f, c0 * f
            keep = (y - top, y - top + height, x - left, x - left + width)  # tiles of the halo alone are skipped
            image = decode_tiled(self.decode, window, f, core, halo, keep)
        image = image[y - top : y - top + height, x - left : x - left + width]
        # A grey image comes back grey: the RGB decoder leaves tints of a few levels on it.
        return to_grey(image) if header.grey else image

    def _core_cells(self, padded_hw: tuple[int, int], halo: int) -> int:
        """The side of a tile's core, in latent cells, for a padded image of ``padded_hw`` pixels:
        ``tile`` when set; else the whole image when it fits ``max_pixels`` (one pass), else the
        largest core whose window (the core and ``halo`` cells on each side) fits max_pixels."""
        f = self.downsample
        if self.tile is not None:
            return self.tile // f
        height, width = padded_hw
        if height * width <= self.max_pixels:
            return max(height, width) // f
        return max(1, math.isqrt(self.max_pixels) // f - 2 * halo)  # _check_tiling: at least 1

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 [H, W, 3] -> the whole .fsq file (docs/bitstream.md)."""
        return self.encode_file(image)[2]

    def decompress(self, data: bytes, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The bytes of an .fsq file this model wrote (either coding) -> uint8 [H, W, 3], or only
        ``region`` (x, y, width, height) of it (``decode_image``)."""
        return self.decode_image(*read_fsq(data, self.prior), region=region)

    # -- images of any size <-> token grids (runtime/tokens.py, docs/tokens.md) -----------------------
    @property
    def cell_size(self) -> int:
        """Pixels a token covers along each axis: f (spatial) or the patch size (patch models)."""
        return self.downsample if self.spatial else self.image_size

    def tokenize(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] (or grey [H, W]), any size -> int64 tokens [ceil(H/c), ceil(W/c)] with
        c = ``cell_size``: one per latent cell (or patch) of the image padded as ``compress`` pads it."""
        codebook_size(self.levels, "tokenize")  # refused before the encoder runs
        header, cells = self.encode_image(image)
        tokens = indices_to_tokens(cells, self.levels, component="tokenize")
        return tokens.reshape(header.grid_rows, header.grid_cols)

    def detokenize(self, tokens: Any, size: tuple[int, int] | None = None, grey: bool = False) -> np.ndarray:
        """Integer tokens [rows, cols] -> uint8 [H, W, 3]. ``size`` (H, W) crops to the image that was
        tokenized (default: the whole rows x cols cells); ``grey`` returns equal channels, as a grey
        .fsq file decodes."""
        header = self.token_header(tuple(np.shape(tokens)), size, grey)
        cells = tokens_to_indices(tokens, self.levels, component="detokenize")
        return self.decode_image(header, cells.reshape(header.num_cells, -1))

    def token_header(self, shape: tuple[int, ...], size: tuple[int, int] | None = None, grey: bool = False
                     ) -> FsqHeader:
        """The .fsq header of a token grid of ``shape`` decoded at ``size`` (``detokenize``'s
        arguments); one clear line where they do not fit together."""
        if len(shape) != 2 or 0 in shape:
            raise FSQDeployError(f"detokenize: tokens must be a grid [rows, cols], got shape {list(shape)}")
        c, (rows, cols) = self.cell_size, shape
        height, width = (int(v) for v in size) if size is not None else (rows * c, cols * c)
        if not (height >= 1 and width >= 1 and (-(-height // c), -(-width // c)) == (rows, cols)):
            raise FSQDeployError(f"detokenize: a {height}x{width} image has {-(-height // c)}x{-(-width // c)} "
                                 f"cells of {c} pixels, the tokens are {rows}x{cols}. Note: pass the size "
                                 "the image had when it was tokenized")
        sized = FsqHeader.for_grid if self.spatial else FsqHeader.for_patches
        return replace(sized(self.model_id, height, width, c, self.levels), grey=grey)

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        self.encoder.deactivate()
        self.decoder.deactivate()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Codec({str(self.art)!r}, backend={self.backend!r}, precision={self.precision!r})"


def check_region(header: FsqHeader, region: tuple[int, int, int, int] | None, source: str = ""
                 ) -> tuple[int, int, int, int]:
    """``region`` (x, y, width, height), checked to lie inside the header's image (``source``, e.g. a
    file's name, says whose in the message); None: all of it."""
    full = (0, 0, header.image_width, header.image_height)
    if region is None:
        return full
    try:
        x, y, width, height = (operator.index(v) for v in region)
    except (TypeError, ValueError):
        raise FSQDeployError(f"decompress: region {region!r} is not four integers x, y, width, height") from None
    if x < 0 or y < 0 or width < 1 or height < 1 or x + width > full[2] or y + height > full[3]:
        raise FSQDeployError(f"decompress: region {x},{y},{width},{height} (x, y, width, height) is not inside the "
                             f"{full[2]}x{full[3]} image{source}. Note: pass x + width <= {full[2]} and y + height <= "
                             f"{full[3]}, width and height at least 1")
    return x, y, width, height


def artifact_prior(manifest: Manifest) -> Prior | None:
    """The prior ART's manifest names in its ``prior`` record (ART/prior.json), or None without one."""
    record = manifest.section("prior")
    if not record:
        return None
    name = record.get("file")
    if not isinstance(name, str) or not manifest.has(name):
        raise FSQDeployError(f"codec: '{manifest.art}' names a prior file {name!r} its manifest does not list. "
                             "Note: export again")
    prior = Prior.load(manifest.path(name))
    if record.get("sha256") != prior.sha256.hex() or list(prior.levels) != list(manifest.levels):
        raise FSQDeployError(f"codec: '{manifest.art}' has a prior that is not the one its manifest names "
                             "(sha256 or levels differ). Note: export again")
    return prior


def _like(array: np.ndarray, reference: Any) -> Any:
    import torch

    return torch.from_numpy(array).to(reference.device)


def _halo_cells(manifest: Manifest) -> tuple[int, int]:
    """(encoder halo, decoder halo) in latent cells, from the manifest's "tiling" record, or from
    fsqdeploy.config.tile_halos for an artifact exported before the record existed."""
    f = manifest.downsample
    record = manifest.section("tiling")
    try:
        encoder_px, decoder = int(record["encoder_halo"]), int(record["decoder_halo"])
    except (KeyError, TypeError, ValueError):
        from fsqdeploy.config import ModelConfig, tile_halos

        n = max(1, f.bit_length() - 1)  # f = 2 ** len(channels); only arch and f matter to the halos
        encoder_px, decoder = tile_halos(ModelConfig(arch="conv", image_size=f, channels=(1,) * n))
    # Windows start on whole cells, so the encoder's pixel halo is rounded up to whole cells.
    return -(-max(0, encoder_px) // f), max(0, decoder)


def _tune(manifest: Manifest, backend: str, threads: int | None) -> None:
    from fsqdeploy.backends.tuning import FAMILIES, tune_artifact

    runtimes = [backend] if backend in FAMILIES else list(FAMILIES) if backend == "auto" else []
    for name in runtimes:
        if get_backend(name).unavailable_reason() is None:
            tune_artifact(manifest, name, threads)


def _check_tiling(manifest: Manifest, tile: int | None, max_pixels: int) -> None:
    if not manifest.spatial:
        return  # patch models encode patch by patch: the options do not apply
    f = manifest.downsample
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < f or tile % f):
        raise FSQDeployError(f"codec: tile {tile!r} is not a positive multiple of {f} pixels (the model's "
                             f"downsampling factor). Note: pass e.g. {16 * f}, or leave it unset")
    # The smallest window: one core cell and the wider halo on each side.
    side = (1 + 2 * max(_halo_cells(manifest))) * f
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < side * side:
        raise FSQDeployError(f"codec: max_pixels {max_pixels!r} is below the smallest tile window, {side}x{side} "
                             f"pixels (one {f}-pixel cell and the model's halo on each side). "
                             f"Note: the default is {DEFAULT_MAX_PIXELS}")
