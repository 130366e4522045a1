"""Whole-image coding with a spatial (conv) model: one pass, tiles with a halo that give exactly the
one-pass result, .fsq v2 latent-grid files, and every bad input refused in one line.

The tiling tests run FSQVAE itself (no artifact); the Codec tests run a torch-only artifact
(checkpoint + manifest, no graphs), so they hold without the ONNX export.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsqdeploy import FSQDeployError
from fsqdeploy.artifact import ARTIFACT_FORMAT, ARTIFACT_VERSION, CHECKPOINT_DIR, file_entry, io_contract
from fsqdeploy.backends import get_backend
from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import CONFIG_FILE, ModelConfig, tile_halos
from fsqdeploy.fileio import write_json_atomic
from fsqdeploy.images import float_to_uint8, hwc_uint8_to_chw, pad_to_multiple
from fsqdeploy.model import FSQVAE, WEIGHTS_FILE, to_grid, to_vectors
from fsqdeploy.runtime.bitstream import LAYOUT_GRID, cells_to_grid, load_fsq, read_fsq
from fsqdeploy.runtime.codec import Codec
from fsqdeploy.runtime.compress import compress_file, decompress_file
from fsqdeploy.runtime.tiles import decode_tiled, decode_tiled_float, encode_tiled, spans

LEVELS = [8, 5, 5, 5]


def conv_model(channels: tuple[int, ...], seed: int = 0, linear_path: bool = False) -> FSQVAE:
    """A tiny conv codec with random weights and BatchNorm statistics from a few train-mode passes."""
    cfg = ModelConfig(arch="conv", image_size=32, channels=channels, latent_dim=4, levels=list(LEVELS),
                      temperature=0.1, linear_path=linear_path)
    torch.manual_seed(seed)
    model = FSQVAE(cfg).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64))
    return model.eval()


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    import skimage.data

    img = skimage.data.astronaut()
    y, x = (seed * 37) % (512 - h), (seed * 53) % (512 - w)
    return np.ascontiguousarray(img[y : y + h, x : x + w])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tiny models run hundreds of ~1 ms calls; on a loaded 2-core machine a second intra-op
    thread makes each call wait for a core (seen: 80 s instead of 1 s), and one thread is as fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=[((8, 8, 8), False), ((8, 16), False), ((8, 8, 8), True)],
                ids=["f8", "f4", "f8-linear-path"])
def model(request) -> FSQVAE:
    """The tiling halos must hold with and without the linear path (it sees only its own cell)."""
    return conv_model(*request.param[:1], linear_path=request.param[1])


def torch_encode(model: FSQVAE):
    return lambda x: model.encode(torch.from_numpy(x)).numpy().astype(np.int32)


def torch_decode(model: FSQVAE):
    return lambda idx: model.decode(torch.from_numpy(idx)).numpy()


# --- tiling, against the model itself ------------------------------------------------------------


def test_spans_cover_every_cell_once() -> None:
    assert spans(10, 4, 3) == [(0, 7, 0, 4), (1, 10, 4, 8), (5, 10, 8, 10)]
    assert spans(3, 8, 2) == [(0, 3, 0, 3)]  # a core larger than the image: one pass
    for length, core, halo in ((1, 1, 0), (17, 5, 4), (64, 7, 3)):
        cells = [c for _, _, start, end in spans(length, core, halo) for c in range(start, end)]
        assert cells == list(range(length))
        assert all(0 <= w0 <= c0 < c1 <= w1 <= length and c0 - w0 <= halo and w1 - c1 <= halo
                   for w0, w1, c0, c1 in spans(length, core, halo))


@pytest.mark.parametrize("core", [1, 2, 3, 5])
def test_tiled_encode_equals_one_pass(model, core) -> None:
    f = model.config.downsample
    enc_halo = tile_halos(model.config)[0] // f
    image = photo(9 * f, 8 * f, seed=1)
    one_pass = torch_encode(model)(hwc_uint8_to_chw(image[None]))
    tiled = encode_tiled(torch_encode(model), image, f, core, enc_halo)
    assert tiled.shape == (1, 4, 9, 8) and tiled.dtype == np.int32
    assert np.array_equal(tiled, one_pass)


@pytest.mark.parametrize("core", [1, 2, 3])
def test_tiled_decode_equals_one_pass(model, core) -> None:
    f = model.config.downsample
    dec_halo = tile_halos(model.config)[1]
    grid = torch_encode(model)(hwc_uint8_to_chw(photo(10 * f, 11 * f, seed=2)[None]))
    one_pass = torch_decode(model)(grid)
    tiled = decode_tiled_float(torch_decode(model), grid, f, core, dec_halo)
    assert tiled.shape == one_pass.shape == (1, 3, 10 * f, 11 * f)
    assert np.abs(tiled - one_pass).max() < 1e-5
    assert np.array_equal(decode_tiled(torch_decode(model), grid, f, core, dec_halo),
                          float_to_uint8(one_pass[0].transpose(1, 2, 0)))


def test_a_halo_below_the_receptive_field_shows_seams() -> None:
    """What the halo is for: without it tiles differ from one pass (so the tests above can fail)."""
    model = conv_model((8, 16))
    f = model.config.downsample
    image = photo(9 * f, 8 * f, seed=1)
    one_pass = torch_encode(model)(hwc_uint8_to_chw(image[None]))
    assert not np.array_equal(encode_tiled(torch_encode(model), image, f, 1, 1), one_pass)
    decoded = torch_decode(model)(one_pass)
    assert np.abs(decode_tiled_float(torch_decode(model), one_pass, f, 1, 1) - decoded).max() > 1e-4


# --- the Codec over a spatial artifact (torch backend) -----------------------------------------------


def torch_artifact(path: Path, model: FSQVAE, *, tiling: bool = True, data: str = "synthetic") -> Path:
    """ART with the checkpoint (trained on ``data``, as its config says) and a spatial manifest, no
    graphs: what the torch backend reads."""
    save_model(model, path / CHECKPOINT_DIR, {"data": data})
    cfg = model.config
    files = {f"{CHECKPOINT_DIR}/{n}": file_entry(path / CHECKPOINT_DIR / n) for n in (CONFIG_FILE, WEIGHTS_FILE)}
    manifest = {
        "format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION,
        "model_id": files[f"{CHECKPOINT_DIR}/{WEIGHTS_FILE}"]["sha256"], "arch": "conv",
        "downsample": cfg.downsample, "levels": model.levels, "latent_dim": cfg.latent_dim,
        "code_width": model.code_width, "image_size": cfg.image_size, "stages": cfg.stages,
        "temperature": cfg.temperature, "opset": 18, "io": io_contract(cfg.image_size, model.code_width, spatial=True),
        "files": files,
    }  # fmt: skip
    if tiling:
        enc, dec = tile_halos(cfg)
        manifest["tiling"] = {"encoder_halo": enc, "decoder_halo": dec}
    write_json_atomic(path / "manifest.json", manifest)
    return path


@pytest.fixture(scope="module")
def conv_art(tmp_path_factory) -> tuple[Path, FSQVAE]:
    model = conv_model((8, 8, 8))
    return torch_artifact(tmp_path_factory.mktemp("conv_art"), model), model


@pytest.fixture(scope="module")
def codec(conv_art):
    with Codec.load(conv_art[0], "torch") as c:
        yield c


def test_codec_reads_the_spatial_manifest(codec) -> None:
    assert codec.spatial and codec.downsample == 8 and codec.code_width == 4
    assert (codec.encoder_halo, codec.decoder_halo) == (3, 4)  # 3f pixels = 3 cells, 4 cells


@pytest.mark.parametrize(("h", "w"), [(8, 8), (32, 32), (48, 80), (96, 64)])
def test_encode_decode_shapes_and_reference(codec, conv_art, h, w) -> None:
    x = np.random.default_rng(h + w).random((2, 3, h, w), dtype=np.float32)
    idx = codec.encode(x)
    assert idx.dtype == np.int32 and idx.shape == (2, 4, h // 8, w // 8)
    assert np.array_equal(idx, conv_art[1].encode(torch.from_numpy(x)).numpy())
    images = codec.decode(idx)
    assert images.dtype == np.float32 and images.shape == (2, 3, h, w)
    assert np.abs(images - conv_art[1].decode(torch.from_numpy(idx)).numpy()).max() < 1e-6


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((1, 3, 36, 32), np.float32), "multiples of 8, got 36x32"),
        (np.zeros((1, 3, 4, 8), np.float32), "multiples of 8, got 4x8"),
        (np.zeros((1, 4, 32, 32), np.float32), r"shape \[N, 3, H, W\], got \[1, 4, 32, 32\]"),
        (np.zeros((32, 32, 3), np.float32), r"shape \[N, 3, H, W\]"),
        (np.full((1, 3, 32, 32), 1.5, np.float32), r"\[0, 1\]"),
        (np.zeros((1, 3, 32, 32), np.uint8), "floating point"),
    ],
)
def test_encode_refuses_bad_images(codec, images, match) -> None:
    with pytest.raises(FSQDeployError, match=r"^encode: .*" + match):
        codec.encode(images)


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        (np.zeros((1, 3, 4, 4), np.int32), r"shape \[N, 4, h, w\], got \[1, 3, 4, 4\]"),
        (np.zeros((1, 4, 16), np.int32), r"shape \[N, 4, h, w\]"),
        (np.full((1, 4, 2, 2), 5, np.int32), r"index 5 at \[0, 1, 0, 0\] is outside \[0, 5\)"),
        (np.full((1, 4, 2, 2), -1, np.int64), "outside"),
        (np.zeros((1, 4, 2, 2), np.float32), "integers"),
    ],
)
def test_decode_refuses_bad_indices(codec, indices, match) -> None:
    with pytest.raises(FSQDeployError, match=r"^decode: .*" + match):
        codec.decode(indices)


@pytest.mark.parametrize(("h", "w"), [(37, 53), (1, 1), (64, 40), (17, 300)])
def test_odd_sizes_round_trip_the_indices(tmp_path, codec, h, w) -> None:
    image = photo(h, w, seed=h)
    Image.fromarray(image).save(tmp_path / "in.png")
    header = compress_file(codec, tmp_path / "in.png", tmp_path / "x.fsq")
    assert (header.version, header.layout, header.cell_size) == (2, LAYOUT_GRID, 8)
    assert (header.image_height, header.image_width) == (h, w)
    assert (header.grid_rows, header.grid_cols) == (math.ceil(h / 8), math.ceil(w / 8))
    read_header, cells = load_fsq(tmp_path / "x.fsq")
    assert read_header == header
    padded = pad_to_multiple(image, 8)
    grid = codec.encode(hwc_uint8_to_chw(padded[None]))  # one pass over the edge-padded image
    assert np.array_equal(cells_to_grid(header, cells), grid)
    size = (tmp_path / "x.fsq").stat().st_size
    assert size == 110 + 2 * 4 + math.ceil(header.num_cells * 10 / 8) + 4  # levels 8,5,5,5: 10 bits a cell
    restored = decompress_file(codec, tmp_path / "x.fsq", tmp_path / "out.png")
    assert restored.shape == (h, w, 3) and restored.dtype == np.uint8
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), restored)
    expected = float_to_uint8(codec.decode(grid)[0].transpose(1, 2, 0))[:h, :w]
    assert np.array_equal(restored, expected)


def test_compress_of_a_multiple_of_f_needs_no_padding(codec) -> None:
    image = photo(48, 80, seed=4)
    _, cells = codec.encode_image(image)
    assert np.array_equal(cells.reshape(6, 10, 4).transpose(2, 0, 1)[None], codec.encode(hwc_uint8_to_chw(image[None])))


@pytest.mark.parametrize(("tile", "max_pixels"), [(8, None), (16, None), (24, None), (None, 80 * 80)])
def test_tiled_compress_equals_one_pass(conv_art, codec, tile, max_pixels) -> None:
    image = photo(75, 99, seed=5)  # padded 80 x 104: above 80 x 80 pixels, so max_pixels tiles it
    one_pass = codec.compress(image)
    options = {"tile": tile} if max_pixels is None else {"max_pixels": max_pixels}
    with Codec.load(conv_art[0], "torch", **options) as tiled:
        calls = []
        encoder, decoder = tiled.encoder.infer, tiled.decoder.infer
        tiled.encoder.infer = lambda feed: calls.append(feed["images"].shape) or encoder(feed)
        tiled.decoder.infer = lambda feed: calls.append(feed["indices"].shape) or decoder(feed)
        assert tiled.compress(image) == one_pass
        assert len(calls) > 1  # it did tile
        restored = tiled.decompress(one_pass)
        if max_pixels is not None:  # every window, encoder (pixels) and decoder (cells), within the budget
            assert all(h * w * (1 if c == 3 else 64) <= max_pixels for _, c, h, w in calls)
    assert np.array_equal(restored, codec.decompress(one_pass))


def test_manifest_without_a_tiling_record_uses_the_model_halos(tmp_path, conv_art) -> None:
    art = torch_artifact(tmp_path / "art", conv_art[1], tiling=False)
    with Codec.load(art, "torch", tile=8) as c:
        assert (c.encoder_halo, c.decoder_halo) == (3, 4)


@pytest.mark.parametrize(("options", "match"), [
    ({"tile": 12}, "tile 12 is not a positive multiple of 8 pixels"),
    ({"tile": 0}, "tile 0 is not a positive multiple of 8"),
    ({"max_pixels": 71 * 71}, r"max_pixels 5041 is below the smallest tile window, 72x72 pixels"),
])
def test_bad_tiling_options(conv_art, options, match) -> None:
    with pytest.raises(FSQDeployError, match="^codec: " + match):
        Codec.load(conv_art[0], "torch", **options)


def test_whole_image_api_refuses_bad_inputs(codec, conv_art) -> None:
    with pytest.raises(FSQDeployError, match=r"^compress: an image must be a uint8 array \[H, W, 3\] \(or grey "
                                             r"\[H, W\]\).*float32"):
        codec.compress(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(FSQDeployError, match=r"^compress: an image must be .*uint8 \[8, 8, 4\]"):
        codec.compress(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(FSQDeployError, match=r"^compress: an image must be .*uint8 \[0, 8, 3\]"):
        codec.compress(np.zeros((0, 8), np.uint8))
    data = codec.compress(photo(20, 30))
    header, cells = read_fsq(data)
    with pytest.raises(FSQDeployError, match=r"^decompress: indices have shape \[11, 4\], the header's 3x4 grid"):
        codec.decode_image(header, cells[:11])
    with pytest.raises(FSQDeployError, match="truncated"):
        codec.decompress(data[:-3])


def test_files_of_the_other_layout_are_refused(tmp_path, codec, conv_art, art32) -> None:
    with Codec.load(art32.art, "onnxruntime") as paper:
        paper_file = paper.compress(photo(40, 40))
        with pytest.raises(FSQDeployError, match="another model"):
            paper.decompress(codec.compress(photo(40, 40)))
    with pytest.raises(FSQDeployError, match="another model"):
        codec.decompress(paper_file)
    # the same model hash but patches: refused by layout, not decoded as a grid
    from fsqdeploy.runtime.bitstream import FsqHeader, write_fsq

    patches = FsqHeader.for_patches(codec.model_id, 16, 16, 8, codec.levels)
    with pytest.raises(FSQDeployError, match=r"^decompress: the file holds 8-pixel patches \(layout 0\), the model "
                                              r"reads 8-pixel latent cells \(layout 1\)"):
        codec.decompress(write_fsq(patches, np.zeros((4, 4), np.int32)))


def test_paper_codec_writes_v2_patches(art32) -> None:
    with Codec.load(art32.art, "onnxruntime") as paper:
        header, _ = read_fsq(paper.compress(photo(40, 70)))
    assert (header.version, header.layout, header.cell_size, header.grid_rows, header.grid_cols) == (2, 0, 32, 2, 3)


def test_a_grey_image_comes_back_grey(tmp_path, codec, art32, cli) -> None:
    """A grey image (R = G = B everywhere) sets the file's grey flag; decoding it returns each
    pixel's channel mean (rounded to nearest), so the tints the RGB decoder leaves are gone, and
    decompress writes a one-channel PNG. A colour image, even one pixel off grey, is coded as before."""
    from fsqdeploy.images import to_grey

    grey = np.repeat(photo(37, 53, seed=5).mean(axis=2).astype(np.uint8)[..., None], 3, axis=2)
    almost = grey.copy()
    almost[3, 4, 1] ^= 1
    paper = Codec.load(art32.art, "onnxruntime")
    for model in (codec, paper):  # a latent grid and patches
        data = model.compress(grey)
        header, indices = read_fsq(data, model.prior)
        assert header.grey and data[5] == 1
        back = model.decode_image(header, indices)
        assert np.array_equal(back[..., 0], back[..., 1]) and np.array_equal(back[..., 1], back[..., 2])
        as_colour = model.decode_image(replace(header, grey=False), indices)  # what the RGB decoder gives
        assert not np.array_equal(as_colour[..., 0], as_colour[..., 1])  # tinted: the flag is what fixes it
        assert np.array_equal(back, to_grey(as_colour))
        assert not read_fsq(model.compress(almost), model.prior)[0].grey
    paper.close()
    total = np.array([[[0, 0, 1], [0, 1, 1], [1, 2, 2], [255, 255, 254]]], np.uint8)
    assert to_grey(total)[0, :, 0].tolist() == [0, 1, 2, 255]  # sums 1, 2, 5, 764: nearest thirds

    # a grey array, [H, W] or [H, W, 1], is that grey image
    assert codec.compress(grey[..., 0]) == codec.compress(grey[..., :1]) == codec.compress(grey)

    Image.fromarray(grey[..., 0]).save(tmp_path / "g.png")  # a mode L file, as grey photos are stored
    code, _, err = cli("compress", tmp_path / "g.png", "-m", codec.art, "-o", tmp_path / "g.fsq",
                       "--backend", "torch")
    assert code == 0, err
    code, _, err = cli("decompress", tmp_path / "g.fsq", "-m", codec.art, "-o", tmp_path / "back.png",
                       "--backend", "torch")
    assert code == 0, err
    with Image.open(tmp_path / "back.png") as back_png:
        assert back_png.mode == "L" and back_png.size == (53, 37)


# --- the CLI --------------------------------------------------------------------------------------


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fsqdeploy.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_compress_decompress_and_refusals(tmp_path, conv_art, art32) -> None:
    art = conv_art[0]
    Image.fromarray(photo(37, 53, seed=7)).save(tmp_path / "a.png")
    r = run_cli("compress", tmp_path / "a.png", "-m", art, "-o", tmp_path / "a.fsq", "--backend", "torch",
                "--tile", "16")
    assert r.returncode == 0, r.stderr
    assert "37 53" not in r.stdout and "53x37" in r.stdout and "latent grid 5x7" in r.stdout
    with Codec.load(art, "torch") as c:
        assert (tmp_path / "a.fsq").read_bytes() == c.compress(photo(37, 53, seed=7))  # tiles change nothing
    r = run_cli("decompress", tmp_path / "a.fsq", "-m", art, "-o", tmp_path / "a.out.png", "--backend", "torch")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "a.out.png")).shape == (37, 53, 3)

    data = (tmp_path / "a.fsq").read_bytes()
    (tmp_path / "cut.fsq").write_bytes(data[:-7])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x04
    (tmp_path / "flip.fsq").write_bytes(bytes(flipped))
    (tmp_path / "notes.png").write_text("not an image")
    cases = [
        (("decompress", tmp_path / "cut.fsq", "-m", art, "-o", tmp_path / "o1.png"), "truncated"),
        (("decompress", tmp_path / "flip.fsq", "-m", art, "-o", tmp_path / "o2.png"), "CRC32 mismatch"),
        (("decompress", tmp_path / "a.fsq", "-m", art32.art, "-o", tmp_path / "o3.png"), "another model"),
        (("compress", tmp_path / "notes.png", "-m", art, "-o", tmp_path / "o4.fsq"), "not a readable image"),
        (("compress", tmp_path / "a.png", "-m", art, "-o", tmp_path / "o5.fsq", "--tile", "12"),
         "not a positive multiple of 8"),
    ]
    for args, match in cases:
        r = run_cli(*args, "--backend", "torch" if art in args else "onnxruntime")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and match in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fsq", "a.out.png", "a.png", "cut.fsq", "flip.fsq",
                                                          "notes.png"]


# --- ONNX Runtime and OpenVINO on dynamic-shape graphs ------------------------------------------------

SIZES = [(8, 8), (32, 32), (48, 80), (96, 64), (24, 136)]  # f = 8: one cell, square, non-square, wide


class _Encoder(torch.nn.Module):
    def __init__(self, model: FSQVAE):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.model.encoder(images)
        return to_grid(self.model.quantizer.indices(to_vectors(z)), z).to(torch.int32)


class _Decoder(_Encoder):
    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        codes = to_grid(self.model.quantizer.indices_to_decoder_input(to_vectors(indices.long())), indices)
        return torch.sigmoid(self.model.decoder(codes))


@pytest.fixture(scope="module")
def dynamic_art(tmp_path_factory, conv_art) -> Path:
    """The torch-only artifact plus encoder.onnx / decoder.onnx with dynamic batch, height and width
    in the spatial I/O contract, exported here by torch.onnx (TorchScript path): what this tests is the
    backends' side, running graphs of any size through Codec. The export pipeline's own graphs
    (fsqdeploy export) are held to indices equal to PyTorch by its parity gate."""
    import shutil
    import warnings

    from fsqdeploy.artifact import BATCH, GRID_HEIGHT, GRID_WIDTH, HEIGHT, WIDTH

    art = tmp_path_factory.mktemp("dynamic") / "art"
    shutil.copytree(conv_art[0], art)
    model = FSQVAE.load(art / CHECKPOINT_DIR)
    images = {0: BATCH, 2: HEIGHT, 3: WIDTH}
    grid = {0: BATCH, 2: GRID_HEIGHT, 3: GRID_WIDTH}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(_Encoder(model).eval(), (torch.rand(1, 3, 32, 48),), str(art / "encoder.onnx"),
                          input_names=["images"], output_names=["indices"], opset_version=18, dynamo=False,
                          dynamic_axes={"images": images, "indices": grid})
        torch.onnx.export(_Decoder(model).eval(), (torch.zeros(1, 4, 4, 6, dtype=torch.int32),),
                          str(art / "decoder.onnx"), input_names=["indices"], output_names=["images"],
                          opset_version=18, dynamo=False, dynamic_axes={"indices": grid, "images": images})
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"].update({n: file_entry(art / n) for n in ("encoder.onnx", "decoder.onnx")})
    write_json_atomic(art / "manifest.json", manifest)
    return art


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_backends_equal_pytorch_at_every_size(dynamic_art, codec, backend) -> None:
    if reason := get_backend(backend).unavailable_reason():
        pytest.skip(reason)
    with Codec.load(dynamic_art, backend) as runtime:
        assert runtime.backend == backend and runtime.spatial
        for h, w in SIZES:
            rng = np.random.default_rng(h * w)
            x = np.concatenate([rng.random((2, 3, h, w), dtype=np.float32),
                                hwc_uint8_to_chw(photo(h, w, seed=h)[None])])  # random and real pixels
            idx, expected = runtime.encode(x), codec.encode(x)
            assert idx.dtype == np.int32 and idx.shape == (3, 4, h // 8, w // 8)
            assert np.array_equal(idx, expected), f"{backend} {h}x{w}: {np.mean(idx == expected):.4%} equal"
            images = runtime.decode(expected)
            assert images.shape == x.shape and np.abs(images - codec.decode(expected)).max() < 1e-5
        for image, tile in ((photo(37, 53, seed=9), None), (photo(75, 99, seed=3), 16)):
            runtime.tile = tile  # whole-image files, one pass and tiled: PyTorch's bytes
            data = codec.compress(image)
            assert runtime.compress(image) == data
            assert np.array_equal(runtime.decompress(data), codec.decompress(data))


# -- decoding a region: the cells under it and the decoder's halo --------------------------------------------

@pytest.mark.parametrize("box", [(0, 0, 1, 1), (13, 7, 40, 21), (60, 50, 39, 25), (0, 0, 99, 75), (35, 0, 8, 75)])
@pytest.mark.parametrize("tile", [None, 8])
def test_a_region_decodes_to_the_whole_decode_of_it(conv_art, codec, box, tile) -> None:
    image = photo(75, 99, seed=5)
    data = codec.compress(image)
    whole = codec.decompress(data)
    x, y, w, h = box
    with Codec.load(conv_art[0], "torch", tile=tile) as c:
        windows = []
        decoder = c.decoder.infer
        c.decoder.infer = lambda feed: windows.append(feed["indices"].shape[2:]) or decoder(feed)
        part = c.decompress(data, box)
    expected = whole[y : y + h, x : x + w]
    assert part.shape == expected.shape
    apart = np.abs(part.astype(int) - expected)
    assert apart.max() <= 1 and (apart == 0).mean() > 0.999  # exact but for float32 rounding, as tiling is
    f, halo = c.downsample, c.decoder_halo
    rows = -(-(y + h) // f) - y // f + 2 * halo  # the most cells a window needs: the region's and the halo
    cols = -(-(x + w) // f) - x // f + 2 * halo
    if tile is None:  # one window: no more than that, and less than the whole 10 x 13 grid
        assert len(windows) == 1 and windows[0][0] <= rows and windows[0][1] <= cols
        assert box == (0, 0, 99, 75) or windows[0][0] * windows[0][1] < 10 * 13
    else:  # one-cell cores: a tile for each cell under the region, none for the halo's cells alone
        assert len(windows) == (-(-(y + h) // f) - y // f) * (-(-(x + w) // f) - x // f)


def test_a_grey_region_is_grey_and_bad_regions_are_refused(codec) -> None:
    grey = np.repeat(photo(40, 56, seed=2)[..., :1], 3, axis=2)
    data = codec.compress(grey)
    part = codec.decompress(data, (5, 9, 30, 20))
    assert np.abs(part.astype(int) - codec.decompress(data)[9:29, 5:35]).max() <= 1
    assert (part[..., 0] == part[..., 1]).all() and (part[..., 1] == part[..., 2]).all()
    for box, match in [((0, 0, 57, 40), "region 0,0,57,40 .* is not inside the 56x40 image"),
                       ((-1, 0, 5, 5), "is not inside"), ((0, 0, 0, 5), "width and height at least 1"),
                       ((0, 0, 5), "is not four integers"), ((0.5, 0, 5, 5), "is not four integers")]:
        with pytest.raises(FSQDeployError, match=match):
            codec.decompress(data, box)


def test_cli_decompress_a_region(tmp_path, conv_art, codec, cli, one_line_error) -> None:
    Image.fromarray(photo(75, 99, seed=5)).save(tmp_path / "p.png")
    code, _, err = cli("compress", tmp_path / "p.png", "-m", conv_art[0], "-o", tmp_path / "p.fsq")
    assert code == 0, err
    code, out, err = cli("decompress", tmp_path / "p.fsq", "-m", conv_art[0], "-o", tmp_path / "r.png",
                         "--region", "13,7,40,21", "--backend", "torch")
    assert code == 0, err
    assert "-> " + str(tmp_path / "r.png") + ": 40x21" in out
    expected = codec.decompress((tmp_path / "p.fsq").read_bytes(), (13, 7, 40, 21))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), expected)
    for region, match in [("13,7,87,21", f"region 13,7,87,21 (x, y, width, height) is not inside the 99x75 image of "
                                         f"'{tmp_path / 'p.fsq'}'. Note: pass x + width <= 99"),
                          ("1,2,3", "is not X,Y,W,H"),
                          ("0,0,0,4", "is not X,Y,W,H"), ("a,b,c,d", "is not X,Y,W,H")]:
        code, _, err = cli("decompress", tmp_path / "p.fsq", "-m", conv_art[0], "-o", tmp_path / "bad.png",
                           "--region", region)
        one_line_error(code, err, match)
    assert not (tmp_path / "bad.png").exists()
