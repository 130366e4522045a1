"""The entropy coder's prior at export: tables (per channel and per context) from the training photos
only, stored with their hash, checked on load; Codec writes coding 2 with it (coding 1 with a prior
without context tables, coding 0 when asked or when smaller) and reads them all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsqdeploy.artifact import file_entry, read_manifest, write_manifest
from fsqdeploy.data import load_photos
from fsqdeploy.entropy import PRIOR_FILE, TOTAL, Prior
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.prior import build_prior, count_indices, latent_grids
from fsqdeploy.runtime.bitstream import CODING_CONTEXT, CODING_FIXED, CODING_RANS, read_fsq
from fsqdeploy.runtime.codec import Codec


@pytest.fixture(scope="module")
def prior_art(conv_exported):
    return conv_exported.art


@pytest.fixture(scope="module")
def codec(prior_art):
    with Codec.load(prior_art, "onnxruntime") as c:
        yield c


def test_export_writes_the_prior_from_the_training_photos(conv_exported) -> None:
    art, model = conv_exported.art, conv_exported.model
    manifest = read_manifest(art)
    prior = Prior.load(art / PRIOR_FILE)
    record = manifest["prior"]
    assert manifest["files"][PRIOR_FILE] == file_entry(art / PRIOR_FILE)
    assert record["file"] == PRIOR_FILE and record["coding"] == 2 and record["sha256"] == prior.sha256.hex()
    splits = load_photos("sample", model.config.downsample)
    assert record["split"] == "train" and record["photos"] == len(splits.train)
    assert prior.levels == tuple(model.levels) and prior.coding == 2
    assert all(sum(t) == TOTAL and min(t) >= 1 for t in prior.frequencies)
    assert all(len(column) == level**2 and all(sum(t) == TOTAL and min(t) >= 1 for t in column)
               for level, column in zip(prior.levels, prior.context_frequencies))
    assert prior.context_symbols_per_lane >= 2048  # never more lanes than coding 1's rule
    # the same tables again from the training photos, and not those of the held-out photos
    train = latent_grids(model, splits.train)
    assert build_prior(model.levels, train) == prior
    assert build_prior(model.levels, latent_grids(model, splits.test)) != prior
    counts = count_indices(model.levels, train)
    assert counts.sum() == record["symbols"]


def test_compress_entropy_codes_and_fixed_rate_stays_available(prior_art, codec) -> None:
    photo = load_photos("sample").test[0]
    assert codec.prior is not None and codec.entropy
    coded = codec.compress(photo)
    header, indices = read_fsq(coded, codec.prior)
    assert header.coding == CODING_CONTEXT and header.prior_hash == codec.prior.sha256
    with Codec.load(prior_art, "onnxruntime", entropy=False) as fixed:
        plain = fixed.compress(photo)
        fixed_header, fixed_indices = read_fsq(plain)
        assert fixed_header.coding == CODING_FIXED
        np.testing.assert_array_equal(indices, fixed_indices)
        # both codecs read both codings, to the same image
        np.testing.assert_array_equal(fixed.decompress(coded), codec.decompress(plain))
    ideal = codec.prior.context_cross_entropy_bits(indices.reshape(header.grid_rows, header.grid_cols, -1)) / 8
    payload = len(coded) - header.header_length - 4
    assert ideal <= payload <= 1.02 * ideal + 8


def test_foreign_or_tampered_priors_are_refused(tmp_path, prior_art, codec) -> None:
    coded = codec.compress(load_photos("sample").test[1])
    other = tmp_path / "other"
    shutil.copytree(prior_art, other)
    record = json.loads((other / PRIOR_FILE).read_text())
    table = record["frequencies"][0]
    big = int(np.argmax(table))
    table[big] -= 1
    table[(big + 1) % len(table)] += 1
    foreign = Prior(record["levels"], record["frequencies"], record["context_frequencies"],
                    record["context_symbols_per_lane"])
    foreign.save(other / PRIOR_FILE, record["source"])
    manifest = read_manifest(other)
    manifest["files"][PRIOR_FILE] = file_entry(other / PRIOR_FILE)
    manifest["prior"]["sha256"] = foreign.sha256.hex()
    write_manifest(other, manifest)
    with Codec.load(other, "onnxruntime") as c, pytest.raises(FSQDeployError, match="foreign prior"):
        c.decompress(coded)

    (other / PRIOR_FILE).write_text((other / PRIOR_FILE).read_text().replace('"coding": 2', '"coding": 1'))
    with pytest.raises(FSQDeployError, match="prior.json: sha256 differs from the manifest"):
        Codec.load(other, "onnxruntime")
    record["frequencies"][0][0] = 0
    (other / PRIOR_FILE).write_text(json.dumps(record))
    with pytest.raises(FSQDeployError, match="prior: table 0 gives symbol 0 frequency 0"):
        Prior.load(other / PRIOR_FILE)
    record = foreign.to_json({})
    record["sha256"] = "00" * 32
    (other / PRIOR_FILE).write_text(json.dumps(record))
    with pytest.raises(FSQDeployError, match="records sha256 00000000.. but its tables hash to"):
        Prior.load(other / PRIOR_FILE)


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fsqdeploy.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_fixed_rate_and_decompress_of_both(tmp_path, prior_art) -> None:
    Image.fromarray(load_photos("sample").test[2][:40, :72]).save(tmp_path / "p.png")
    for name, extra in (("rans", ()), ("fixed", ("--fixed-rate",))):
        r = run_cli("compress", tmp_path / "p.png", "-m", prior_art, "-o", tmp_path / f"{name}.fsq",
                    "--backend", "onnxruntime", *extra)
        assert r.returncode == 0, r.stderr
        r = run_cli("decompress", tmp_path / f"{name}.fsq", "-m", prior_art, "-o", tmp_path / f"{name}.png",
                    "--backend", "onnxruntime")
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "rans.fsq").read_bytes()[49] == 2 and (tmp_path / "fixed.fsq").read_bytes()[49] == 0
    assert Image.open(tmp_path / "rans.png").tobytes() == Image.open(tmp_path / "fixed.png").tobytes()
    shutil.copytree(prior_art, tmp_path / "noprior", ignore=shutil.ignore_patterns(PRIOR_FILE))
    manifest = read_manifest(tmp_path / "noprior")
    del manifest["files"][PRIOR_FILE], manifest["prior"]
    write_manifest(tmp_path / "noprior", manifest)
    r = run_cli("decompress", tmp_path / "rans.fsq", "-m", tmp_path / "noprior", "-o", tmp_path / "x.png")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "no prior was given" in lines[0], r.stderr
    assert not (tmp_path / "x.png").exists()


def test_prior_file_must_be_listed(tmp_path, prior_art) -> None:
    art = Path(shutil.copytree(prior_art, tmp_path / "art"))
    manifest = read_manifest(art)
    del manifest["files"][PRIOR_FILE]
    write_manifest(art, manifest)
    with pytest.raises(FSQDeployError, match="names a prior file 'prior.json' its manifest does not list"):
        Codec.load(art, "onnxruntime")


def test_a_prior_that_would_inflate_a_file_falls_back_to_fixed_rate(prior_art) -> None:
    """A photo unlike the prior's: coding 2 (or 1) would cost more than the fixed rate, so the file
    is coding 0 and exactly fixed-rate size; a photo the prior fits stays coding 2 and smaller."""
    from fsqdeploy.runtime.bitstream import file_length

    photo = load_photos("sample").test[0]
    with Codec.load(prior_art, "onnxruntime") as codec:
        good_prior = codec.prior
        good = codec.compress(photo)
        header, _ = read_fsq(good, codec.prior)
        assert header.coding == CODING_CONTEXT and len(good) < file_length(codec.levels, header.num_cells)
        expected = codec.decompress(good)
        # all mass on each column's last level: every other index costs ~16 bits
        last = tuple((1,) * (n - 1) + (TOTAL - (n - 1),) for n in codec.prior.levels)
        contexts = [[table] * n * n for n, table in zip(codec.prior.levels, last)]
        for prior in (Prior(codec.prior.levels, last), Prior(codec.prior.levels, last, contexts)):
            codec.prior = prior
            data = codec.compress(photo)
            header, _ = read_fsq(data, codec.prior)
            assert header.coding == CODING_FIXED and len(data) == file_length(codec.levels, header.num_cells)
            np.testing.assert_array_equal(codec.decompress(data), expected)
        # a prior without context tables writes coding 1
        codec.prior = Prior(codec.prior.levels, good_prior.frequencies)
        header, _ = read_fsq(codec.compress(photo), codec.prior)
        assert header.coding == CODING_RANS
