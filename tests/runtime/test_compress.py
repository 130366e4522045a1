"""Images of any size through .fsq files and back."""

import numpy as np
import pytest
from PIL import Image

from fsqdeploy import FSQDeployError
from fsqdeploy.images import from_patches, to_patches
from fsqdeploy.runtime.bitstream import bits_per_patch, load_fsq
from fsqdeploy.runtime.codec import Codec
from fsqdeploy.runtime.compress import compress_file, decompress_file


@pytest.fixture(scope="module")
def codec(art64):
    with Codec.load(art64.art, "onnxruntime") as c:
        yield c


def photo(h, w, seed=0):
    import skimage.data

    img = skimage.data.astronaut()
    y, x = (seed * 37) % (512 - h), (seed * 53) % (512 - w)
    return np.ascontiguousarray(img[y : y + h, x : x + w])


@pytest.mark.parametrize("h,w", [(64, 64), (65, 127), (1, 1), (200, 33)])
def test_tiles_round_trip(h, w):
    img = photo(h, w)
    patches, rows, cols = to_patches(img, 64)
    assert patches.shape == (rows * cols, 3, 64, 64) and (rows, cols) == (-(-h // 64), -(-w // 64))
    assert np.array_equal(from_patches(patches, rows, cols, h, w), img)


@pytest.mark.parametrize("h,w", [(65, 127), (64, 64), (17, 300)])
def test_compress_decompress_is_exact_on_indices(tmp_path, codec, h, w):
    src = tmp_path / "in.png"
    Image.fromarray(photo(h, w, seed=h)).save(src)
    header = compress_file(codec, src, tmp_path / "x.fsq")
    assert (header.image_height, header.image_width) == (h, w)
    read_header, indices = load_fsq(tmp_path / "x.fsq")
    patches, _, _ = to_patches(photo(h, w, seed=h), 64)
    assert np.array_equal(indices, codec.encode(patches))  # the file holds exactly the codec's indices
    n = header.num_patches
    payload = -(-n * bits_per_patch(codec.levels) // 8)
    assert (tmp_path / "x.fsq").stat().st_size == header.header_length + payload + 4
    image = decompress_file(codec, tmp_path / "x.fsq", tmp_path / "out.png")
    assert image.shape == (h, w, 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), image)
    expected = from_patches(codec.decode(indices), header.grid_rows, header.grid_cols, h, w)
    assert np.array_equal(image, expected)


def test_codec_compress_gives_the_bytes_compress_file_writes(tmp_path, codec, art32):
    img = photo(65, 127, seed=3)
    Image.fromarray(img).save(tmp_path / "in.png")
    compress_file(codec, tmp_path / "in.png", tmp_path / "x.fsq")
    data = codec.compress(img)
    assert data == (tmp_path / "x.fsq").read_bytes()
    restored = codec.decompress(data)
    assert restored.shape == (65, 127, 3) and restored.dtype == np.uint8
    assert np.array_equal(restored, decompress_file(codec, tmp_path / "x.fsq", tmp_path / "out.png"))
    with pytest.raises(FSQDeployError, match="truncated|length|short"):
        codec.decompress(data[:-5])
    with Codec.load(art32.art, "onnxruntime") as other, pytest.raises(FSQDeployError, match="another model"):
        other.decompress(data)


def test_refusals_leave_no_output(tmp_path, codec, art32):
    src = tmp_path / "in.png"
    Image.fromarray(photo(70, 70)).save(src)
    compress_file(codec, src, tmp_path / "x.fsq")
    data = (tmp_path / "x.fsq").read_bytes()
    (tmp_path / "cut.fsq").write_bytes(data[:-5])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    (tmp_path / "flip.fsq").write_bytes(bytes(flipped))
    for name, match in (("cut.fsq", "truncated|length|short"), ("flip.fsq", "corrupt|CRC")):
        with pytest.raises(FSQDeployError, match=match):
            decompress_file(codec, tmp_path / name, tmp_path / "out.png")
    with Codec.load(art32.art, "onnxruntime") as other:
        with pytest.raises(FSQDeployError, match="another model"):
            decompress_file(other, tmp_path / "x.fsq", tmp_path / "out.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FSQDeployError, match="not a readable image"):
        compress_file(codec, tmp_path / "notes.txt", tmp_path / "y.fsq")
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "y.fsq").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_cli_compress_and_decompress(tmp_path, art64):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "fsqdeploy.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    for i in range(2):
        Image.fromarray(photo(50 + i, 90, seed=i)).save(tmp_path / f"img{i}.png")
    r = run("compress", tmp_path / "img0.png", tmp_path / "img1.png", "-m", art64.art, "-o", tmp_path / "fsq",
            "--backend", "onnxruntime")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "fsq").iterdir()) == ["img0.fsq", "img1.fsq"]
    r = run("decompress", tmp_path / "fsq" / "img1.fsq", "-m", art64.art, "-o", tmp_path / "back.png")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "back.png")).shape == (51, 90, 3)
    # refusals: one line, exit 2, nothing written
    r = run("decompress", tmp_path / "img0.png", "-m", art64.art, "-o", tmp_path / "bad.png")
    assert r.returncode == 2 and "not an .fsq file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("compress", tmp_path / "img0.png", "-m", art64.art, "-o", tmp_path / "fsq" / "img0.fsq")
    assert r.returncode == 2 and "--force" in r.stderr
    assert not (tmp_path / "bad.png").exists()


def test_directories_compress_and_decompress_with_their_tree(tmp_path, art64, cli, one_line_error):
    """A directory stands for every PNG/JPEG under it (any case, recursively); the outputs keep the
    tree under --out, and decompress takes the directory of .fsq files back the same way."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(photo(40, 70, seed=1)).save(photos / "a.png")
    Image.fromarray(photo(33, 64, seed=2)).save(photos / "sub" / "b.JPG")
    (photos / "notes.txt").write_text("not an image")
    Image.fromarray(photo(30, 30, seed=3)).save(tmp_path / "c.png")
    code, out, err = cli("compress", photos, tmp_path / "c.png", "-m", art64.art, "-o", tmp_path / "fsq",
                         "--backend", "onnxruntime")
    assert code == 0, err
    written = sorted(p.relative_to(tmp_path / "fsq").as_posix() for p in (tmp_path / "fsq").rglob("*.fsq"))
    assert written == ["a.fsq", "c.fsq", "sub/b.fsq"]
    code, out, err = cli("decompress", tmp_path / "fsq", "-m", art64.art, "-o", tmp_path / "png",
                         "--backend", "onnxruntime")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "png" / "sub" / "b.png")).shape == (33, 64, 3)
    assert sorted(p.name for p in (tmp_path / "png").rglob("*.png")) == ["a.png", "b.png", "c.png"]
    # one directory holding one image still writes into --out as a directory
    code, _, err = cli("compress", photos / "sub", "-m", art64.art, "-o", tmp_path / "one", "--backend",
                       "onnxruntime")
    assert code == 0, err
    assert (tmp_path / "one" / "b.fsq").is_file()

    # refusals: one line, exit 2, nothing written
    (tmp_path / "empty").mkdir()
    code, _, err = cli("compress", tmp_path / "empty", "-m", art64.art, "-o", tmp_path / "x")
    one_line_error(code, err, "no images in directory")
    Image.fromarray(photo(30, 30, seed=4)).save(photos / "a.jpg")  # a.png and a.jpg: both a.fsq
    code, _, err = cli("compress", photos, "-m", art64.art, "-o", tmp_path / "y")
    one_line_error(code, err, "would both be written to")
    code, _, err = cli("compress", photos, "-m", art64.art, "-o", tmp_path / "c.png")
    one_line_error(code, err, "must be a directory")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert np.asarray(Image.open(tmp_path / "c.png")).shape == (30, 30, 3)


def test_a_lossy_output_format_is_written_at_quality_95(tmp_path):
    """decompress -o x.jpg codes the decoded image again: at 95, not Pillow's default 75; PNG stays exact."""
    import io

    from fsqdeploy.runtime.compress import write_image

    image = photo(48, 64, seed=3)
    for suffix, fmt in ((".jpg", "JPEG"), (".webp", "WEBP")):
        write_image(tmp_path / f"x{suffix}", image)
        expected, default = io.BytesIO(), io.BytesIO()
        Image.fromarray(image).save(expected, format=fmt, quality=95)
        Image.fromarray(image).save(default, format=fmt)
        assert (tmp_path / f"x{suffix}").read_bytes() == expected.getvalue() != default.getvalue()
    write_image(tmp_path / "x.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), image)


def test_version_1_files_still_decompress(codec):
    """Patch (paper) codecs write version 2, layout 0 (the C++ reader reads it too); a version 1 file
    of the same indices decodes to the same image; the two differ in the header only."""
    from fsqdeploy.runtime.bitstream import FsqHeader, read_fsq, write_fsq

    img = photo(65, 127, seed=6)
    v2 = codec.compress(img)
    header, indices = read_fsq(v2)
    assert (header.version, header.layout, header.cell_size) == (2, 0, 64)
    v1 = write_fsq(FsqHeader.for_image(codec.model_id, 65, 127, 64, codec.levels), indices)
    assert read_fsq(v1)[0].version == 1
    assert v1[4] == 1 and v2[4] == 2 and len(v2) - len(v1) == 34 and v1[-8:] == v2[-8:]
    assert np.array_equal(codec.decompress(v1), codec.decompress(v2))


@pytest.mark.parametrize("box", [(0, 0, 1, 1), (30, 5, 70, 40), (64, 64, 36, 1), (0, 0, 100, 70)])
def test_a_region_of_a_patch_file_decodes_only_its_patches(codec, box):
    data = codec.compress(photo(70, 100, seed=3))  # 2 x 2 patches of 64 px
    calls = []
    decoder = codec.decoder.infer
    codec.decoder.infer = lambda feed: calls.append(len(feed["indices"])) or decoder(feed)
    try:
        part = codec.decompress(data, box)
    finally:
        codec.decoder.infer = decoder
    x, y, w, h = box
    assert np.array_equal(part, codec.decompress(data)[y : y + h, x : x + w])
    p = 64
    assert sum(calls) == (-(-(y + h) // p) - y // p) * (-(-(x + w) // p) - x // p)  # only the patches under it
