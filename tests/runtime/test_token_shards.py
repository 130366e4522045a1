"""Token shards: `fsqdeploy tokenize -o DIR` writes a large set shard by shard; `--resume` continues a
killed run to the same tokens; detokenize reads the directory."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from test_tokens import write_photos

from fsqdeploy import FSQDeployError
from fsqdeploy.runtime.codec import Codec
from fsqdeploy.runtime.token_shards import MANIFEST, token_files, tokenize_shards
from fsqdeploy.runtime.tokens import load_tokens, save_tokens

SIZES = [(50, 70), (90, 60), (64, 64), (40, 80), (33, 47)]


@pytest.fixture
def photos(tmp_path):
    write_photos(tmp_path / "in", SIZES)
    return tmp_path / "in"


def shard_names(out):
    return {p.name for p in out.iterdir()}


def joined(path):
    files = list(token_files(path))
    return np.concatenate([tf.tokens for tf in files]), sum((tf.names for tf in files), ())


def test_shards_hold_what_one_file_holds_and_detokenize_reads_them(cli, tmp_path, photos, conv_exported):
    art = conv_exported.art
    args = ("-m", art, "--size", 24, "--backend", "onnxruntime")
    code, _, err = cli("tokenize", photos, "-o", tmp_path / "one.npz", *args)
    assert code == 0, err
    code, out, err = cli("tokenize", photos, "-o", tmp_path / "shards", "--shard-size", 2, *args)
    assert code == 0, err
    assert shard_names(tmp_path / "shards") == {MANIFEST, "tokens-00000.npz", "tokens-00001.npz", "tokens-00002.npz"}
    one = load_tokens(tmp_path / "one.npz")
    tokens, names = joined(tmp_path / "shards")
    assert np.array_equal(tokens, one.tokens) and names == one.names
    assert [len(load_tokens(tmp_path / "shards" / f"tokens-0000{k}.npz").names) for k in range(3)] == [2, 2, 1]
    assert f"5 images -> {tmp_path / 'shards'}/ (3 shards): tokens [5, 3, 3] int32" in out
    assert f"{len(np.unique(one.tokens)):,} distinct of 1,000,000 codes" in out

    for source, target in [("one.npz", "a"), ("shards", "b")]:
        code, out, err = cli("detokenize", tmp_path / source, "-m", art, "-o", tmp_path / target,
                             "--backend", "onnxruntime")
        assert code == 0, err
    for i in range(len(SIZES)):
        a, b = (np.asarray(Image.open(tmp_path / d / f"p{i}.png")) for d in "ab")
        assert a.shape == (24, 24, 3) and np.array_equal(a, b)
    assert f"shards[4] -> {tmp_path / 'b' / 'p4.png'}: 24x24" in out


def test_a_killed_run_resumes_to_the_same_tokens(cli, one_line_error, tmp_path, photos, conv_exported):
    art, out = conv_exported.art, tmp_path / "shards"
    files = sorted(photos.iterdir())
    names = tuple(p.stem for p in files)

    def killed_at(n):
        def progress(done, total):
            if done == n:
                raise KeyboardInterrupt  # what Ctrl-C raises; SIGKILL stops at the same places, less tidily
        return progress

    with Codec.load(art, "onnxruntime", entropy=False) as codec:
        with pytest.raises(KeyboardInterrupt):
            tokenize_shards(codec, files, names, out, size=24, shard_size=2, progress=killed_at(3))
    assert shard_names(out) == {MANIFEST, "tokens-00000.npz"}  # the shard being coded was not written
    (out / ".tokens-00001.npz.abc.tmp").write_bytes(b"half a shard")  # as a SIGKILL mid-write leaves it

    base = ("tokenize", photos, "-m", art, "--size", 24, "--shard-size", 2, "--backend", "onnxruntime")
    code, _, err = cli(*base, "-o", out)
    one_line_error(code, err, f"'{out}' holds a tokenization. Note: pass --resume to continue it, or --force")
    code, _, err = cli("tokenize", photos, "-m", art, "--size", 32, "--shard-size", 2, "-o", out, "--resume")
    one_line_error(code, err, "is another tokenization (size 24, this run 32)")
    code, _, err = cli("tokenize", photos / "p0.png", "-m", art, "--size", 24, "--shard-size", 2, "-o", out,
                       "--resume")
    one_line_error(code, err, "is another tokenization (images 5, this run 1)")
    code, stdout, err = cli(*base, "-o", out, "--resume")
    assert code == 0, err
    assert "(3 shards, 1 kept from the earlier run)" in stdout
    assert shard_names(out) == {MANIFEST, "tokens-00000.npz", "tokens-00001.npz", "tokens-00002.npz"}

    code, _, err = cli("tokenize", photos, "-m", art, "--size", 24, "-o", tmp_path / "whole.npz",
                       "--backend", "onnxruntime")
    assert code == 0, err
    whole = load_tokens(tmp_path / "whole.npz")
    tokens, got = joined(out)
    assert np.array_equal(tokens, whole.tokens) and got == whole.names

    # A finished run resumed keeps everything; a damaged shard is coded again, and says so.
    shard = out / "tokens-00001.npz"
    shard.write_bytes(shard.read_bytes()[:-100])  # a disk that lost its end
    code, stdout, err = cli(*base, "-o", out, "--resume")
    assert code == 0, err
    assert "(3 shards, 2 kept from the earlier run)" in stdout
    assert err.strip() == f"tokenize: coding '{shard}' again: '{shard}' is not a .npz or .npy file (File is not " \
        "a zip file)"
    assert np.array_equal(joined(out)[0], whole.tokens)
    first = load_tokens(out / "tokens-00000.npz")
    save_tokens(out / "tokens-00000.npz", dataclasses.replace(first, names=("x", "y")))
    code, stdout, err = cli(*base, "-o", out, "--resume")
    assert code == 0, err
    assert err.strip() == f"tokenize: coding '{out / 'tokens-00000.npz'}' again: it holds other images than its " \
        "manifest names"
    assert joined(out)[1] == whole.names


def test_force_replaces_the_shards_and_resume_starts_a_new_run(cli, tmp_path, photos, conv_exported):
    art, out = conv_exported.art, tmp_path / "shards"
    base = ("tokenize", photos, "-m", art, "--size", 24, "--backend", "onnxruntime", "-o", out)
    code, _, err = cli(*base, "--shard-size", 1, "--resume")  # nothing to resume: it starts
    assert code == 0, err
    assert len(shard_names(out)) == 6
    (out / "notes.txt").write_text("the user's")
    code, stdout, err = cli(*base, "--force")  # the default shard size: one shard
    assert code == 0, err
    assert shard_names(out) == {MANIFEST, "notes.txt", "tokens-00000.npz"} and "(1 shard)" in stdout
    assert json.loads((out / MANIFEST).read_text())["shard_size"] == 10_000


def test_unfinished_or_damaged_shard_directories_are_one_line(cli, one_line_error, tmp_path, photos,
                                                             conv_exported):
    art, out = conv_exported.art, tmp_path / "shards"
    code, _, err = cli("tokenize", photos, "-m", art, "--size", 24, "--shard-size", 2, "-o", out)
    assert code == 0, err

    def detokenize():
        return cli("detokenize", out, "-m", art, "-o", tmp_path / "back")

    manifest = json.loads((out / MANIFEST).read_text())
    (out / "tokens-00002.npz").rename(tmp_path / "last.npz")
    code, _, err = detokenize()
    one_line_error(code, err, "holds 2 of its 3 shards ('tokens-00002.npz' is missing): its tokenize did not "
                   "finish. Note: run the same tokenize again with --resume")
    (tmp_path / "last.npz").rename(out / "tokens-00002.npz")
    for damage, match in [
        ({"names_sha256": "0" * 64}, "name other images than its manifest"),
        ({"shards": 2}, "is damaged (shards is not what tokenize writes)"),
        ({"levels": "8"}, "is damaged (levels is not what tokenize writes)"),
        ({"grid": [4, 4]}, "tokens-00000.npz' is not the shard its manifest describes"),
        ({"format_version": 9}, "has format version 9"),
    ]:
        (out / MANIFEST).write_text(json.dumps({**manifest, **damage}))
        code, _, err = detokenize()
        one_line_error(code, err, match)
        assert not (tmp_path / "back").exists()
    (out / MANIFEST).unlink()
    code, _, err = detokenize()
    one_line_error(code, err, "tokens.json' is missing")
    code, _, err = cli("tokenize", photos, "-m", art, "--size", 24, "-o", out, "--resume")
    one_line_error(code, err, "holds shards but no tokens.json, so they cannot be checked. Note: pass --force")
    code, _, err = cli("tokenize", photos, "-m", art, "--size", 24, "-o", tmp_path / "last.npz", "--shard-size", 3)
    one_line_error(code, err, "--shard-size writes shards into a directory")
    (tmp_path / "file").write_text("x")
    code, _, err = cli("tokenize", photos, "-m", art, "--size", 24, "-o", tmp_path / "file")
    one_line_error(code, err, "--out '" + str(tmp_path / "file") + "' is a file")


def test_parts_share_one_tokenization(cli, one_line_error, tmp_path, photos, conv_exported):
    art, out = conv_exported.art, tmp_path / "shards"
    base = ("tokenize", photos, "-m", art, "--size", 24, "--shard-size", 1, "--backend", "onnxruntime", "-o", out)
    code, stdout, err = cli(*base, "--part", "1/2")
    assert code == 0, err
    assert shard_names(out) == {MANIFEST, "tokens-00001.npz", "tokens-00003.npz"}
    assert f"2 images -> {out}/ (part 1/2: 2 of 5 shards): tokens [2, 3, 3]" in stdout
    code, _, err = cli("detokenize", out, "-m", art, "-o", tmp_path / "back")
    one_line_error(code, err, "holds 2 of its 5 shards ('tokens-00000.npz' is missing)")
    code, stdout, err = cli(*base, "--part", "0/2")  # no --resume needed: a part joins the others
    assert code == 0, err
    assert "(part 0/2: 3 of 5 shards)" in stdout
    code, _, err = cli("tokenize", photos, "-m", art, "--size", 24, "--backend", "onnxruntime", "-o",
                       tmp_path / "whole.npz")
    assert code == 0, err
    tokens, names = joined(out)
    whole = load_tokens(tmp_path / "whole.npz")
    assert np.array_equal(tokens, whole.tokens) and names == whole.names
    code, stdout, err = cli(*base, "--part", "0/3")  # parts are only a split of the shards: any N continues it
    assert code == 0 and "(part 0/3: 2 of 5 shards, 2 kept from the earlier run)" in stdout, err

    for args, match in [(("--part", "2/2"), "--part 2/2 is not a part: I/N needs 0 <= I < N"),
                        (("--part", "1"), "--part '1' is not I/N"), (("--part", "a/b"), "--part 'a/b' is not I/N"),
                        (("--part", "0/2", "--force"), "--force with --part would delete the other parts' shards"),
                        (("--part", "0/2", "--shard-size", 2), "is another tokenization (shard_size 1, this run 2)")]:
        code, _, err = cli(*base, *args)
        one_line_error(code, err, match)


def test_parts_running_at_once_write_one_whole_tokenization(tmp_path, photos, conv_exported):
    """Two parts start together into an empty directory: each writes the same manifest, neither touches
    the other's shards or temporary files."""
    import threading

    files, out = sorted(photos.iterdir()), tmp_path / "shards"
    names = tuple(p.stem for p in files)
    errors = []

    def part(i):
        try:
            with Codec.load(conv_exported.art, "onnxruntime", entropy=False) as codec:
                tokenize_shards(codec, files, names, out, size=24, shard_size=1, part=(i, 2))
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=part, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert shard_names(out) == {MANIFEST} | {f"tokens-0000{k}.npz" for k in range(5)}
    assert joined(out)[1] == names


def test_shard_size_must_be_positive(tmp_path, photos, conv_exported):
    with Codec.load(conv_exported.art, "onnxruntime", entropy=False) as codec:
        with pytest.raises(FSQDeployError, match="--shard-size must be 1 or more, got 0"):
            tokenize_shards(codec, sorted(photos.iterdir()), ("a",) * 5, tmp_path / "x", shard_size=0)
    assert not (tmp_path / "x").exists()
