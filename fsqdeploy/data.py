"""Image sources for training and evaluating a codec: ``load_images(spec)`` -> uint8 train/test splits.

Pixels stay uint8 ``[N, 3, S, S]`` in memory (4x smaller than float32) and become float32 in [0, 1]
only per batch, through ``images_to_float``. Every returned array is C-contiguous and read-only, so
cached splits cannot be corrupted by a caller and every source behaves the same way.

Specs: ``sample`` (photographs shipped with scikit-image, never downloads), ``synthetic``
(procedural shapes for smoke tests), ``cifar10:DIR`` and ``folder:DIR``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import files_under
from fsqdeploy.images import IMAGE_SUFFIXES

DATA_KINDS = ("sample", "synthetic", "cifar10", "folder")

_SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                  "hubble_deep_field", "stereo_motorcycle")
_SAMPLE_SPLIT_SEED = 20240601  # fixed on purpose: the test split must not move with a user's seed
_SYNTHETIC_SEED, _SYNTHETIC_TRAIN, _SYNTHETIC_TEST = 1234, 2048, 512

_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the CIFAR-10 page
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_FILES = (*_CIFAR10_TRAIN, "test_batch")


@dataclass(frozen=True)
class ImageSplits:
    train: np.ndarray  # uint8 [N, 3, S, S], C-contiguous, read-only (FolderImages from stream_images)
    test: np.ndarray  # uint8 [M, 3, S, S], C-contiguous, read-only (FolderImages from stream_images)
    source: str  # canonical spec: "sample", "synthetic", "cifar10:/abs/dir", "folder:/abs/dir"


def load_images(spec: str, image_size: int = 32, *, download: bool = False) -> ImageSplits:
    """Load the train/test splits named by ``spec`` at ``image_size`` (a positive multiple of 16).

    ``sample`` and ``synthetic`` are cached in-process; ``download`` only applies to ``cifar10:DIR``.
    Every user mistake (bad spec or size, missing or corrupt files, no network) raises FSQDeployError.
    """
    image_size = _checked_size(image_size)
    kind, sep, arg = spec.strip().partition(":")
    if kind in ("sample", "synthetic"):
        if sep:
            raise FSQDeployError(f"data: '{kind}' takes no path, got {spec!r}. Note: pass just '{kind}'")
        return _sample(image_size) if kind == "sample" else _synthetic(image_size)
    if kind in ("cifar10", "folder"):
        if not arg.strip():
            raise FSQDeployError(f"data: '{kind}' needs a directory, got {spec!r}. Note: pass {kind}:DIR")
        root = Path(arg.strip()).expanduser().resolve()
        return _cifar10(root, image_size, download) if kind == "cifar10" else _folder(root, image_size)
    raise FSQDeployError(f"data: unknown data source {spec!r}. "
                         "Note: use one of sample, synthetic, cifar10:DIR, folder:DIR")


def _checked_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size <= 0 or image_size % 16:
        raise FSQDeployError(f"data: image_size must be a positive multiple of 16, got {image_size!r}. "
                             "Note: use e.g. 32, 64 or 128")
    return int(image_size)


def dataset_digest(splits_array: np.ndarray) -> str:
    """sha256 hex of ``"<dtype>:<d0,d1,...>\\n"`` followed by the array's C-order bytes."""
    arr = np.ascontiguousarray(splits_array)
    digest = hashlib.sha256(f"{arr.dtype.str}:{','.join(map(str, arr.shape))}\n".encode())
    digest.update(arr.data)
    return digest.hexdigest()


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split())  # library messages may span lines; ours must not


def _splits(train: np.ndarray, test: np.ndarray, source: str) -> ImageSplits:
    train, test = np.ascontiguousarray(train), np.ascontiguousarray(test)
    train.flags.writeable = False
    test.flags.writeable = False
    return ImageSplits(train=train, test=test, source=source)


# --- sample: photographs shipped inside scikit-image ------------------------------------------------

@functools.lru_cache(maxsize=8)
def _sample(image_size: int) -> ImageSplits:
    """Non-overlapping patches of seven photos; 25% test by a fixed permutation."""
    import skimage.data  # imported here: it is slow to import and only this source needs it

    patches = []
    for name in _SAMPLE_PHOTOS:
        photo = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            photo = photo[0]  # (left, right, disparity): keep the left view
        rows, cols = photo.shape[0] // image_size, photo.shape[1] // image_size
        grid = photo[: rows * image_size, : cols * image_size].reshape(rows, image_size, cols, image_size, 3)
        patches.append(grid.transpose(0, 2, 4, 1, 3).reshape(-1, 3, image_size, image_size))
    every = np.concatenate(patches)
    # A few patches repeat exactly (pure black in astronaut); one copy keeps train and test disjoint.
    first_seen: dict[bytes, int] = {}
    for i, patch in enumerate(every):
        first_seen.setdefault(patch.tobytes(), i)
    every = every[sorted(first_seen.values())]
    n_test = len(every) // 4
    if n_test == 0:
        raise FSQDeployError(f"data: the sample photos give only {len(every)} patches of {image_size} px. "
                             "Note: use a smaller image_size or a folder:DIR source")
    order = np.random.default_rng(_SAMPLE_SPLIT_SEED).permutation(len(every))
    return _splits(every[order[n_test:]], every[order[:n_test]], "sample")


# --- synthetic: procedural images for smoke tests ---------------------------------------------------

@functools.lru_cache(maxsize=8)
def _synthetic(image_size: int) -> ImageSplits:
    """Gradients, ellipses, stripes and checkerboards in random colours, from a fixed seed."""
    n = _SYNTHETIC_TRAIN + _SYNTHETIC_TEST
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    # Draw every image's parameters up front so the pixels do not depend on the chunk size below.
    params = {
        "kind": rng.integers(0, 4, n),  # 0 plain gradient, 1 ellipse, 2 stripes, 3 checkerboard
        "colours": rng.random((n, 3, 3), dtype=np.float32),  # gradient start, gradient end, shape
        "angle": rng.uniform(0, 2 * np.pi, n),
        "centre": rng.uniform(0.2, 0.8, (n, 2)),
        "radii": rng.uniform(0.1, 0.45, (n, 2)),
        "freq": rng.integers(2, 9, n),
    }
    coords = ((np.arange(image_size) + 0.5) / image_size).astype(np.float32)
    chunk = 128  # bounds the float32 temporaries at large image sizes
    images = [_render(coords, {k: v[i : i + chunk] for k, v in params.items()}) for i in range(0, n, chunk)]
    every = np.concatenate(images)
    return _splits(every[:_SYNTHETIC_TRAIN], every[_SYNTHETIC_TRAIN:], "synthetic")


def _per_image(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32)[:, None, None]  # [n] -> [n, 1, 1], broadcasts over pixels


def _render(coords: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    y, x = coords[None, :, None], coords[None, None, :]
    along = np.cos(_per_image(p["angle"])) * x + np.sin(_per_image(p["angle"])) * y  # [n, S, S]
    lo, hi = along.min(axis=(1, 2), keepdims=True), along.max(axis=(1, 2), keepdims=True)
    t = ((along - lo) / (hi - lo))[:, None]  # gradient weight in [0, 1], [n, 1, S, S]
    start, end, shape = (p["colours"][:, i, :, None, None] for i in range(3))
    background = start * (1 - t) + end * t
    (cx, cy), (rx, ry) = p["centre"].T, p["radii"].T
    freq = _per_image(p["freq"])
    ellipse = ((x - _per_image(cx)) / _per_image(rx)) ** 2 + ((y - _per_image(cy)) / _per_image(ry)) ** 2 <= 1
    stripes = np.sin(2 * np.pi * freq * along) > 0
    checker = (np.floor(x * freq) + np.floor(y * freq)) % 2 == 1
    kind = p["kind"][:, None, None]
    mask = np.select([kind == 1, kind == 2, kind == 3], [ellipse, stripes, checker], default=False)
    pixels = np.where(mask[:, None], shape, background)
    return (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)


# --- cifar10:DIR -------------------------------------------------------------------------------------

def _cifar10(root: Path, image_size: int, download: bool) -> ImageSplits:
    """CIFAR-10 python batches; ``root`` is the batches folder itself or a folder containing it."""
    if image_size != 32:
        raise FSQDeployError(f"data: CIFAR-10 images are 32x32, got image_size={image_size}. "
                             "Note: pass image_size 32 or use a folder:DIR source")
    if root.exists() and not root.is_dir():
        raise FSQDeployError(f"data: '{root}' is not a directory. Note: pass cifar10:DIR with the CIFAR-10 batches")
    looks_like_batches = root.name == _CIFAR10_FOLDER or (root / _CIFAR10_FILES[0]).is_file()
    batches = root if looks_like_batches else root / _CIFAR10_FOLDER
    missing = [name for name in _CIFAR10_FILES if not (batches / name).is_file()]
    if missing and download:
        _download_cifar10(root, batches)
    elif missing:
        raise FSQDeployError(f"data: CIFAR-10 files missing in '{batches}' ({', '.join(missing)}). "
                             "Note: pass --download to fetch them, or point cifar10:DIR at the "
                             f"'{_CIFAR10_FOLDER}' folder")
    train = np.concatenate([_read_cifar_batch(batches / name) for name in _CIFAR10_TRAIN])
    return _splits(train, _read_cifar_batch(batches / "test_batch"), f"cifar10:{batches}")


# Everything a CIFAR batch pickle refers to, under numpy 1.x and 2.x module names.
_PICKLE_ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain: a plain pickle from disk could run any code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()[b"data"]
        valid = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 \
            and data.shape[1] == 3 * 32 * 32
    except Exception as e:  # corrupt pickles fail in many ways (EOFError, KeyError, UnpicklingError, ...)
        raise FSQDeployError(f"data: CIFAR-10 file '{path}' is corrupt ({type(e).__name__}: {_reason(e)}). "
                             "Note: delete it and run again with --download") from e
    if not valid:
        raise FSQDeployError(f"data: CIFAR-10 file '{path}' has no uint8 [N, 3072] b'data' array. "
                             "Note: delete it and run again with --download")
    return data.reshape(-1, 3, 32, 32)


def _download_cifar10(root: Path, batches: Path) -> None:
    """Download, verify and unpack into ``batches``; on any failure nothing is left behind."""
    created_root, finished = not root.exists(), False
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".cifar10-download-", dir=root))
    try:
        archive, md5 = work / "cifar-10-python.tar.gz", hashlib.md5(usedforsecurity=False)
        try:
            with urllib.request.urlopen(_CIFAR10_URL, timeout=30) as response, open(archive, "wb") as f:
                while block := response.read(1 << 20):
                    md5.update(block)
                    f.write(block)
        except OSError as e:  # URLError, HTTPError, timeouts and resets are all OSErrors
            raise FSQDeployError(f"data: could not download CIFAR-10 from {_CIFAR10_URL} "
                                 f"({_reason(getattr(e, 'reason', e))}). "
                                 "Note: download it elsewhere and pass cifar10:DIR") from e
        if md5.hexdigest() != _CIFAR10_MD5:
            raise FSQDeployError(f"data: the CIFAR-10 download has md5 {md5.hexdigest()}, expected "
                                 f"{_CIFAR10_MD5}. Note: retry, or download it elsewhere and pass cifar10:DIR")
        # Extract only the known regular files: no links, no absolute or '..' paths can get through.
        wanted = {f"{_CIFAR10_FOLDER}/{name}" for name in (*_CIFAR10_FILES, "batches.meta")}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name in wanted]
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(work, members=members, **safe)
        except (tarfile.TarError, EOFError) as e:
            raise FSQDeployError(f"data: the CIFAR-10 archive is unreadable ({_reason(e)}). "
                                 "Note: retry, or download it elsewhere and pass cifar10:DIR") from e
        unpacked = work / _CIFAR10_FOLDER
        if not batches.exists():
            os.replace(unpacked, batches)  # one atomic rename: the folder appears whole or not at all
        else:  # the batches folder is DIR itself, or holds some of the files already
            for member in unpacked.iterdir():
                os.replace(member, batches / member.name)
        finished = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created_root and not finished:
            with suppress(OSError):
                root.rmdir()  # only if empty: never delete anything we did not create


# --- folder:DIR ---------------------------------------------------------------------------------------

def _folder(root: Path, image_size: int) -> ImageSplits:
    """PNG/JPEG files under ``root`` (recursive), resized so the short side is ``image_size``, then
    center-cropped. A file is test if ``int(sha256(relative_path)[:8], 16) % 5 == 0``, so the split is
    stable as files are added. If that leaves either split empty (tiny folders used for bench or
    calibration), train and test are both the whole folder."""
    train, test = folder_split(root)
    every = {path: _load_crop(path, image_size) for path in (*train, *test)}
    return _splits(np.stack([every[p] for p in train]), np.stack([every[p] for p in test]), f"folder:{root}")


def folder_split(root: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(train files, test files) of ``folder:DIR``, each sorted by relative path: the rule of ``_folder``
    (test when ``int(sha256(relative_path)[:8], 16) % 5 == 0``; a folder that leaves either split empty
    gives the whole folder to both). Nothing is decoded."""
    files = folder_files(root)
    is_test = [int(hashlib.sha256(p.relative_to(root).as_posix().encode()).hexdigest()[:8], 16) % 5 == 0
               for p in files]
    if all(is_test) or not any(is_test):
        return files, files
    return (tuple(p for p, t in zip(files, is_test) if not t), tuple(p for p, t in zip(files, is_test) if t))


def folder_files(root: Path) -> tuple[Path, ...]:
    """Every PNG/JPEG file under ``root`` (recursive, any case), sorted by relative path."""
    if not root.exists():
        raise FSQDeployError(f"data: folder '{root}' does not exist. Note: pass folder:DIR with PNG/JPEG files")
    if not root.is_dir():
        raise FSQDeployError(f"data: '{root}' is not a directory. Note: pass folder:DIR with PNG/JPEG files")
    files = files_under(root, IMAGE_SUFFIXES)
    if not files:
        raise FSQDeployError(f"data: no images in '{root}' (looked for {', '.join(IMAGE_SUFFIXES)}, any "
                             "case, recursively). Note: pass a folder with PNG/JPEG files")
    return files


def trained_files(spec: str) -> frozenset[Path] | None:
    """The image files a run whose ``training.data`` was ``spec`` trained on: for ``folder:DIR`` its
    train split as the folder is now (resolved paths), None when that folder is gone; for the other
    sources, which are no files, the empty set."""
    root = folder_root(spec)
    if root is None:
        return frozenset()
    if not root.is_dir():
        return None
    try:
        return frozenset(p.resolve() for p in folder_split(root)[0])
    except FSQDeployError:  # emptied since: nothing of it can be among the photos
        return frozenset()


def _load_crop(path: Path, size: int) -> np.ndarray:
    from fsqdeploy.images import centre_crop, open_rgb

    try:
        image = open_rgb(path, min_side=size)  # a JPEG decoded at a reduced scale (docs/training.md: its times)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise FSQDeployError(f"data: cannot read image '{path}' ({_reason(e)}). "
                             "Note: remove or replace the file") from e
    return np.ascontiguousarray(centre_crop(image, size).transpose(2, 0, 1))  # [3, S, S], C order


# --- whole photographs (the conv codec trains on crops of them and is tested on unseen ones) -----------

# Held out of every conv training run: ordinary photos (an indoor still life, an outdoor scene with sky,
# an animal), evaluated as whole images. ``cat`` is the same picture as ``chelsea``, so it is never used.
HELDOUT_PHOTOS = ("coffee", "rocket", "chelsea")
# Trained on: the other colour photos and the greyscale photographs scikit-image ships (as RGB):
# they teach local statistics (edges, textures); colour augmentation teaches that hue is free.
TRAINING_PHOTOS = ("astronaut", "immunohistochemistry", "hubble_deep_field", "stereo_motorcycle", "retina",
                   "camera", "coins", "moon", "clock", "grass", "gravel", "brick")


@dataclass(frozen=True)
class PhotoSplits:
    train: tuple[np.ndarray, ...]  # uint8 [H, W, 3] each, read-only, sizes differ (FolderPhotos: streamed)
    test: tuple[np.ndarray, ...]
    names: tuple[str, ...]  # the test photos' names (for per-photo reports)
    source: str


def _rgb(photo: np.ndarray) -> np.ndarray:
    photo = photo[0] if isinstance(photo, tuple) else photo  # stereo_motorcycle: (left, right, disparity)
    if photo.dtype == bool:
        photo = photo.astype(np.uint8) * 255
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    photo = np.ascontiguousarray(photo[..., :3], dtype=np.uint8)
    photo.flags.writeable = False
    return photo


@functools.lru_cache(maxsize=1)
def sample_photos() -> PhotoSplits:
    """The ``sample`` photos as whole images: training photos and the held-out ones (never trained on)."""
    import skimage.data

    def get(name: str) -> np.ndarray:
        return _rgb(getattr(skimage.data, name)())

    return PhotoSplits(tuple(get(n) for n in TRAINING_PHOTOS), tuple(get(n) for n in HELDOUT_PHOTOS),
                       HELDOUT_PHOTOS, "sample")


def load_photos(spec: str, min_side: int = 16) -> PhotoSplits:
    """Whole images for a spatial codec: ``sample`` (training photos + held-out photos), ``folder:DIR``
    (every PNG/JPEG at its own size; test files chosen by path hash as in ``load_images``) or
    ``synthetic`` (its images, as photos). Images smaller than ``min_side`` on a side are refused."""
    kind, sep, arg = spec.strip().partition(":")
    if kind == "sample" and not sep:
        splits = sample_photos()
    elif kind == "synthetic" and not sep:
        s = _synthetic(max(64, -(-min_side // 16) * 16))
        names = tuple(f"synthetic-{i}" for i in range(64))
        return PhotoSplits(tuple(_rgb(x.transpose(1, 2, 0)) for x in s.train),
                           tuple(_rgb(x.transpose(1, 2, 0)) for x in s.test[:64]), names, "synthetic")
    elif kind == "folder" and arg.strip():
        splits = _folder_photos(Path(arg.strip()).expanduser().resolve())
    else:
        raise FSQDeployError(f"data: {spec!r} is not a source of whole images. "
                             "Note: use sample, synthetic or folder:DIR with the conv architecture")
    small = [p.shape for p in (*splits.train, *splits.test) if min(p.shape[:2]) < min_side]
    if small:
        raise FSQDeployError(f"data: an image of {small[0][0]}x{small[0][1]} px is smaller than the "
                             f"{min_side} px training crop. Note: use a smaller --image-size or remove it")
    return splits


def _folder_photos(root: Path) -> PhotoSplits:
    train, test = folder_split(root)
    every = {path: read_photo(path) for path in (*train, *test)}
    return PhotoSplits(tuple(every[p] for p in train), tuple(every[p] for p in test),
                       tuple(p.relative_to(root).as_posix() for p in test), f"folder:{root}")


def read_photo(path: Path) -> np.ndarray:
    """One image file as a whole photo: uint8 [H, W, 3], read-only, as ``load_photos`` gives it."""
    from fsqdeploy.images import read_image

    return _rgb(read_image(path, "data"))


@dataclass(frozen=True)
class UnseenPhotos:
    """Whole photos a model never trained on, for measuring how it does on photos it never saw."""

    images: tuple[np.ndarray, ...]  # uint8 [H, W, 3] each, sizes differ
    names: tuple[str, ...]
    source: str  # the canonical data spec
    selection: str  # which of the source's images these are, and why
    warning: str | None = None  # set when the photos cannot measure generalisation


def unseen_photos(spec: str, trained_on: str | None, count: int | None = None, *,
                  component: str = "data") -> UnseenPhotos:
    """The first ``count`` photos of ``spec`` that a run whose ``training.data`` was ``trained_on``
    never trained on. sample: its held-out photos, which no run trains on; synthetic: its test
    images. folder:DIR: every file of DIR outside the training split of ``trained_on``
    (``trained_files``), so a folder the model never saw counts whole, its own training folder by
    its held-out split and a subfolder of it without the files it trained on. A folder it trained on
    entirely, or whose training folder is gone, counts whole, with a ``warning`` that says so. A
    folder's photo smaller than SSIM's window a side is refused (sample's photos are far larger)."""
    root = folder_root(spec)
    if root is None:
        splits = load_photos(spec, min_side=1)
        if not splits.test:
            raise FSQDeployError(f"{component}: {spec!r} has no held-out photos. Note: pass folder:DIR")
        selection = "the held-out photos no run trains on" if splits.source == "sample" else "its test split"
        return UnseenPhotos(tuple(splits.test[:count]), tuple(splits.names[:count]), splits.source, selection)
    files = folder_files(root)
    seen = trained_files(trained_on) if trained_on else frozenset()
    unseen = files if not seen else tuple(p for p in files if p.resolve() not in seen)
    warning = None
    if seen is None:
        selection = f"every file: the model trained on {trained_on}, which is gone, so which it saw is unknown"
        warning = f"the photos may include files the model trained on ({trained_on} is gone)"
    elif not unseen:
        unseen = files
        selection = f"every file, all of them in the training split of {trained_on}"
        warning = (f"the model trained on every photo of folder:{root}: these numbers do not measure how it "
                   "does on photos it never saw. Pass a folder:DIR of other photos")
    elif len(unseen) == len(files):
        selection = f"every file: the model trained on {trained_on or 'unrecorded data'}, none of them"
    else:
        left_out = len(files) - len(unseen)
        others = "the other file is" if left_out == 1 else f"the other {left_out} are"
        selection = f"{len(unseen)} of {len(files)} files: {others} in the training split of {trained_on}"
    chosen = unseen[:count]
    images = tuple(read_photo(p) for p in chosen)
    from fsqdeploy.metrics import SSIM_WINDOW  # every caller scores the photos by SSIM too

    for path, image in zip(chosen, images):
        if min(image.shape[:2]) < SSIM_WINDOW:
            raise FSQDeployError(f"{component}: '{path}' is {image.shape[1]}x{image.shape[0]} px, smaller than "
                                 f"SSIM's {SSIM_WINDOW} px window. Note: remove it from the folder")
    return UnseenPhotos(images, tuple(p.relative_to(root).as_posix() for p in chosen), f"folder:{root}",
                        selection, warning)


# --- streaming a folder (training on more images than fit in memory) ----------------------------------
#
# ``load_images`` and ``load_photos`` decode a whole folder up front. Training on ``folder:DIR`` streams
# it instead: the datasets below hold paths (and, for whole photos, the sizes read from the file
# headers), decode one file per access, and are read by decoding threads (``load_batches``),
# so memory holds only the batches in flight (workers x 2 prefetched), however large the folder.

class FolderImages:
    """``folder:DIR``'s training (or test) images decoded on access, exactly as ``load_images`` gives
    them (short side resized to ``size``, centre crop): ``images[i]`` is uint8 [3, S, S], a slice or
    an index array gives [k, 3, S, S]. Holds paths only."""

    def __init__(self, paths: tuple[Path, ...], size: int) -> None:
        self.paths, self.size = tuple(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def __getitem__(self, key: int | np.integer | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return _load_crop(self.paths[int(key)], self.size)
        picked = range(len(self.paths))[key] if isinstance(key, slice) else np.asarray(key).reshape(-1)
        return np.stack([_load_crop(self.paths[int(i)], self.size) for i in picked]) if len(picked) \
            else np.zeros((0, 3, self.size, self.size), np.uint8)


class FolderPhotos:
    """Whole photos of ``folder:DIR`` decoded on access (uint8 [H, W, 3], as ``load_photos`` gives
    them), with every size read from the file headers up front so crops can be planned without
    decoding. Holds paths and sizes only."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.paths = tuple(paths)
        self.shapes = tuple(_header_shape(p) for p in self.paths)  # (H, W) each

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        photo = read_photo(self.paths[i])
        if photo.shape[:2] != self.shapes[i]:  # the file changed since training started
            raise FSQDeployError(f"data: '{self.paths[i]}' is now {photo.shape[1]}x{photo.shape[0]} px, its header "
                                 f"said {self.shapes[i][1]}x{self.shapes[i][0]}. Note: do not edit the folder while "
                                 "training; continue with --resume")
        return photo


def _header_shape(path: Path) -> tuple[int, int]:
    from fsqdeploy.images import displayed_size

    try:
        return displayed_size(path)  # reads the header only: no pixels are decoded here
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise FSQDeployError(f"data: cannot read image '{path}' ({_reason(e)}). "
                             "Note: remove or replace the file") from e


def folder_root(spec: str) -> Path | None:
    """The folder of a ``folder:DIR`` spec, resolved as ``load_images`` resolves it; None otherwise."""
    kind, _, arg = spec.strip().partition(":")
    return Path(arg.strip()).expanduser().resolve() if kind == "folder" and arg.strip() else None


def stream_images(spec: str, image_size: int = 32, *, download: bool = False) -> ImageSplits:
    """``load_images``, except that ``folder:DIR`` comes back as FolderImages (decoded on access, the
    same pixels and split) instead of arrays."""
    root = folder_root(spec)
    if root is None:
        return load_images(spec, image_size, download=download)
    image_size = _checked_size(image_size)
    train, test = folder_split(root)
    return ImageSplits(FolderImages(train, image_size), FolderImages(test, image_size),  # type: ignore[arg-type]
                       f"folder:{root}")


def stream_photos(spec: str, min_side: int = 16, max_test: int = 0) -> PhotoSplits:
    """``load_photos``, except that ``folder:DIR``'s training photos come back as FolderPhotos (decoded
    on access) and only its first ``max_test`` test photos by path (0: all) are loaded, whole."""
    root = folder_root(spec)
    if root is None:
        return load_photos(spec, min_side)
    train, test = folder_split(root)
    test = test[:max_test] if max_test > 0 else test
    photos = FolderPhotos(train)
    held_out = tuple(read_photo(p) for p in test)
    small = [s for s in (*photos.shapes, *(p.shape[:2] for p in held_out)) if min(s) < min_side]
    if small:
        raise FSQDeployError(f"data: an image of {small[0][0]}x{small[0][1]} px is smaller than the "
                             f"{min_side} px training crop. Note: use a smaller --image-size or remove it")
    return PhotoSplits(photos, held_out, tuple(p.relative_to(root).as_posix() for p in test),  # type: ignore[arg-type]
                       f"folder:{root}")


def _with_resume_note(message: str) -> str:
    """A decoding error met mid-run, told how to go on once the file is fixed."""
    fix = ", then" if "Note:" in message else ". Note: remove or replace the file, then"
    return f"{message}{fix} continue the run with --resume"


def load_batches(dataset: object, batches: Iterable[Sequence[object]], workers: int,
                 collate: Callable[[list], object] = np.stack,
                 on_error: Callable[[str], str] = _with_resume_note) -> Iterator[object]:
    """``collate([dataset[k] for k in batch])`` for each batch, in order, its items decoded by
    ``workers`` threads (0: in this thread), at most ``2 x workers`` batches ahead of the consumer.
    The order is the batches', never the threads', so any worker count gives the same stream. A file
    that cannot be decoded ends it with one FSQDeployError, its message passed through ``on_error``
    (by default, for training: how to go on with --resume).

    Threads, not DataLoader worker processes: starting worker processes (forked or spawned) from a
    process that had loaded OpenVINO and ONNX Runtime crashed it with SIGSEGV in about half the runs
    of the test suite, and a user's process may load them too. Pillow decodes and resizes with the
    GIL released, so the threads still decode in parallel."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    def item(key: object) -> object:
        try:
            return dataset[key]  # type: ignore[index]
        except FSQDeployError as e:
            raise FSQDeployError(on_error(str(e))) from None

    if workers == 0:
        for keys in batches:
            yield collate([item(k) for k in keys])
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="fsqdeploy-decode") as pool:
        pending: deque[list[Future]] = deque()
        todo = iter(batches)

        def submit() -> None:
            keys = next(todo, None)
            if keys is not None:
                pending.append([pool.submit(item, k) for k in keys])

        for _ in range(2 * workers):
            submit()
        while pending:
            items = [f.result() for f in pending.popleft()]  # a thread's FSQDeployError is raised here
            submit()
            yield collate(items)


def image_batches(images: np.ndarray | FolderImages, index_batches: Iterable[np.ndarray],
                  workers: int) -> Iterator[np.ndarray]:
    """uint8 [k, 3, S, S] per index batch: slices of an in-memory split, or files decoded by workers."""
    if isinstance(images, np.ndarray):
        return (images[idx] for idx in index_batches)
    return load_batches(images, index_batches, workers)  # type: ignore[return-value]
