"""Tests for fsqdeploy.data: split contracts, file formats, and every user-facing error."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsqdeploy import data
from fsqdeploy.data import DATA_KINDS, ImageSplits, dataset_digest, load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import images_to_float

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _rows(arr: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in arr}


def _assert_split(splits: ImageSplits, size: int) -> None:
    for arr in (splits.train, splits.test):
        assert arr.dtype == np.uint8
        assert arr.ndim == 4 and arr.shape[1:] == (3, size, size)
        assert arr.flags.c_contiguous
        assert not arr.flags.writeable


# --- sample -----------------------------------------------------------------------------------------

def test_sample_32_split_is_disjoint_large_enough_and_complete() -> None:
    import skimage.data

    splits = load_images("sample")
    _assert_split(splits, 32)
    assert splits.source == "sample"
    # The export parity gate compares at least 512 test images at 32 px.
    assert len(splits.test) >= 512
    assert not _rows(splits.train) & _rows(splits.test)
    # Every distinct 32 px patch of the seven photos lands in exactly one split, 25% in test.
    photos = [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket",
                                                    "immunohistochemistry", "hubble_deep_field")]
    photos.append(skimage.data.stereo_motorcycle()[0])
    expected: set[bytes] = set()
    for photo in photos:
        for r in range(photo.shape[0] // 32):
            for c in range(photo.shape[1] // 32):
                expected.add(np.ascontiguousarray(photo[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32]
                                                  .transpose(2, 0, 1)).tobytes())
    assert len(splits.train) + len(splits.test) == len(expected)
    assert _rows(splits.train) | _rows(splits.test) == expected
    assert len(splits.test) == len(expected) // 4


def test_sample_is_deterministic_and_cache_is_read_only() -> None:
    first = load_images("sample")
    data._sample.cache_clear()
    again = load_images("sample")
    assert again is not first
    np.testing.assert_array_equal(first.train, again.train)
    np.testing.assert_array_equal(first.test, again.test)
    assert load_images("sample") is again  # cached
    with pytest.raises(ValueError, match="read-only"):
        again.train[0, 0, 0, 0] = 1


def test_sample_64() -> None:
    splits = load_images("sample", 64)
    _assert_split(splits, 64)
    assert len(splits.test) == (len(splits.train) + len(splits.test)) // 4
    assert len(splits.test) >= 100
    assert not _rows(splits.train) & _rows(splits.test)


# --- synthetic ----------------------------------------------------------------------------------------

def test_synthetic_shapes_variety_and_determinism() -> None:
    splits = load_images("synthetic")
    _assert_split(splits, 32)
    assert (len(splits.train), len(splits.test)) == (2048, 512)
    assert splits.source == "synthetic"
    assert len(_rows(splits.train) | _rows(splits.test)) == 2560  # no repeated images
    assert splits.train.std(axis=(1, 2, 3)).mean() > 20  # images have structure, not flat colour
    data._synthetic.cache_clear()
    again = load_images("synthetic")
    assert dataset_digest(again.train) == dataset_digest(splits.train)
    assert dataset_digest(again.test) == dataset_digest(splits.test)
    _assert_split(load_images("synthetic", 16), 16)


# --- helpers ------------------------------------------------------------------------------------------

def test_images_to_float() -> None:
    batch = np.array([0, 1, 128, 255], dtype=np.uint8).reshape(1, 1, 2, 2)
    out = images_to_float(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_array_equal(out.ravel(), np.array([0, 1, 128, 255], dtype=np.float32) / 255)
    assert out.max() == 1.0
    with pytest.raises(TypeError, match="uint8"):
        images_to_float(out)


def test_dataset_digest() -> None:
    arr = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    digest = dataset_digest(arr)
    assert len(digest) == 64 and digest == dataset_digest(arr.copy())
    assert dataset_digest(arr.reshape(1, 6, 4, 4)) != digest  # same bytes, other shape
    changed = arr.copy()
    changed[1, 2, 3, 3] ^= 1
    assert dataset_digest(changed) != digest
    strided = np.asfortranarray(arr)
    assert dataset_digest(strided) == digest  # the digest is of values, not memory layout


# --- cifar10:DIR --------------------------------------------------------------------------------------

def _write_cifar(folder: Path, per_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Write batches in the real layout: dict with bytes keys, data uint8 [N, 3072], labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = []
    for name in CIFAR_FILES:
        pixels = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                 b"data": pixels, b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        arrays.append(pixels.reshape(-1, 3, 32, 32))
    return np.concatenate(arrays[:5]), arrays[5]


@pytest.mark.parametrize("form", ["batches_folder", "parent_folder"])
def test_cifar10_reads_both_dir_forms_exactly(tmp_path: Path, form: str) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    train, test = _write_cifar(batches)
    spec_dir = batches if form == "batches_folder" else tmp_path
    splits = load_images(f"cifar10:{spec_dir}")
    _assert_split(splits, 32)
    np.testing.assert_array_equal(splits.train, train)
    np.testing.assert_array_equal(splits.test, test)
    assert splits.source == f"cifar10:{batches.resolve()}"
    assert load_images(splits.source).source == splits.source  # the canonical spec round-trips


def test_cifar10_batches_in_folder_with_another_name(tmp_path: Path) -> None:
    train, _ = _write_cifar(tmp_path / "my_cifar")
    np.testing.assert_array_equal(load_images(f"cifar10:{tmp_path / 'my_cifar'}").train, train)


def test_cifar10_accepts_numpy1_module_names(tmp_path: Path) -> None:
    # The published batches were pickled under numpy 1.x, which names numpy.core, not numpy._core.
    train, _ = _write_cifar(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    np.testing.assert_array_equal(load_images(f"cifar10:{tmp_path}").train, train)


def test_cifar10_rejects_other_image_sizes(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with pytest.raises(FSQDeployError, match="CIFAR-10 images are 32x32"):
        load_images(f"cifar10:{tmp_path}", 64)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


@pytest.mark.parametrize("payload", [
    b"not a pickle at all",
    pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:40],  # truncated
    pickle.dumps({b"labels": [1, 2]}),  # no b'data'
    pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}),  # wrong shape
    pickle.dumps({b"data": _Evil()}),  # would run code with a plain pickle.load
], ids=["garbage", "truncated", "no-data", "wrong-shape", "code"])
def test_cifar10_corrupt_batch(tmp_path: Path, payload: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    _write_cifar(batches)
    (batches / "data_batch_3").write_bytes(payload)
    with pytest.raises(FSQDeployError, match=r"data: CIFAR-10 file '.*data_batch_3' .*--download") as info:
        load_images(f"cifar10:{tmp_path}")
    assert "\n" not in str(info.value)
    assert "pwned" not in capsys.readouterr().out


# --- cifar10 download (no real network) ---------------------------------------------------------------

def _fake_archive(tmp_path: Path) -> bytes:
    """A tar.gz shaped like the real one, plus members that must never be extracted."""
    src = tmp_path / "src"
    _write_cifar(src / "cifar-10-batches-py")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buffer.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[tuple[str, float]]:
    calls: list[tuple[str, float]] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        calls.append((url, timeout))
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


@pytest.mark.parametrize("exists", [True, False])
def test_download_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "cifar"
    if exists:
        target.mkdir()
    expected = (r"^data: could not download CIFAR-10 from https://www\.cs\.toronto\.edu/~kriz/"
                r"cifar-10-python\.tar\.gz \(Temporary failure in name resolution\)\. "
                r"Note: download it elsewhere and pass cifar10:DIR$")
    with pytest.raises(FSQDeployError, match=expected):
        load_images(f"cifar10:{target}", download=True)
    assert (list(target.iterdir()) == []) if exists else not target.exists()


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, _fake_archive(tmp_path))
    target = tmp_path / "cifar"
    target.mkdir()
    with pytest.raises(FSQDeployError, match="md5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_images(f"cifar10:{target}", download=True)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("form", ["parent_folder", "batches_folder"])
def test_download_extracts_only_known_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    archive = _fake_archive(tmp_path)
    calls = _serve(monkeypatch, archive)
    monkeypatch.setattr(data, "_CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    target = tmp_path / "dl"
    batches = target / "cifar-10-batches-py"
    splits = load_images(f"cifar10:{target if form == 'parent_folder' else batches}", download=True)
    assert splits.source == f"cifar10:{batches.resolve()}"
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 30)]
    expected = load_images(f"cifar10:{tmp_path / 'src'}")
    np.testing.assert_array_equal(splits.train, expected.train)
    np.testing.assert_array_equal(splits.test, expected.test)
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]
    assert sorted(p.name for p in batches.iterdir()) == sorted(CIFAR_FILES)  # no temp dirs, no symlink
    assert not (tmp_path / "escaped.txt").exists()
    # Files present now: a second call must not download again.
    load_images(f"cifar10:{batches}", download=True)
    assert len(calls) == 1


# --- folder:DIR ---------------------------------------------------------------------------------------

def _colour(i: int) -> tuple[int, int, int]:
    return (20 * i % 256, 255 - 10 * i, 60 + 7 * i)


def test_folder_crop_size_order_and_split_rule(tmp_path: Path) -> None:
    # Solid colours of different sizes, nested folders, mixed extension case, a non-image to skip.
    sizes = [(100, 60), (48, 80), (40, 40), (33, 90), (200, 50)]
    relpaths = []
    for i in range(15):
        rel = f"{'sub/deeper/' if i % 3 == 0 else 'sub/' if i % 3 == 1 else ''}img{i:02d}"
        rel += [".png", ".PNG", ".jpg", ".JPEG", ".jpeg"][i % 5]
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", sizes[i % 5], _colour(i)).save(path, format="JPEG" if "jp" in rel.lower() else "PNG")
        relpaths.append((rel, i))
    (tmp_path / "notes.txt").write_text("not an image")
    relpaths.sort()
    is_test = [int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % 5 == 0 for rel, _ in relpaths]
    assert any(is_test) and not all(is_test)  # precondition: both splits are non-empty

    splits = load_images(f"folder:{tmp_path}")
    _assert_split(splits, 32)
    assert splits.source == f"folder:{tmp_path.resolve()}"
    assert len(splits.train) + len(splits.test) == 15 and len(splits.test) == sum(is_test)
    for arr, want_test in ((splits.train, False), (splits.test, True)):
        indices = [i for (_, i), t in zip(relpaths, is_test, strict=True) if t == want_test]
        for image, i in zip(arr, indices, strict=True):
            assert np.abs(image.astype(int) - np.array(_colour(i))[:, None, None]).max() <= 3


def test_folder_resizes_short_side_and_center_crops(tmp_path: Path) -> None:
    # 128x64: short side becomes 32 -> 64x32, and the centre crop keeps columns 16..47.
    pixels = np.zeros((64, 128, 3), np.uint8)
    pixels[:, :64] = (255, 0, 0)
    pixels[:, 64:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "halves.png")
    splits = load_images(f"folder:{tmp_path}")
    # One image: the rule leaves a split empty, so train and test are the same image.
    np.testing.assert_array_equal(splits.train, splits.test)
    image = splits.train[0].astype(int)
    assert image.shape == (3, 32, 32)
    assert (image[0, :, :14] > 250).all() and (image[2, :, :14] < 5).all()  # red left of centre
    assert (image[2, :, 18:] > 250).all() and (image[0, :, 18:] < 5).all()  # blue right of centre


# --- errors -------------------------------------------------------------------------------------------

def _error_case(tmp_path: Path, case: str) -> tuple[str, int]:
    if case == "empty folder":
        (tmp_path / "readme.txt").write_text("no images here")
    if case == "corrupt image":
        Image.new("RGB", (40, 40)).save(tmp_path / "good.png")
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    if case in ("not a directory", "cifar not a directory"):
        (tmp_path / "file.png").write_bytes(b"x")
        return f"{'folder' if case == 'not a directory' else 'cifar10'}:{tmp_path / 'file.png'}", 32
    specs = {"missing folder": (f"folder:{tmp_path / 'nope'}", 32), "empty folder": (f"folder:{tmp_path}", 32),
             "corrupt image": (f"folder:{tmp_path}", 32), "missing cifar": (f"cifar10:{tmp_path}", 32)}
    return specs[case]


@pytest.mark.parametrize(("case", "message"), [
    ("missing folder", r"folder '.*nope' does not exist"),
    ("not a directory", r"'.*file\.png' is not a directory"),
    ("cifar not a directory", r"'.*file\.png' is not a directory.*cifar10:DIR"),
    ("empty folder", r"no images in .*\.png, \.jpg, \.jpeg"),
    ("corrupt image", r"cannot read image '.*broken\.jpg'"),
    ("missing cifar", r"CIFAR-10 files missing in '.*cifar-10-batches-py' .*--download"),
])
def test_file_errors(tmp_path: Path, case: str, message: str) -> None:
    spec, size = _error_case(tmp_path, case)
    with pytest.raises(FSQDeployError, match=f"^data: {message}") as info:
        load_images(spec, size)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("spec", "size", "message"), [
    ("imagenet", 32, r"unknown data source 'imagenet'.*sample, synthetic, cifar10:DIR, folder:DIR"),
    ("", 32, "unknown data source"),
    ("cifar10", 32, r"'cifar10' needs a directory.*cifar10:DIR"),
    ("folder:", 32, r"'folder' needs a directory.*folder:DIR"),
    ("folder:   ", 32, "'folder' needs a directory"),
    ("sample:/tmp", 32, "'sample' takes no path"),
    ("sample", 0, "positive multiple of 16"),
    ("sample", 24, "positive multiple of 16"),
    ("sample", -32, "positive multiple of 16"),
    ("synthetic", 33, "positive multiple of 16"),
    ("sample", 1024, "only 0 patches"),
])
def test_spec_errors(spec: str, size: int, message: str) -> None:
    with pytest.raises(FSQDeployError, match=message):
        load_images(spec, size)


def test_data_kinds() -> None:
    assert DATA_KINDS == ("sample", "synthetic", "cifar10", "folder")


# --- streaming folder:DIR (fsqdeploy.data.stream_images / stream_photos / load_batches) ---------------

def _photo_folder(root: Path, count: int) -> list[str]:
    """``count`` PNG photos of blocky random content and varied sizes; returns their relative paths."""
    rng = np.random.default_rng(7)
    names = []
    for i in range(count):
        h, w = 40 + 8 * (i % 4), 48 + 8 * (i % 5)
        blocks = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        rel = f"{'sub/' if i % 2 else ''}p{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(np.repeat(blocks, 8, 0), 8, 1)).save(root / rel)
        names.append(rel)
    return names


def test_streamed_folder_gives_the_in_memory_pixels_and_split(tmp_path: Path) -> None:
    _photo_folder(tmp_path, 24)
    held = load_images(f"folder:{tmp_path}", 32)
    streamed = data.stream_images(f"folder:{tmp_path}", 32)
    assert isinstance(streamed.train, data.FolderImages) and streamed.source == held.source
    assert streamed.train.shape == held.train.shape and len(streamed.test) == len(held.test)
    np.testing.assert_array_equal(streamed.train[np.arange(len(held.train))], held.train)
    np.testing.assert_array_equal(streamed.test[:], held.test)
    np.testing.assert_array_equal(streamed.train[3], held.train[3])
    # held whole photos: the same, with sizes known from the headers before any decoding
    photos, streamed_photos = data.load_photos(f"folder:{tmp_path}", 16), data.stream_photos(f"folder:{tmp_path}", 16)
    assert isinstance(streamed_photos.train, data.FolderPhotos) and streamed_photos.names == photos.names
    assert streamed_photos.train.shapes == tuple(p.shape[:2] for p in photos.train)
    assert all(np.array_equal(streamed_photos.train[i], p) for i, p in enumerate(photos.train))
    assert all(np.array_equal(a, b) for a, b in zip(streamed_photos.test, photos.test, strict=True))
    assert data.stream_photos(f"folder:{tmp_path}", 16, max_test=2).names == photos.names[:2]


def test_streamed_split_is_deterministic_disjoint_and_stable_as_files_are_added(tmp_path: Path) -> None:
    names = _photo_folder(tmp_path, 40)
    train, test = data.folder_split(tmp_path)
    assert (train, test) == data.folder_split(tmp_path)
    rel = lambda paths: {p.relative_to(tmp_path).as_posix() for p in paths}  # noqa: E731
    assert rel(train).isdisjoint(rel(test)) and rel(train) | rel(test) == set(names)
    assert rel(test) == {n for n in names if int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) % 5 == 0}
    assert 0 < len(test) < len(names)
    Image.new("RGB", (48, 48)).save(tmp_path / "zz_new.png")  # a new file moves no existing one
    train2, test2 = data.folder_split(tmp_path)
    assert rel(train) <= rel(train2) and rel(test) <= rel(test2)


def test_streamed_datasets_hold_paths_not_pixels(tmp_path: Path) -> None:
    _photo_folder(tmp_path, 24)
    images, photos = data.stream_images(f"folder:{tmp_path}", 32).train, data.stream_photos(f"folder:{tmp_path}").train
    for dataset in (images, photos):
        assert not any(isinstance(v, np.ndarray) for v in vars(dataset).values())
        # what a DataLoader worker receives: well under one decoded image (40x48x3 = 5760 bytes) per file
        assert len(pickle.dumps(dataset)) < 300 * len(dataset)


def test_batches_come_in_order_for_any_worker_count(tmp_path: Path) -> None:
    _photo_folder(tmp_path, 24)
    images = data.stream_images(f"folder:{tmp_path}", 32).train
    order = np.random.default_rng(0).permutation(len(images))
    index_batches = [order[i : i + 5] for i in range(0, len(order), 5)]
    import torch

    rng = torch.get_rng_state()
    in_process = list(data.image_batches(images, index_batches, 0))
    by_workers = list(data.image_batches(images, index_batches, 2))
    assert torch.equal(rng, torch.get_rng_state())  # streaming leaves training's random stream alone
    assert len(in_process) == len(index_batches)
    for idx, a, b in zip(index_batches, in_process, by_workers, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, images[idx])
        assert a.flags.c_contiguous and b.flags.c_contiguous  # the layout in-memory batches have


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_file_met_while_streaming_is_one_line(tmp_path: Path, workers: int) -> None:
    _photo_folder(tmp_path, 12)
    good = (tmp_path / "p000.png").read_bytes()
    (tmp_path / "p000.png").write_bytes(good[: len(good) // 2])  # a valid header, truncated pixels
    images = data.stream_images(f"folder:{tmp_path}", 32)
    where = images.train if any(p.name == "p000.png" for p in images.train.paths) else images.test
    with pytest.raises(FSQDeployError) as raised:
        list(data.image_batches(where, [np.arange(len(where))], workers))
    message = str(raised.value)
    assert "p000.png" in message and "continue the run with --resume" in message
    assert "\n" not in message and "Traceback" not in message
    # a file whose header is unreadable is refused when streaming starts, before any training
    (tmp_path / "p001.png").write_bytes(b"not a png at all")
    with pytest.raises(FSQDeployError, match=r"cannot read image '.*p001\.png'.*remove or replace the file"):
        data.FolderPhotos(tuple(sorted(tmp_path.rglob("*.png"))))
