"""Image files and pixel conversions, one definition each for every stage.

Pixels travel as uint8 [..., H, W, 3] on disk and as float32 [N, 3, H, W] in [0, 1] in the codec.
float -> uint8 rounds to nearest (``+0.5``), so uint8 -> float -> uint8 is exact.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from fsqdeploy.errors import FSQDeployError

# EXIF orientation -> the transpose that shows the picture upright (as Pillow's ImageOps.exif_transpose);
# 5 to 8 turn it a quarter, so the displayed image has width and height swapped.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_QUARTER_TURNS = {5, 6, 7, 8}
_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N"}
# The files a folder stands for (folder:DIR data, a directory given to compress), by suffix, any case.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class UnsupportedPixels(ValueError):
    """A readable image whose pixels have no faithful 8-bit RGB form: ``str`` says what, ``note`` what to do."""

    def __init__(self, what: str, note: str) -> None:
        super().__init__(what)
        self.note = note


def read_image(path: str | Path, component: str = "compress", min_side: int | None = None) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3], upright as viewers show it; one clear error for anything that is
    not an image or has no faithful 8-bit RGB form (``open_rgb``)."""
    path = Path(path)
    if not path.is_file():
        raise FSQDeployError(f"{component}: '{path}' does not exist")
    try:
        return open_rgb(path, min_side)
    except UnsupportedPixels as e:
        raise FSQDeployError(f"{component}: '{path}' {e}. Note: {e.note}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FSQDeployError(f"{component}: '{path}' is not a readable image ({type(e).__name__})") from None


def open_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """The pixels of an image file as uint8 [H, W, 3], every stage's one reading of a file:

    - the EXIF orientation is applied, or phone photos come out sideways;
    - an embedded colour profile other than sRGB is converted to sRGB (``_as_srgb``);
    - 16-bit greyscale is scaled to 8 bits (Pillow's own conversion clips it, turning it nearly white);
    - an alpha channel is dropped only where every pixel is opaque: the codec codes RGB, and the colours
      under transparent pixels are whatever the writer left there (``UnsupportedPixels`` otherwise);
    - 32-bit integer and float pixels, which have no fixed range, are refused (``UnsupportedPixels``).

    ``min_side``, for a caller that resizes the image down next: a JPEG is decoded at the smallest
    scale libjpeg offers (1/2, 1/4, 1/8, as Pillow's thumbnail does) whose sides stay at least
    ``min_side``, far faster than decoding every pixel; other formats are read whole.

    Raises Pillow's errors for files it cannot read."""
    with Image.open(path) as opened:
        turn = _UPRIGHT.get(_orientation(opened))
        if min_side is not None and opened.format == "JPEG":
            opened.draft(opened.mode, (min_side, min_side))
        opened.load()
        return _rgb_pixels(_as_srgb(opened.transpose(turn) if turn is not None else opened))


def _as_srgb(image: Image.Image) -> Image.Image:
    """``image`` with an embedded colour profile other than sRGB (Display P3, Adobe RGB, a CMYK press
    profile) converted to sRGB by LittleCMS, relative colorimetric as browsers render: the decoded PNG
    carries no profile, so it shows the same colours only if the codec saw sRGB. sRGB-tagged, untagged
    and greyscale images, and those whose profile cannot be parsed, are returned as stored."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without LittleCMS
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(source).lower():
            return image
        converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                              renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                              outputMode="RGBA" if image.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    return converted if converted is not None else image


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_GREY:
        grey = np.asarray(image).astype(np.uint32)
        return np.repeat(((grey * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("I", "F"):
        raise UnsupportedPixels(f"has {'32-bit integer' if image.mode == 'I' else 'floating-point'} pixels, which "
                                "have no fixed range", "convert it to 8- or 16-bit first")
    if image.has_transparency_data:
        rgba = np.asarray(image.convert("RGBA"))
        if (rgba[..., 3] < 255).any():
            raise UnsupportedPixels("has transparent pixels, and the codec codes RGB only",
                                    "flatten it onto a background first (for example with Pillow's "
                                    "Image.alpha_composite)")
        return np.ascontiguousarray(rgba[..., :3])
    return np.asarray(image.convert("RGB"))


def displayed_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as ``open_rgb`` returns it, from the header alone (no pixels
    are decoded). Raises Pillow's errors for files it cannot read."""
    with Image.open(path) as opened:
        width, height = opened.size
        if _orientation(opened) in _QUARTER_TURNS:
            width, height = height, width
    return height, width


def _orientation(opened: Image.Image) -> int:
    """The EXIF orientation (1: upright) from what the file's header holds. A PNG's eXIf chunk may also
    follow the pixels, and Pillow reads it there only by decoding them: such a chunk is ignored, so
    that ``displayed_size`` (header only) and ``open_rgb`` always agree."""
    if opened.format == "PNG" and "exif" not in opened.info:
        return 1
    try:
        value = opened.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a damaged EXIF block is no reason to refuse the pixels; viewers show them unturned
        return 1
    return value if isinstance(value, int) else 1


def images_to_float(batch: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3, S, S]`` -> float32 in [0, 1]. Refuses other dtypes: /255 twice is a silent bug."""
    if batch.dtype != np.uint8:
        raise TypeError(f"images_to_float expects uint8 pixels, got {batch.dtype}")
    return batch.astype(np.float32) / np.float32(255.0)


def float_to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [0, 1] (any layout) -> uint8, clipped and rounded to nearest."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def chw_to_hwc_uint8(images: np.ndarray) -> np.ndarray:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3] (exact for images that came from uint8)."""
    return float_to_uint8(images).transpose(0, 2, 3, 1)


def hwc_uint8_to_chw(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [0, 1]."""
    return images_to_float(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def check_photo(image: object, component: str = "compress") -> np.ndarray:
    """An image as the codec's whole-image API takes it: a numpy uint8 array [H, W, 3], H, W >= 1;
    a grey one, [H, W] or [H, W, 1], comes back as [H, W, 3] with equal channels (the file then
    says grey, and it decodes grey)."""
    arr = image if isinstance(image, np.ndarray) else None
    if arr is not None and arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)):
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if arr is None or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        got = f"{arr.dtype} {list(arr.shape)}" if arr is not None else type(image).__name__
        raise FSQDeployError(f"{component}: an image must be a uint8 array [H, W, 3] (or grey [H, W]) with H, "
                             f"W >= 1, got {got}. Note: read it with fsqdeploy.images.read_image")
    return arr


def is_grey(image: np.ndarray) -> bool:
    """True when every pixel of uint8 [H, W, 3] has R = G = B: the .fsq file then says so (flags bit 0)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> the same shape with each pixel's channels set to their mean, rounded to
    nearest ((R + G + B + 1) // 3: a third is never a tie), as a grey file's decoder returns it
    (docs/bitstream.md; the C++ Codec computes the same integers)."""
    mean = ((image.astype(np.uint16).sum(axis=2) + 1) // 3).astype(np.uint8)
    return np.repeat(mean[..., None], 3, axis=2)


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [ceil(H/m)*m, ceil(W/m)*m, 3], the bottom and right edges padded by
    repeating the last row and column (a flat border would cost the codec bits and bleed a dark
    edge into the image). Returns ``image`` itself when it is already a multiple."""
    h, w = image.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3]: resized (bicubic) so its shorter side is ``size``, then the
    centre square cut out, as image datasets are usually prepared for a fixed-size model."""
    pil = Image.fromarray(image)
    scale = size / min(pil.size)
    width, height = (max(size, round(side * scale)) for side in pil.size)
    pil = pil.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8)


def uint8_patches(image: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """uint8 [H, W, 3] -> uint8 patches [rows*cols, 3, patch, patch], row-major; the right and
    bottom edges are padded by repeating the last pixel."""
    padded = pad_to_multiple(image, patch)
    rows, cols = padded.shape[0] // patch, padded.shape[1] // patch
    tiles = padded.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, patch, patch)
    return np.ascontiguousarray(tiles), rows, cols


def to_patches(image: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """``uint8_patches`` as float32 in [0, 1]."""
    tiles, rows, cols = uint8_patches(image, patch)
    return tiles.astype(np.float32) / 255.0, rows, cols


def from_patches(patches: np.ndarray, rows: int, cols: int, height: int, width: int) -> np.ndarray:
    """Float patches [rows*cols, 3, p, p] -> uint8 [height, width, 3] (cropped)."""
    p = patches.shape[-1]
    image = patches.reshape(rows, cols, 3, p, p).transpose(0, 3, 1, 4, 2).reshape(rows * p, cols * p, 3)
    return float_to_uint8(image[:height, :width])
