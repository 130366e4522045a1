"""The runtime commands: ``bench``, ``compress``, ``decompress``, ``info``, ``tokenize``, ``detokenize``,
``tune``.

Each command is a thin Typer function: it parses its options into the runtime's own types, calls
one runtime function and prints. Heavy modules are imported inside the functions so ``fsqdeploy
--help`` stays fast. User errors are FSQDeployError (one line, exit 2, printed by fsqdeploy.cli);
a failed bench gate prints which and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fsqdeploy.backends import REGISTRY
from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    from fsqdeploy.runtime.tokens import TokenFile

ArtArgument = Annotated[Path, typer.Argument(help="Artifact directory written by fsqdeploy export.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", help="CPU threads per backend "
                                                   "(default: every core this process may use).")]
BackendOption = Annotated[str, typer.Option(help=f"auto (the fastest that runs here) | {' | '.join(REGISTRY)}")]
TileOption = Annotated[int, typer.Option(
    "--tile", help="Spatial (conv) models: run each image in tiles of N x N pixels (a multiple of the model's "
    "factor f), overlapping by the model's halo, so the result is exactly the one-pass result with bounded "
    "memory. 0: one pass up to 2048 x 2048 pixels, tiles above. Patch models ignore it.")]


def bench(
    arts: Annotated[list[Path], typer.Argument(help="Artifact directories written by fsqdeploy export; several: "
                                                "each benched in turn, on the same images (see --rd-plot).")],
    backends: Annotated[str | None, typer.Option(
        "--backends", help=f"Comma-separated backend[:precision] of {', '.join(REGISTRY)}, e.g. "
        "torch,onnxruntime,openvino:bf16; torch:cuda is PyTorch on the GPU (default: every backend at fp32, "
        "plus torch:cuda where PyTorch sees a GPU; those that cannot run here are skipped rows).")] = None,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes to time.")] = "1,64,256",
    data: Annotated[str | None, typer.Option(
        "--data", help="sample | synthetic | folder:DIR | cifar10:DIR (default: the export's parity data).")] = None,
    images: Annotated[int | None, typer.Option(
        "--images", help="Test images in the fidelity set (default: as many as the export's parity gate ran).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before each measurement.")] = 3,
    iters: Annotated[int | None, typer.Option("--iters", help="Timed calls per measurement.")] = None,
    seconds: Annotated[float | None, typer.Option(
        "--seconds", help="Time per measurement instead of --iters (default 1 s, at least 5 calls).")] = None,
    threads: ThreadsOption = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here (docs/bench.md).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG: latency vs batch size, "
                                              "rate-distortion vs JPEG/WebP.")] = None,
    min_index_agreement: Annotated[float, typer.Option(
        "--min-index-agreement", help="Gate for fp32 rows: share of indices equal to PyTorch's.")] = 1.0,
    max_decoder_error: Annotated[float, typer.Option(
        "--max-decoder-error", help="Gate for fp32 rows: max abs pixel error decoding the reference indices.")]
    = 1e-5,
    min_index_agreement_reduced: Annotated[float, typer.Option(
        "--min-index-agreement-reduced", help="Gate for fp16/bf16/int8 rows: share of equal indices.")] = 0.99,
    min_psnr_vs_reference: Annotated[float, typer.Option(
        "--min-psnr-vs-reference", help="Gate for fp16/bf16/int8 rows: round-trip dB vs the PyTorch round trip.")]
    = 40.0,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines",
                                            help="Compare with JPEG and WebP at the codec's bytes.")] = True,
    tile_size: Annotated[int, typer.Option("--tile-size", help="Also compare on tiles of this size "
                                           "(0: off), tiled through the codec.")] = 256,
    tile_images: Annotated[int, typer.Option("--tile-images", help="Tiles to compare on.")] = 8,
    tile_data: Annotated[str, typer.Option("--tile-data", help="Data spec for the tiles.")] = "sample",
    photo_data: Annotated[str | None, typer.Option(
        "--photo-data", help="Whole photos, coded at their own size by compress: sample (its held-out photos) | "
        "folder:DIR (its files the model did not train on) (default: --data when it is one of these, else "
        "sample).")] = None,
    photo_images: Annotated[int | None, typer.Option(
        "--photo-images", help="Use the first N held-out photos (default: all; 0: no photo comparison).")] = None,
    photo_size: Annotated[str, typer.Option(
        "--photo-size", help="Spatial (conv) models: also time one whole image of WxH pixels at batch 1 "
        "(padded to multiples of f), what compress runs per photo; 0: off.")] = "768x512",
    rd_plot: Annotated[Path | None, typer.Option(
        "--rd-plot", help="Write a PNG: every ART's whole-photo PSNR and SSIM against bits per pixel, beside "
        "JPEG and WebP quality sweeps on the same photos.")] = None,
) -> None:
    """Time every backend (encode, decode, roundtrip) and compare it with the PyTorch FP32 reference;
    compare the codec with JPEG and WebP at no more bytes, on patches and on whole photos."""
    from fsqdeploy.runtime.bench import (
        BenchSettings,
        Gates,
        default_backends,
        parse_backends,
        parse_batch_sizes,
        parse_photo_size,
        report_set,
        run_benches,
    )
    from fsqdeploy.runtime.bench.rdplot import write_rd_plot
    from fsqdeploy.runtime.bench.report import print_report, write_plot

    for path in (json_path, plot, rd_plot):
        _check_output_path(path)
    if plot is not None and len(arts) > 1:
        raise FSQDeployError("bench: --plot draws one artifact's latency. Note: with several ARTs use --rd-plot")
    if rd_plot is not None and (not baselines or photo_images == 0):
        raise FSQDeployError("bench: --rd-plot needs the whole-photo comparison. "
                             "Note: drop --no-baselines / --photo-images 0")
    settings = BenchSettings(
        backends=parse_backends(backends) if backends is not None else default_backends(),
        batch_sizes=parse_batch_sizes(batch_sizes), data=data, images=images, warmup=warmup, iters=iters,
        seconds=seconds, threads=threads,
        gates=Gates(min_index_agreement=min_index_agreement, max_decoder_error=max_decoder_error,
                    min_index_agreement_reduced=min_index_agreement_reduced,
                    min_psnr_vs_reference=min_psnr_vs_reference),
        baselines=baselines, tile_size=tile_size, tile_images=tile_images, tile_data=tile_data,
        photo_data=photo_data, photo_images=photo_images, sweep=rd_plot is not None,
        photo_size=parse_photo_size(photo_size),
    )
    reports = run_benches(list(arts), settings, progress=lambda msg: typer.echo(msg, err=True))
    for report in reports:
        print_report(report)
    if json_path is not None:
        from fsqdeploy.fileio import write_json_atomic

        write_json_atomic(json_path, reports[0] if len(reports) == 1 else report_set(reports))
        typer.echo(f"wrote {json_path}")
    if plot is not None:
        write_plot(reports[0], plot)
        typer.echo(f"wrote {plot}")
    if rd_plot is not None:
        write_rd_plot(reports, rd_plot)
        typer.echo(f"wrote {rd_plot}")
    if not all(report["gates"]["passed"] for report in reports):
        raise typer.Exit(1)


def _check_output_path(path: Path | None) -> None:
    """Refuse an output path that cannot be written before the (long) run, not after it."""
    if path is not None and path.is_dir():
        raise FSQDeployError(f"bench: '{path}' is a directory. Note: pass a file path, e.g. bench.json")


def compress(
    images: Annotated[list[Path], typer.Argument(
        help="Images to compress (PNG, JPEG, WebP, TIFF, ...), or directories: every PNG/JPEG under them.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Artifact directory from fsqdeploy export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="OUT.fsq for one image; a directory for several or "
                                      "for a directory (its tree is kept).")],
    backend: BackendOption = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite existing .fsq files.")] = False,
    tile: TileOption = 0,
    fixed_rate: Annotated[bool, typer.Option(
        "--fixed-rate", help="Write fixed-rate files (coding 0) even when the artifact has a prior "
        "(default: entropy-code with it: coding 2 with its context tables, else 1).")] = False,
) -> None:
    """Encode images into .fsq files: whole (edge-padded to multiples of f) for spatial models, in
    model-sized patches for patch models; entropy-coded when the artifact has a prior."""
    from fsqdeploy.images import IMAGE_SUFFIXES, read_image
    from fsqdeploy.runtime.codec import Codec
    from fsqdeploy.runtime.compress import compress_file

    images, targets = _targets(_inputs(images, IMAGE_SUFFIXES, "images", "compress"), out, ".fsq", force)
    # Refuse a bad input before any file is written; each image is read again when its turn comes,
    # so memory holds one image, not all of them.
    for image in images:
        read_image(image)
    with Codec.load(model, backend, tile=tile or None, entropy=not fixed_rate) as codec:
        for image, target in zip(images, targets):
            header = compress_file(codec, image, target)
            size = target.stat().st_size
            pixels = header.image_height * header.image_width
            cells = (f"latent grid {header.grid_rows}x{header.grid_cols}" if header.spatial
                     else f"{header.num_patches} patches")
            print(f"{image} -> {target}: {header.image_width}x{header.image_height}, {cells}, "
                  f"{size} bytes ({8 * size / pixels:.3f} bpp) [{codec.backend}]")


def decompress(
    files: Annotated[list[Path], typer.Argument(
        help=".fsq files to decompress, or directories: every .fsq under them.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The artifact directory that compressed them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="IMG.png for one file; a directory for several or for "
                                      "a directory (its tree is kept).")],
    backend: BackendOption = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite existing images.")] = False,
    tile: TileOption = 0,
    region: Annotated[str | None, typer.Option(
        "--region", metavar="X,Y,W,H", help="Decode only this part of each image (pixels: left, top, width, "
        "height): the cells under it and the decoder's halo, so its pixels are the whole decode's at a fraction "
        "of the work.")] = None,
) -> None:
    """Unpack .fsq files (version 1 or 2), decode them and crop back to the original size."""
    from fsqdeploy.artifact import Manifest
    from fsqdeploy.runtime.bitstream import load_fsq
    from fsqdeploy.runtime.codec import Codec, artifact_prior, check_region
    from fsqdeploy.runtime.compress import write_image

    box = _parse_region(region)
    files, targets = _targets(_inputs(files, (".fsq",), ".fsq files", "decompress"), out, ".png", force)
    # Refuse a truncated or corrupt file (or one coded with another prior) before loading the model.
    prior = artifact_prior(Manifest.load(model, component="decompress"))
    streams = [load_fsq(f, prior) for f in files]
    for f, (header, _) in zip(files, streams):  # every file must hold the region before an image is written
        check_region(header, box, f" of '{f}'")
    with Codec.load(model, backend, tile=tile or None) as codec:
        for f, (header, indices), target in zip(files, streams, targets):
            image = write_image(target, codec.decode_image(header, indices, box), header.grey)
            print(f"{f} -> {target}: {image.shape[1]}x{image.shape[0]} [{codec.backend}]")


def _parse_region(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(p.isdigit() for p in parts) or int(parts[2]) < 1 or int(parts[3]) < 1:
        raise FSQDeployError(f"decompress: --region {text!r} is not X,Y,W,H: four whole numbers of pixels, left, "
                             "top, width and height (width and height at least 1). Note: e.g. --region 0,0,512,512")
    x, y, w, h = (int(p) for p in parts)
    return x, y, w, h


def info(
    files: Annotated[list[Path], typer.Argument(
        help=".fsq files, or directories: every .fsq under them.")],
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="The artifact that wrote them: needed to read an entropy-coded file (its prior).")]
    = None,
) -> None:
    """Check .fsq files whole (CRCs, the payload; with --model an entropy-coded one decoded) and print
    each header: image, grid, levels, model, coding, payload, as fsq-cpp info FILE prints it."""
    from fsqdeploy.artifact import Manifest
    from fsqdeploy.runtime.bitstream import describe_fsq, load_fsq
    from fsqdeploy.runtime.codec import artifact_prior

    prior = artifact_prior(Manifest.load(model, component="info")) if model is not None else None
    paths = [f for f, _, _ in _inputs(files, (".fsq",), ".fsq files", "info")]
    described = []
    for path in paths:  # every file is read before anything is printed: a bad one is the only line
        header, _ = load_fsq(path, prior)
        described.append(describe_fsq(path, header, path.stat().st_size))
    print("\n\n".join(described))


def tokenize(
    images: Annotated[list[Path], typer.Argument(
        help="Images to tokenize (PNG, JPEG, WebP, TIFF, ...), or directories: every PNG/JPEG under them.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Artifact directory from fsqdeploy export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="OUT.npz: one token file; any other path: a directory "
                                      "of token shards that --resume continues (docs/tokens.md).")],
    size: Annotated[int, typer.Option(
        "--size", help="Resize each image (bicubic) so its shorter side is S and cut out the centre S x S "
        "square (S a multiple of the model's cell size); 0: every image at its own size, edge-padded to whole "
        "cells, which must then all give the same token grid.")] = 0,
    backend: BackendOption = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing OUT.npz, or replace the shards in OUT.")] = False,
    resume: Annotated[bool, typer.Option(
        help="OUT a directory: continue the same tokenization where a killed run stopped (or start it); its "
        "finished shards are checked and kept.")] = False,
    shard_size: Annotated[int | None, typer.Option(
        "--shard-size", help="OUT a directory: images per shard file (default 10000).")] = None,
    part: Annotated[str | None, typer.Option(
        "--part", metavar="I/N", help="OUT a directory: code only shards k with k % N == I, so N processes "
        "(machines, GPUs) share one tokenization; each resumes, and OUT is whole when all N have run.")] = None,
    tile: TileOption = 0,
    workers: Annotated[int, typer.Option(
        "--workers", help="Threads reading the images ahead of the encoder (0: in the encoding thread); any "
        "count writes the same file.")] = 1,
) -> None:
    """Encode images into token files: an int64 token per latent cell (or patch), the cell's mixed-radix
    index, tokens [N, rows, cols] for training a model on the codes (docs/tokens.md). OUT.npz is one file;
    a directory gets shards, so a large set survives a kill."""
    import numpy as np

    from fsqdeploy.images import IMAGE_SUFFIXES
    from fsqdeploy.runtime.codec import Codec
    from fsqdeploy.runtime.token_shards import DEFAULT_SHARD_SIZE, tokenize_shards
    from fsqdeploy.runtime.tokens import codebook_size, save_tokens, storage_dtype, tokenize_files

    one_file = out.suffix.lower() == ".npz"
    sharding = [flag for flag, given in [("resume", resume), ("shard-size", shard_size is not None),
                                         ("part", part is not None)] if given]
    if one_file and sharding:
        raise FSQDeployError(f"tokenize: --{sharding[0]} writes shards into a directory, and '{out}' is one .npz "
                             "file. Note: pass -o DIR")
    i, slash, n = (part or "0/1").partition("/")
    if not (slash and i.strip().isdigit() and n.strip().isdigit()):
        raise FSQDeployError(f"tokenize: --part {part!r} is not I/N. Note: e.g. --part 0/4 to --part 3/4")
    if one_file and out.is_dir():
        raise FSQDeployError(f"tokenize: --out '{out}' is a directory; a token file's path ends in .npz")
    if one_file and out.exists() and not force:
        raise FSQDeployError(f"tokenize: '{out}' exists. Note: pass --force to overwrite")
    inputs = _inputs(images, IMAGE_SUFFIXES, "images", "tokenize")
    first: dict[str, Path] = {}
    for path, name, _ in inputs:
        if name.as_posix() in first:
            raise FSQDeployError(f"tokenize: '{first[name.as_posix()]}' and '{path}' have the same name "
                                 f"'{name.as_posix()}'. Note: pass their directory instead, or rename one")
        first[name.as_posix()] = path
    with Codec.load(model, backend, tile=tile or None, entropy=False) as codec:
        def progress(done: int, total: int) -> None:  # a dataset takes a while: say how far it is, on stderr
            if done % 100 == 0 and done < total:
                typer.echo(f"tokenize: {done} of {total} images", err=True)

        files, names = list(first.values()), tuple(first)
        vocabulary = codebook_size(codec.levels)
        if one_file:
            tf = tokenize_files(codec, files, names, size, lambda done: progress(done, len(files)), workers)
            save_tokens(out, tf)
            shape, where, used = list(tf.tokens.shape), f"{out}: tokens", len(np.unique(tf.tokens))
        else:
            written = tokenize_shards(codec, files, names, out, size=size, shard_size=shard_size or
                                      DEFAULT_SHARD_SIZE, resume=resume, force=force, part=(int(i), int(n)),
                                      workers=workers, progress=progress,
                                      warn=lambda line: typer.echo(line, err=True))
            kept = f", {written.kept} kept from the earlier run" if written.kept else ""
            shape, used = [written.images, *written.grid], written.distinct
            shards = f"part {part}: {written.shards} of {written.of}" if part else str(written.shards)
            where = f"{out}/ ({shards} shard{'s' * (written.of > 1)}{kept}): tokens"
        print(f"{shape[0]} image{'s' * (shape[0] > 1)} -> {where} {shape} {storage_dtype(codec.levels)}, "
              f"{(vocabulary - 1).bit_length()} bits each, {used:,} distinct of {vocabulary:,} codes, "
              f"{codec.cell_size}x{codec.cell_size} pixels per token [{codec.backend}]")


def detokenize(
    tokens_file: Annotated[Path, typer.Argument(
        metavar="TOKENS", help="A token file from fsqdeploy tokenize (.npz), a directory of its token shards, "
        "or an integer .npy grid [rows, cols] or [N, rows, cols] (a generative model's sample, say).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The artifact directory the tokens belong to.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="IMG.png for one image; a directory for several "
                                      "(each image's name from the token file, or 000000.png, ...).")],
    backend: BackendOption = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite existing images.")] = False,
    tile: TileOption = 0,
) -> None:
    """Decode token grids back into images: a token file's at the sizes it records, a bare grid whole."""
    from fsqdeploy.runtime.codec import Codec
    from fsqdeploy.runtime.compress import IMAGE_FORMATS, write_image
    from fsqdeploy.runtime.token_shards import token_files
    from fsqdeploy.runtime.tokens import tokens_to_indices

    with Codec.load(model, backend, tile=tile or None) as codec:
        # Every file is checked (another model's, a grid that does not fit its size, a bad token) before
        # the first image is written; then decoded a file at a time, so shards are never held all at once.
        names: list[str] = []
        for tf in token_files(tokens_file):
            if tf.model_id is not None and tf.model_id != codec.model_id:
                raise FSQDeployError(f"detokenize: '{tokens_file}' holds tokens of model {tf.model_id}, '{model}' "
                                     f"is model {codec.model_id}. Note: detokenize with the artifact that tokenized "
                                     "them")
            for size, g in zip(_sizes(tf), tf.grey):
                codec.token_header(tf.tokens.shape[1:], size, bool(g))
            tokens_to_indices(tf.tokens, codec.levels, component="detokenize")
            names += tf.names
        _, targets = _targets([(tokens_file, Path(name), len(names) > 1) for name in names], out, ".png", force)
        if targets == [out] and out.suffix.lower() not in IMAGE_FORMATS:
            raise FSQDeployError(f"detokenize: cannot write '{out.suffix}' images. Note: use IMG.png, or an "
                                 "existing directory")
        i = 0
        for tf in token_files(tokens_file):
            for tokens, size, grey in zip(tf.tokens, _sizes(tf), tf.grey):
                image = codec.detokenize(tokens, size, bool(grey))
                write_image(targets[i], image, bool(grey))
                print(f"{tokens_file}[{i}] -> {targets[i]}: {image.shape[1]}x{image.shape[0]} [{codec.backend}]")
                i += 1


def _sizes(tf: TokenFile) -> list[tuple[int, int] | None]:
    """Each image's recorded (height, width); None for a bare grid, which decodes whole."""
    return [None if tf.model_id is None else (int(h), int(w)) for h, w in tf.image_sizes]


def _inputs(paths: list[Path], suffixes: tuple[str, ...], what: str, component: str) -> list[tuple[Path, Path, bool]]:
    """(file, its output name under --out without suffix, whether it came from a directory) per input
    file: a file as given (its stem), a directory as every file under it with one of ``suffixes``
    (recursively, any case; the output keeps its path relative to the directory)."""
    from fsqdeploy.fileio import files_under

    found: list[tuple[Path, Path, bool]] = []
    for path in paths:
        if not path.is_dir():
            found.append((path, Path(path.stem), False))
            continue
        inside = files_under(path, suffixes)
        if not inside:
            raise FSQDeployError(f"{component}: no {what} in directory '{path}' (looked for {', '.join(suffixes)}, "
                                 "any case, recursively)")
        found += [(p, p.relative_to(path).with_suffix(""), True) for p in inside]
    return found


def _targets(inputs: list[tuple[Path, Path, bool]], out: Path, suffix: str,
             force: bool) -> tuple[list[Path], list[Path]]:
    """(input files, one output path each): ``out`` itself for one file given by name, else
    ``out/<name><suffix>`` (a directory's files keep their relative paths under it)."""
    files = [f for f, _, _ in inputs]
    if len(inputs) == 1 and not inputs[0][2] and not out.is_dir():
        targets = [out]
    else:
        if out.exists() and not out.is_dir():
            raise FSQDeployError(f"--out '{out}' must be a directory when several inputs or a directory are given")
        targets = [out / name.parent / (name.name + suffix) for _, name, _ in inputs]
        first: dict[Path, Path] = {}
        for f, t in zip(files, targets):
            if t in first:
                raise FSQDeployError(f"'{first[t]}' and '{f}' would both be written to '{t}'. Note: pass them in "
                                     "separate runs with separate --out directories")
            first[t] = f
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise FSQDeployError(f"'{existing[0]}' exists. Note: pass --force to overwrite")
    return files, targets


def tune(
    art: ArtArgument,
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated CPU runtimes to tune: onnxruntime, "
                                          "openvino (default: those installed).")] = "",
    threads: ThreadsOption = None,
    force: Annotated[bool, typer.Option("--force", help="Measure again even where this machine has a record.")]
    = False,
) -> None:
    """Time every exact graph variant (and, without --threads, the thread count) of ART's FP32 graphs on
    this machine and keep the fastest that computes what the exported graphs do; every later load here
    uses it (fsqdeploy.backends.tuning)."""
    import importlib.util

    from fsqdeploy.artifact import Manifest
    from fsqdeploy.backends.tuning import FAMILIES, tune_artifact

    if threads is not None and threads < 1:
        raise FSQDeployError(f"tune: --threads must be at least 1, got {threads}")
    names = [b.strip() for b in backends.split(",") if b.strip()] or [
        name for name in FAMILIES if importlib.util.find_spec(name) is not None]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise FSQDeployError(f"tune: {unknown[0]!r} is not a CPU runtime with graph variants. "
                             f"Note: use {' or '.join(FAMILIES)}")
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise FSQDeployError(f"tune: {missing[0]} is not installed. Note: pip install 'fsqdeploy[cpu]'")
    manifest = Manifest.load(art, verify=True, component="tune")
    for name in names:
        record = tune_artifact(manifest, name, threads, force=force)
        how = "cached record" if record["cached"] else f"measured in {record['seconds']:.1f} s"
        for graph, chosen in record["choice"].items():
            variant = "+".join(chosen["rewrites"]) or "no rewrite"
            hint = f", {chosen['hint']} hint" if chosen.get("hint") else ""
            typer.echo(f"{name} {graph}: {variant}, {chosen['threads']} thread(s){hint}: {chosen['ms']:.2f} ms vs "
                       f"{chosen['untuned_ms']:.2f} ms untuned ({chosen['untuned_ms'] / chosen['ms']:.2f}x; "
                       f"{len(chosen['candidates'])} candidates, {how})")
