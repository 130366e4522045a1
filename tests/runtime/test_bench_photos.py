"""fsqdeploy bench on whole photos: each photo through Codec.compress/decompress (the whole .fsq file,
header included) against JPEG and WebP at no more bytes, per photo and overall, for a spatial (conv)
artifact and a patch one; the quality sweep and the rate-distortion plot over several artifacts; the
user errors. The conv artifact is torch-only (checkpoint + manifest, as tests/runtime/test_spatial_codec.py
builds it), so these tests hold without the ONNX export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from test_spatial_codec import conv_model, torch_artifact

from fsqdeploy.data import folder_files, folder_split, load_photos
from fsqdeploy.images import hwc_uint8_to_chw
from fsqdeploy.metrics import fixed_bits
from fsqdeploy.runtime.bench import baselines, photos
from fsqdeploy.runtime.bench.rdplot import curves
from fsqdeploy.runtime.codec import Codec

QUICK = ["--backends", "torch", "--threads", "1", "--warmup", "0", "--iters", "1", "--batch-sizes", "2",
         "--images", "4", "--data", "sample", "--tile-size", "64", "--tile-images", "1"]
SIZES = [(40, 56), (48, 80), (33, 47)]  # the last is no multiple of f: compress pads it and crops back


@pytest.fixture(scope="module")
def conv_art(tmp_path_factory):
    return torch_artifact(tmp_path_factory.mktemp("bench_conv_art"), conv_model((8, 8, 8)))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Three small crops of a training photo as PNGs (small, so the baselines' searches stay quick)."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    img = skimage.data.astronaut()
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(img[60 * i : 60 * i + h, 90 * i : 90 * i + w]).save(root / f"p{i}.png")
    return root


def _by(report, mode, codec="fsq"):
    return {b["image"]: b for b in report["baselines"]
            if b["scope"] == "photo" and b["mode"] == mode and b["codec"] == codec}


def test_whole_photo_rows_of_a_spatial_artifact(cli, conv_art, photo_dir, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code, stdout, err = cli("bench", conv_art, *QUICK, "--photo-data", f"folder:{photo_dir}", "--json", out,
                            "--plot", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "whole photos of folder:" in stdout and "FSQ beats JPEG at no more bytes" in stdout
    r = json.loads(out.read_text())
    assert (r["schema"], r["version"]) == ("fsqdeploy-bench", 4)
    a = r["artifact"]
    levels = [8, 5, 5, 5]
    assert fixed_bits(levels) == 10 and (a["arch"], a["downsample"], a["bits_per_cell"]) == ("conv", 8, 10)
    # one 32x32 bench crop holds (32/8)^2 = 16 cells of 10 bits
    assert a["bits_per_image"] == r["fidelity"][0]["bits_per_image"] == 160 and a["bits_per_pixel"] == 160 / 1024
    patch = next(b for b in r["baselines"] if b["scope"] == "patch" and b["codec"] == "fsq")
    assert patch["bytes_mean"] == 20
    assert not any(b["scope"] == "tile" for b in r["baselines"]) and r["settings"]["tiles"] is None

    held_out = load_photos(f"folder:{photo_dir}")
    assert r["settings"]["photos"] == {"data": held_out.source, "images": len(held_out.test),
                                       "names": list(held_out.names), "sweep": False,
                                       "selection": "every file: the model trained on synthetic, none of them"}
    fsq, jpeg, webp = _by(r, "codec"), _by(r, "equal_bytes", "jpeg"), _by(r, "equal_bytes", "webp")
    assert list(fsq) == [*held_out.names, None] and list(jpeg) == list(webp) == list(fsq)
    with Codec.load(conv_art, "torch") as codec:
        for name, photo in zip(held_out.names, held_out.test):
            row, data = fsq[name], codec.compress(photo)
            h, w = photo.shape[:2]
            # the whole file, header included, is what the baselines may spend
            assert row["file_bytes"] == len(data) == row["bytes_mean"] and row["image_size"] == [h, w]
            assert row["layout"] == "latent grid" and row["grid"] == [math.ceil(h / 8), math.ceil(w / 8)]
            assert row["payload_bytes"] == math.ceil(math.ceil(h / 8) * math.ceil(w / 8) * 10 / 8)
            assert row["coding"] == 0 and row["table_bits"] is None  # fixed rate: exact by construction
            assert row["bits_per_pixel"] == pytest.approx(8 * len(data) / (h * w))
            psnr, ssim = baselines.quality_vs_input(hwc_uint8_to_chw(codec.decompress(data)[None]),
                                                    hwc_uint8_to_chw(photo[None]))
            assert (row["psnr_vs_input"], row["ssim_vs_input"]) == pytest.approx((psnr, ssim))
            for baseline, rows in ((baselines.JPEG(), jpeg), (baselines.WebP(), webp)):
                b = rows[name]
                assert b["budget_bytes"] == len(data) and b["image"] == name
                if b["images_within_budget"]:  # the best quality that fits: one more does not
                    q = int(b["quality_mean"])
                    assert b["bytes_mean"] == len(baseline.encode(photo, q)) <= len(data)
                    assert q == baseline.max_quality or len(baseline.encode(photo, q + 1)) > len(data)
                else:
                    assert len(baseline.encode(photo, 1)) > len(data) and b["psnr_vs_input"] is None

    overall = fsq[None]
    named = [fsq[n] for n in held_out.names]
    assert overall["images"] == len(named) and overall["image"] is None
    assert overall["bits_per_pixel"] == pytest.approx(np.mean([b["bits_per_pixel"] for b in named]))
    assert overall["psnr_vs_input"] == pytest.approx(np.mean([b["psnr_vs_input"] for b in named]))
    for name, rows in (("jpeg", jpeg), ("webp", webp)):
        fitted = [n for n in held_out.names if rows[n]["images_within_budget"]]
        gains = [fsq[n]["psnr_vs_input"] - rows[n]["psnr_vs_input"] for n in fitted]
        beat = overall["beats"][name]
        assert (beat["images"], beat["wins"]) == (len(fitted), sum(g > 0 for g in gains))
        assert rows[None]["images_within_budget"] == len(fitted)
        if gains:
            assert beat["psnr_gain_db"] == pytest.approx(np.mean(gains))
    assert not any(b["mode"] == "quality" for b in r["baselines"])  # the sweep is --rd-plot's


def test_where_a_baseline_cannot_get_as_small_its_smallest_file_is_compared():
    """A codec file smaller than the baseline's lowest quality: no equal-bytes row, so the overall row
    compares against the smallest file (more bytes), and the table shows it marked with *."""
    import io

    from rich.console import Console

    from fsqdeploy.runtime.bench.report import _photos

    def codec(name, size, psnr):
        return {"codec": "fsq", "scope": photos.SCOPE, "mode": "codec", "image": name, "image_size": [10, 10],
                "bytes_mean": float(size), "file_bytes": size, "bits_per_pixel": size / 12.5, "psnr_vs_input": psnr,
                "ssim_vs_input": 0.5, "coding": 0, "table_bits": None, "payload_bytes": size - 130}

    def jpeg(name, fits, size, psnr):
        common = {"codec": "jpeg", "scope": photos.SCOPE, "image": name, "images": 1}
        at = {**common, "mode": "equal_bytes", "images_within_budget": int(fits), "quality_mean": 5.0 if fits else None,
              "bytes_mean": size if fits else None, "psnr_vs_input": psnr if fits else None,
              "ssim_vs_input": 0.4 if fits else None}
        low = {**common, "mode": "min_quality", "quality": 1, "bytes_mean": float(size + 500 * (not fits)),
               "psnr_vs_input": psnr - 1, "ssim_vs_input": 0.3}
        return [at, low]

    cases = [("a", 1000, 25.0, True, 900, 24.0), ("b", 800, 22.0, False, 1000, 23.5),
             ("c", 500, 30.0, False, 700, 26.0)]
    codec_rows = [codec(n, size, p) for n, size, p, *_ in cases]
    per_photo = codec_rows + [r for n, _, _, fits, jsize, jpsnr in cases for r in jpeg(n, fits, jsize, jpsnr)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(photos, "BASELINES", [baselines.JPEG()])
        overall = photos.overall_rows(per_photo, codec_rows)
    fsq = overall[0]
    assert fsq["beats"]["jpeg"] == {"images": 1, "wins": 1, "psnr_gain_db": pytest.approx(1.0)}
    # b: 22.0 against 22.5 at 1500 bytes (a loss); c: 30.0 against 25.0 at 1200 bytes (a win)
    assert fsq["beats_smallest"]["jpeg"] == {"images": 2, "wins": 1, "psnr_gain_db": pytest.approx(2.25),
                                             "bytes_ratio": pytest.approx((800 / 1500 + 500 / 1200) / 2)}
    out = io.StringIO()
    report = {"baselines": per_photo + overall, "settings": {"photos": {"data": "test"}}}
    _photos(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "1500*" in text and "1200*" in text and "900 " in text
    assert "where JPEG cannot get as small: FSQ beats its smallest file (PSNR) on 1 of 2 photos, +2.25 dB" in text


def test_rd_plot_over_a_patch_and_a_spatial_artifact(cli, conv_art, art32, photo_dir, tmp_path):
    out, png = tmp_path / "set.json", tmp_path / "rd.png"
    code, stdout, err = cli("bench", art32.art, conv_art, *QUICK, "--photo-data", f"folder:{photo_dir}",
                            "--photo-images", "2", "--json", out, "--rd-plot", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    s = json.loads(out.read_text())
    assert (s["schema"], s["version"]) == ("fsqdeploy-bench-set", 1)
    paper, conv = s["reports"]
    assert (paper["artifact"]["arch"], conv["artifact"]["arch"]) == ("paper", "conv")
    for r in s["reports"]:  # the same two photos for both, and the sweep beside them
        assert r["settings"]["photos"]["images"] == 2 and r["settings"]["photos"]["sweep"]
        assert len(_by(r, "codec")) == 3
        for name in ("jpeg", "webp"):
            sweep = [b for b in r["baselines"] if b["mode"] == "quality" and b["codec"] == name]
            assert [b["quality"] for b in sweep] == list(photos.SWEEP_QUALITIES) and sweep[0]["images"] == 2
            assert sweep[-1]["bytes_mean"] > sweep[0]["bytes_mean"] and sweep[-1]["psnr_vs_input"] > sweep[0][
                "psnr_vs_input"]
    assert paper["settings"]["photos"]["names"] == conv["settings"]["photos"]["names"]
    # a patch model's file holds patches (layout 0), header and checksums around them
    assert all(b["layout"] == "patches" for n, b in _by(paper, "codec").items() if n is not None)
    assert list(curves(s["reports"])) == ["jpeg", "webp"]


@pytest.mark.parametrize("args,match", [
    (["--plot", "x.png"], "--plot draws one artifact"),
    (["--rd-plot", "x.png", "--no-baselines"], "--rd-plot needs the whole-photo comparison"),
    (["--rd-plot", "x.png", "--photo-images", "0"], "--rd-plot needs the whole-photo comparison"),
])
def test_several_artifacts_user_errors(cli, one_line_error, conv_art, art32, args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("bench", art32.art, conv_art, *QUICK, *args)
    one_line_error(code, err, match)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args,match", [
    (["--photo-images", "-1"], "--photo-images must be 0"),
    (["--photo-data", "cifar10:/nowhere"], "is not a source of whole images"),
    (["--photo-data", "folder:/nowhere/at/all"], "does not exist"),
])
def test_photo_option_errors(cli, one_line_error, conv_art, args, match):
    code, _, err = cli("bench", conv_art, *QUICK, *args)
    one_line_error(code, err, match)


def test_photo_source_defaults():
    """--photo-data wins; else --data when it holds whole photos; else the sample's held-out photos."""
    assert photos.photo_source("folder:/a", "sample") == ("folder:/a", True)
    assert photos.photo_source(None, "folder:/b") == ("folder:/b", True)
    assert photos.photo_source(None, "sample") == ("sample", True)
    assert photos.photo_source(None, "synthetic") == ("sample", False)
    assert photos.photo_source(None, "cifar10:/c") == ("sample", False)
    assert photos.photo_source(None, None) == ("sample", False)


def test_every_backend_codes_the_whole_photos_as_pytorch_does(cli, conv_exported, photo_dir, tmp_path, monkeypatch):
    """An exported conv artifact: each CPU backend's indices of every whole photo (three sizes, one
    no multiple of f) equal PyTorch's, so every backend writes the same .fsq files; the gate says so."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("COLUMNS", "400")  # the whole-photo line on one line
    out = tmp_path / "bench.json"
    args = [a if a != "torch" else "torch,onnxruntime,openvino" for a in QUICK]
    code, stdout, err = cli("bench", conv_exported.art, *args, "--photo-data", f"folder:{photo_dir}", "--json", out)
    assert code == 0, err
    rows = {f["backend"]: f for f in json.loads(out.read_text())["fidelity"]}
    assert set(rows) == {"torch", "onnxruntime", "openvino"}
    for backend in ("onnxruntime", "openvino"):
        assert rows[backend]["photos"] == len(SIZES) and rows[backend]["photo_index_agreement"] == 1.0
        # The same files decoded: float sums an ulp apart may move a value at a rounding boundary.
        assert rows[backend]["photo_pixel_agreement"] > 0.999 and rows[backend]["photo_max_pixel_error"] <= 1
        assert rows[backend]["gate"]["passed"]
    assert "whole photos (3, each at its own size): indices equal to the reference: onnxruntime 100" in stdout
    assert "the same files decoded, 8-bit pixels equal to the reference's: onnxruntime " in stdout


def test_a_backend_that_flips_photo_indices_fails_the_gate() -> None:
    from fsqdeploy.runtime.bench.fidelity import check_gate
    from fsqdeploy.runtime.bench.settings import Gates

    row = {"reference": False, "precision": "fp32", "reduced_precision": None, "index_agreement": 1.0,
           "max_abs_error": 0.0, "photos": 3, "photo_index_agreement": 0.9999, "photo_flipped_indices": 2}
    gate = check_gate(row, Gates())
    assert not gate["passed"] and "whole-photo index agreement 99.9900%" in gate["reasons"][0]


def test_an_entropy_coded_row_reports_its_tables_cross_entropy_beside_its_bytes():
    """table_bits is what the file's tables say its indices cost; the payload's actual bytes sit
    within a few lane states of it (docs/bitstream.md), and the report prints the difference."""
    from fsqdeploy.entropy import Prior, quantize_counts
    from fsqdeploy.runtime.bench.report import _vs_tables
    from fsqdeploy.runtime.bitstream import FsqHeader, read_fsq, write_fsq

    levels = (7, 7, 5)
    rng = np.random.default_rng(0)
    prior = Prior(levels, [quantize_counts([(s + 1) ** 3 for s in range(level)]) for level in levels])
    cells = np.stack([rng.choice(level, 4000, p=np.array(t) / 65536) for level, t in zip(levels, prior.frequencies)],
                     axis=1).astype(np.int32)
    header = FsqHeader.for_grid(b"m" * 32, 16 * 50, 16 * 80, 16, levels).with_prior(prior)
    data = write_fsq(header, cells, prior)
    read_header, indices = read_fsq(data, prior)
    bits = photos.table_bits(read_header, indices, prior)
    assert bits == pytest.approx(prior.cross_entropy_bits(cells))
    payload = len(data) - read_header.header_length - 4
    assert bits / 8 < payload < bits / 8 + 4 * 32 + 8
    row = {"coding": 1, "table_bits": bits, "payload_bytes": payload}
    assert _vs_tables(row) == f"{8 * payload / bits - 1:+.2%}"
    # coding 2: the context tables' cross-entropy of the grid
    contexts = [[quantize_counts([(s + 1 + (s == c % level) * 40) ** 3 for s in range(level)])
                 for c in range(level * level)] for level in levels]
    context_prior = Prior(levels, prior.frequencies, contexts)
    header = header.with_prior(context_prior)
    data = write_fsq(header, cells, context_prior)
    read_header, indices = read_fsq(data, context_prior)
    bits = photos.table_bits(read_header, indices, context_prior)
    assert read_header.coding == 2
    assert bits == pytest.approx(context_prior.context_cross_entropy_bits(cells.reshape(50, 80, 3)))
    payload = len(data) - read_header.header_length - 4
    assert bits / 8 < payload < bits / 8 + 4 * 32 + 8
    assert _vs_tables({"coding": 0, "table_bits": None}) == "fixed"
    assert photos.table_bits(FsqHeader.for_grid(b"m" * 32, 32, 32, 16, levels), indices, prior) is None


# -- which photos: never ones the model trained on ---------------------------------------------------

@pytest.fixture(scope="module")
def ten_photos(tmp_path_factory):
    """folder/ with ten 16x24 PNGs in two subfolders, enough that its path-hash split has both sides."""
    root = tmp_path_factory.mktemp("ten") / "folder"
    rng = np.random.default_rng(0)
    for i in range(10):
        path = root / f"s{i % 2}" / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(path)
    return root


def _rel(root, paths):
    return [p.relative_to(root).as_posix() for p in paths]


def test_bench_photos_of_a_folder_the_model_never_saw_are_every_file(ten_photos):
    every = _rel(ten_photos, folder_files(ten_photos))
    for trained_on in (None, "sample", "synthetic", "cifar10:/x"):
        p = photos.load_bench_photos(f"folder:{ten_photos}", None, trained_on)
        assert list(p.names) == every and p.warning is None, trained_on
        assert p.selection.startswith("every file") and len(p.images) == 10
    first = photos.load_bench_photos(f"folder:{ten_photos}", 3, "sample")
    assert list(first.names) == every[:3] and first.images[0].shape == (16, 24, 3)


def test_bench_photos_of_the_training_folder_are_its_held_out_split(ten_photos):
    train, test = folder_split(ten_photos)
    assert 0 < len(test) < 10  # the fixture's split has both sides
    p = photos.load_bench_photos(f"folder:{ten_photos}", None, f"folder:{ten_photos}")
    assert list(p.names) == _rel(ten_photos, test) and p.warning is None
    assert p.selection == f"{len(test)} of 10 files: the other {len(train)} are in the training split of " \
                          f"folder:{ten_photos}"
    assert set(p.names) == set(load_photos(f"folder:{ten_photos}").names)  # as training holds them out


def test_bench_photos_of_a_subfolder_of_the_training_folder_skip_what_it_trained_on(ten_photos):
    """Trained on folder/, benched on folder/s0/: the split is by path under folder/, so what s0/
    holds of folder/'s train split is left out, whatever s0/'s own split would be."""
    sub = ten_photos / "s0"
    trained = set(folder_split(ten_photos)[0])
    p = photos.load_bench_photos(f"folder:{sub}", None, f"folder:{ten_photos}")
    expected = [q for q in folder_files(sub) if q not in trained]
    assert expected and list(p.names) == _rel(sub, expected)
    # and the other way round: trained on s0/ alone, benched on all of folder/
    p = photos.load_bench_photos(f"folder:{ten_photos}", None, f"folder:{sub}")
    trained_sub = set(folder_split(sub)[0])
    assert list(p.names) == _rel(ten_photos, [q for q in folder_files(ten_photos) if q not in trained_sub])


def test_bench_photos_a_model_trained_on_all_of_are_benched_with_a_warning(photo_dir, tmp_path):
    # photo_dir's three files leave its hash split empty on one side, so training used all three
    assert folder_split(photo_dir)[0] == folder_split(photo_dir)[1]
    p = photos.load_bench_photos(f"folder:{photo_dir}", None, f"folder:{photo_dir}")
    assert len(p.names) == 3 and "do not measure how it does on photos it never saw" in p.warning
    gone = photos.load_bench_photos(f"folder:{photo_dir}", None, f"folder:{tmp_path / 'gone'}")
    assert len(gone.names) == 3 and "is gone" in gone.warning


def test_bench_warns_on_photos_the_model_trained_on(cli, photo_dir, tmp_path):
    art = torch_artifact(tmp_path / "art", conv_model((8, 8, 8)), data=f"folder:{photo_dir}")
    code, stdout, err = cli("bench", art, *QUICK, "--photo-data", f"folder:{photo_dir}", "--json",
                            tmp_path / "b.json")
    assert code == 0, err
    assert "note: the model trained on every photo of folder:" in " ".join(stdout.split())
    settings = json.loads((tmp_path / "b.json").read_text())["settings"]
    assert settings["photos"]["selection"].startswith("every file, all of them in the training split")
    assert "do not measure" in settings["photo_note"]


def test_a_photo_smaller_than_the_ssim_window_is_one_line(cli, one_line_error, conv_art, tmp_path):
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "tiny.png")
    code, _, err = cli("bench", conv_art, *QUICK, "--photo-data", f"folder:{tmp_path}")
    one_line_error(code, err, "is 7x5 px, smaller than SSIM's 7 px window")


def test_a_spatial_artifact_is_timed_on_one_whole_photo_too(cli, conv_art, art32, tmp_path):
    """--photo-size WxH (default 768x512): batch-1 rows on one image of that size, padded to
    multiples of f, beside the crop batches, compared with torch at the same size; 0 turns them
    off, and patch models have none."""
    out = tmp_path / "b.json"
    code, stdout, err = cli("bench", conv_art, *QUICK, "--no-baselines", "--photo-size", "50x20", "--json", out)
    assert code == 0, err
    r = json.loads(out.read_text())
    photo = [row for row in r["results"] if row["scope"] == "photo"]
    assert [(row["stage"], row["batch_size"], row["image_size"]) for row in photo] == [
        ("encode", 1, [24, 56]), ("decode", 1, [24, 56]), ("roundtrip", 1, [24, 56])]  # f = 8: 20x50 padded
    assert {row["image_size"][0] for row in r["results"] if row["scope"] == "patch"} == {32}
    assert r["settings"]["photo_size"] == [24, 56]
    assert "56x24" in stdout and " 1.00x" in stdout
    code, _, err = cli("bench", conv_art, *QUICK, "--no-baselines", "--photo-size", "0", "--json", out)
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["settings"]["photo_size"] is None and {row["scope"] for row in r["results"]} == {"patch"}
    code, _, err = cli("bench", art32.art, *QUICK, "--no-baselines", "--json", out)
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["settings"]["photo_size"] is None and {row["scope"] for row in r["results"]} == {"patch"}


def test_the_timing_photo_is_the_bench_image_tiled_and_padded():
    from fsqdeploy.runtime.bench.run import timing_photo

    images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    photo = timing_photo(images, (20, 50), 8)
    assert photo.shape == (1, 3, 24, 56) and photo.dtype == np.float32
    np.testing.assert_array_equal(photo[0, :, :24, 32:56], images[0, :, :24, :24])
