"""Tokens: one integer per latent cell, through the API and `fsqdeploy tokenize` / `detokenize`."""

import numpy as np
import pytest
from PIL import Image

from fsqdeploy import FSQDeployError
from fsqdeploy.images import centre_crop
from fsqdeploy.runtime.bitstream import pack_indices
from fsqdeploy.runtime.codec import Codec
from fsqdeploy.runtime.tokens import TokenFile, indices_to_tokens, load_tokens, save_tokens, tokens_to_indices

DEFAULT_LEVELS = [7] * 11 + [5]  # the conv default: 34 bits per cell


def photo(h, w, seed=0):
    import skimage.data

    img = skimage.data.astronaut()
    y, x = (seed * 37) % (512 - h), (seed * 53) % (512 - w)
    return np.ascontiguousarray(img[y : y + h, x : x + w])


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], DEFAULT_LEVELS, [3, 5], [2] * 63])
def test_tokens_are_the_mixed_radix_value_and_invert_exactly(levels):
    rng = np.random.default_rng(len(levels))
    indices = rng.integers(0, levels, (200, len(levels)))
    indices[0], indices[1] = 0, np.array(levels) - 1  # the smallest and the largest token
    tokens = indices_to_tokens(indices, levels)
    assert tokens.dtype == np.int64 and tokens.shape == (200,)
    for row, token in zip(indices, tokens):  # Python ints: no overflow to hide behind
        value, scale = 0, 1
        for index, level in zip(row, levels):
            value, scale = value + int(index) * scale, scale * level
        assert int(token) == value
    assert int(tokens[1]) == int(np.prod(np.array(levels, dtype=object))) - 1
    back = tokens_to_indices(tokens, levels)
    assert back.dtype == np.int32 and np.array_equal(back, indices)


def test_tokens_are_what_the_fixed_rate_file_packs_per_cell():
    levels = [8, 8, 8, 5, 5, 5]  # 64000 codes, 16 bits: one little-endian uint16 per cell
    indices = np.random.default_rng(1).integers(0, levels, (50, 6))
    packed = np.frombuffer(pack_indices(indices, levels), dtype="<u2")
    assert np.array_equal(indices_to_tokens(indices, levels), packed)
    assert indices_to_tokens(np.array([[2, 4], [0, 1], [1, 3]]), [3, 5]).tolist() == [14, 3, 10]  # docs/bitstream.md


def test_the_levels_axis_of_the_codec_grid():
    levels = [8, 5, 5, 5]
    grid = np.random.default_rng(2).integers(0, levels, (2, 3, 5, 4)).transpose(0, 3, 1, 2)  # [N, D, h, w]
    tokens = indices_to_tokens(grid, levels, axis=1)
    assert tokens.shape == (2, 3, 5)
    assert np.array_equal(tokens, indices_to_tokens(grid.transpose(0, 2, 3, 1), levels))
    assert np.array_equal(tokens_to_indices(tokens, levels, axis=1), grid)


@pytest.mark.parametrize("call, match", [
    (lambda: indices_to_tokens(np.array([[0, 5]]), [8, 5]), r"index 5 at \[0, 1\] .* outside \[0, 5\)"),
    (lambda: indices_to_tokens(np.array([[0, -1]]), [8, 5]), "outside"),
    (lambda: indices_to_tokens(np.zeros((2, 3), int), [8, 5]), "3 levels along axis -1, the model has 2"),
    (lambda: indices_to_tokens(np.zeros((2, 2)), [8, 5]), "indices must be integers, got float64"),
    (lambda: tokens_to_indices(np.array([0, 40]), [8, 5]), r"token 40 at \[1\] is outside the codebook \[0, 40\)"),
    (lambda: tokens_to_indices(np.array([-3]), [8, 5]), "outside the codebook"),
    (lambda: tokens_to_indices(np.array([2**64 - 1], dtype=np.uint64), [8, 5]), "outside the codebook"),
    (lambda: tokens_to_indices(np.array([1.0]), [8, 5]), "tokens must be integers"),
    (lambda: indices_to_tokens(np.zeros((1, 22), int), [8] * 22),
     "a cell of this model takes 66 bits, more than the 63 an int64 token holds"),
])
def test_bad_indices_and_tokens_are_one_clear_error(call, match):
    with pytest.raises(FSQDeployError, match=match):
        call()


@pytest.fixture(scope="module", params=["conv_exported", "art64"])
def codec(request):
    with Codec.load(request.getfixturevalue(request.param).art, "onnxruntime") as c:
        yield c


@pytest.mark.parametrize("h,w", [(64, 64), (37, 70), (1, 1)])
def test_tokenize_then_detokenize_is_compress_then_decompress(codec, h, w):
    image = photo(h, w, seed=h)
    tokens = codec.tokenize(image)
    c = codec.cell_size
    assert tokens.dtype == np.int64 and tokens.shape == (-(-h // c), -(-w // c))
    _, cells = codec.encode_image(image)
    assert np.array_equal(tokens.ravel(), indices_to_tokens(cells, codec.levels))
    decoded = codec.detokenize(tokens, (h, w))
    assert np.array_equal(decoded, codec.decompress(codec.compress(image)))
    whole = codec.detokenize(tokens)  # no size: every cell, uncropped
    assert whole.shape == (tokens.shape[0] * c, tokens.shape[1] * c, 3)
    assert np.array_equal(whole[:h, :w], decoded)  # the size only crops


def test_grey_tokens_decode_grey(codec):
    grey = photo(40, 48)[..., 1]
    tokens = codec.tokenize(grey)
    back = codec.detokenize(tokens, grey.shape, grey=True)
    assert np.array_equal(back, codec.decompress(codec.compress(grey)))
    assert np.array_equal(back[..., 0], back[..., 2])


def test_detokenize_refuses_a_size_that_is_not_the_grid(codec):
    tokens = codec.tokenize(photo(64, 64))
    c = codec.cell_size
    n = 64 // c
    with pytest.raises(FSQDeployError, match=f"a {64 + c}x64 image has {n + 1}x{n} cells of {c} pixels, "
                                             f"the tokens are {n}x{n}"):
        codec.detokenize(tokens, (64 + c, 64))
    with pytest.raises(FSQDeployError, match="tokens must be a grid"):
        codec.detokenize(tokens.ravel())


def test_token_file_round_trip(tmp_path):
    tf = TokenFile(np.arange(12, dtype=np.int64).reshape(2, 2, 3), ("a", "sub/b"), np.array([[30, 45], [32, 48]]),
                   np.array([False, True]), (8, 5), "abc", 16)
    save_tokens(tmp_path / "t.npz", tf)
    back = load_tokens(tmp_path / "t.npz")
    assert back.names == tf.names and back.levels == tf.levels and back.model_id == "abc" and back.cell_size == 16
    assert np.array_equal(back.tokens, tf.tokens) and np.array_equal(back.image_sizes, tf.image_sizes)
    assert np.array_equal(back.grey, tf.grey)
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary left beside it


@pytest.mark.parametrize("levels, stored", [
    ((8, 5), "uint8"), ((4, 4, 4, 4), "uint8"), ((4, 4, 4, 4, 2), "uint16"), ((8, 8, 8, 5, 5, 5), "uint16"),
    ((2,) * 17, "int32"), ((2,) * 31, "int32"), ((2,) * 32, "int64"), (DEFAULT_LEVELS, "int64"), ((2,) * 63, "int64"),
])
def test_a_token_file_stores_the_smallest_type_and_reads_back_int64(tmp_path, levels, stored):
    top = int(np.prod(np.array(levels, dtype=object))) - 1  # the largest token must survive
    tf = TokenFile(np.array([[[0, top]]], dtype=np.int64), ("a",), np.array([[8, 16]]), np.array([False]),
                   levels, "abc", 8)
    save_tokens(tmp_path / "t.npz", tf)
    with np.load(tmp_path / "t.npz") as raw:
        assert raw["tokens"].dtype == np.dtype(stored) and int(raw["format_version"]) == 2
    back = load_tokens(tmp_path / "t.npz")
    assert back.tokens.dtype == np.int64 and back.tokens.tolist() == [[[0, top]]]


def test_a_version_1_token_file_still_reads(tmp_path):
    np.savez(tmp_path / "v1.npz", format=np.str_("fsqdeploy-tokens"), format_version=np.int64(1),
             tokens=np.array([[[3, 39]]], np.int64), names=np.array(["a"]), image_sizes=np.array([[8, 16]]),
             grey=np.array([False]), levels=np.array([8, 5]), model_id=np.str_("abc"), cell_size=np.int64(8))
    back = load_tokens(tmp_path / "v1.npz")
    assert back.tokens.tolist() == [[[3, 39]]] and back.levels == (8, 5)
    np.savez(tmp_path / "v3.npz", format=np.str_("fsqdeploy-tokens"), format_version=np.int64(3))
    with pytest.raises(FSQDeployError, match="is token format version 3, this fsqdeploy reads 1 and 2"):
        load_tokens(tmp_path / "v3.npz")


@pytest.mark.parametrize("content, match", [
    (b"not numpy", "is not a .npz or .npy file"),
    ("floats", r"holds float64 \[2, 2\], expected integer tokens"),
    ("other npz", "is not a token file of fsqdeploy tokenize"),
    ("escaping name", "names an output '../x' outside the output directory"),
])
def test_bad_token_files_are_one_clear_error(tmp_path, content, match):
    path = tmp_path / "t.npz"
    if content == "floats":
        path = tmp_path / "t.npy"
        np.save(path, np.zeros((2, 2)))
    elif content == "other npz":
        np.savez(path, tokens=np.zeros((1, 2, 2), np.int64))
    elif content == "escaping name":
        save_tokens(path, TokenFile(np.zeros((1, 1, 1), np.int64), ("../x",), np.ones((1, 2), np.int64),
                                    np.zeros(1, bool), (8,), "abc", 8))
    else:
        path.write_bytes(content)
    with pytest.raises(FSQDeployError, match=match):
        load_tokens(path)


# --- the commands ------------------------------------------------------------------------------------------


def write_photos(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(photo(h, w, seed=i + 1)).save(folder / f"p{i}.png")


def test_tokenize_a_folder_and_detokenize_it(cli, tmp_path, conv_exported):
    art = conv_exported.art
    write_photos(tmp_path / "in" / "sub", [(50, 70), (90, 60)])
    write_photos(tmp_path / "in", [(64, 40)])
    code, out, err = cli("tokenize", tmp_path / "in", "-m", art, "-o", tmp_path / "t.npz", "--size", 32,
                         "--backend", "onnxruntime")
    assert code == 0, err
    tf = load_tokens(tmp_path / "t.npz")
    used = len(np.unique(tf.tokens))
    assert "3 images -> " in out
    assert f"tokens [3, 4, 4] int32, 20 bits each, {used:,} distinct of 1,000,000 codes" in out
    assert tf.names == ("p0", "sub/p0", "sub/p1") and tf.image_sizes.tolist() == [[32, 32]] * 3
    code, out, err = cli("detokenize", tmp_path / "t.npz", "-m", art, "-o", tmp_path / "out",
                         "--backend", "onnxruntime")
    assert code == 0, err
    with Codec.load(art, "onnxruntime") as codec:
        for name, source in [("p0", tmp_path / "in" / "p0.png"), ("sub/p1", tmp_path / "in" / "sub" / "p1.png")]:
            image = centre_crop(np.asarray(Image.open(source)), 32)
            expected = codec.decompress(codec.compress(image))
            assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), expected), name


def test_tokenize_refusals_write_nothing(cli, one_line_error, tmp_path, conv_exported):
    art = conv_exported.art
    write_photos(tmp_path / "in", [(50, 70), (90, 60)])
    for args, match in [
        ((tmp_path / "in",), "p0.png' gives a 7x9 token grid and"),
        ((tmp_path / "in", "--size", 20), "--size 20 is not a positive multiple of the model's 8-pixel cells"),
        ((tmp_path / "in", "--size", -8), "--size -8 is not a positive multiple"),
        ((tmp_path / "nowhere.png",), "'" + str(tmp_path / "nowhere.png") + "' does not exist"),
    ]:
        code, _, err = cli("tokenize", *args, "-m", art, "-o", tmp_path / "t.npz", "--backend", "onnxruntime")
        one_line_error(code, err, match)
    code, _, err = cli("tokenize", tmp_path / "in", "-m", art, "-o", tmp_path / "t.npz", "--resume")
    one_line_error(code, err, "--resume writes shards into a directory, and '")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_detokenize_a_bare_grid_and_its_refusals(cli, one_line_error, tmp_path, conv_exported, art32):
    art = conv_exported.art
    with Codec.load(art, "onnxruntime") as codec:
        levels, f = codec.levels, codec.cell_size
    sample = np.random.default_rng(3).integers(0, int(np.prod(np.array(levels, dtype=object))), (2, 3, 5))
    np.save(tmp_path / "sample.npy", sample)
    code, out, err = cli("detokenize", tmp_path / "sample.npy", "-m", art, "-o", tmp_path / "out",
                         "--backend", "onnxruntime")
    assert code == 0, err
    assert [np.asarray(Image.open(tmp_path / "out" / n)).shape for n in ("000000.png", "000001.png")] == \
        [(3 * f, 5 * f, 3)] * 2

    sample[1, 2, 4] = -1
    np.save(tmp_path / "bad.npy", sample)
    code, _, err = cli("detokenize", tmp_path / "bad.npy", "-m", art, "-o", tmp_path / "bad")
    one_line_error(code, err, "token -1 at [1, 2, 4] is outside the codebook")
    assert not (tmp_path / "bad").exists()  # the first image was not written either

    code, _, err = cli("tokenize", tmp_path / "out" / "000000.png", "-m", art32.art, "-o", tmp_path / "t32.npz")
    assert code == 0, err
    code, _, err = cli("detokenize", tmp_path / "t32.npz", "-m", art, "-o", tmp_path / "x.png")
    one_line_error(code, err, "holds tokens of model")
    code, _, err = cli("detokenize", tmp_path / "t32.npz", "-m", art32.art, "-o", tmp_path / "x.txt")
    one_line_error(code, err, "cannot write '.txt' images")


def test_every_flipped_bit_or_truncation_of_a_token_file_is_refused_or_harmless(tmp_path):
    """numpy alone reads a damaged .npz member without its CRC; load_tokens checks every member, so a
    flipped bit either sits where it changes nothing (a timestamp) or is one clear error."""
    tf = TokenFile(np.arange(12, dtype=np.int64).reshape(2, 2, 3), ("a", "b"), np.array([[30, 45], [32, 48]]),
                   np.array([False, True]), (8, 5), "abc", 16)
    save_tokens(tmp_path / "t.npz", tf)
    data = (tmp_path / "t.npz").read_bytes()
    damaged, refused = tmp_path / "x.npz", 0
    for case in [bytes(data[:i]) + bytes([data[i] ^ 1 << (i % 8)]) + data[i + 1 :] for i in range(len(data))] + \
                [data[:n] for n in range(len(data))]:
        damaged.write_bytes(case)
        try:
            back = load_tokens(damaged)
        except FSQDeployError:
            refused += 1
            continue
        assert np.array_equal(back.tokens, tf.tokens) and (back.names, back.levels, back.model_id) == \
            (tf.names, tf.levels, tf.model_id)
        assert np.array_equal(back.image_sizes, tf.image_sizes) and np.array_equal(back.grey, tf.grey)
    assert refused > 1.5 * len(data)  # every truncation and most flips


def test_any_worker_count_writes_the_same_file_and_a_bad_file_is_one_line(cli, one_line_error, tmp_path,
                                                                         conv_exported):
    art = conv_exported.art
    write_photos(tmp_path / "in", [(50, 70), (90, 60), (64, 64), (40, 80), (33, 47)])
    files = {}
    for workers in (0, 1, 3):
        out = tmp_path / f"w{workers}.npz"
        code, _, err = cli("tokenize", tmp_path / "in", "-m", art, "-o", out, "--size", 24, "--workers", workers,
                           "--backend", "onnxruntime")
        assert code == 0, err
        files[workers] = load_tokens(out)
    for workers in (1, 3):
        assert np.array_equal(files[workers].tokens, files[0].tokens) and files[workers].names == files[0].names
    (tmp_path / "in" / "p3.png").write_bytes(b"not a png")  # met by a reading thread, mid-set
    code, _, err = cli("tokenize", tmp_path / "in", "-m", art, "-o", tmp_path / "bad.npz", "--size", 24,
                       "--workers", 2, "--backend", "onnxruntime")
    one_line_error(code, err, "p3.png' is not a readable image")
    assert "--resume" not in err and not (tmp_path / "bad.npz").exists()
