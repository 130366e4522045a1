"""Reading image files: every stage sees the pixels a viewer shows, or one clear refusal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import ExifTags, Image

from fsqdeploy import FSQDeployError, data
from fsqdeploy.images import displayed_size, read_image


def gradient(h: int = 20, w: int = 40) -> np.ndarray:
    """Left dark, right bright, a red top row: any turn or flip shows."""
    img = np.repeat(np.repeat((np.arange(w, dtype=np.uint8) * 6)[None, :, None], h, 0), 3, 2)
    img[0] = (255, 0, 0)
    return img


@pytest.mark.parametrize("orientation,turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                              (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_the_exif_orientation_is_applied(tmp_path, orientation, turn):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path = tmp_path / "phone.png"  # PNG: lossless, so the pixels compare exactly
    Image.fromarray(gradient()).save(path, exif=exif)
    got = read_image(path)
    np.testing.assert_array_equal(got, turn(gradient()))
    assert displayed_size(path) == got.shape[:2]


def test_a_phone_jpeg_comes_out_upright(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(gradient()).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    got = read_image(tmp_path / "phone.jpg")
    assert got.shape == (40, 20, 3) and displayed_size(tmp_path / "phone.jpg") == (40, 20)
    assert np.abs(got.astype(int) - np.rot90(gradient(), -1)).mean() < 20  # JPEG is lossy (~6); turned wrong: ~120


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = (np.arange(32 * 64, dtype=np.uint32).reshape(32, 64) * 31).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png")
    assert got.shape == (32, 64, 3) and (got == got[..., :1]).all()
    np.testing.assert_array_equal(got[..., 0], np.round(grey / 257.0).astype(np.uint8))


def test_opaque_alpha_is_dropped(tmp_path):
    rgba = np.dstack([gradient(), np.full((20, 40), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png"), gradient())


def transparent_png(path):
    rgba = np.dstack([gradient(), np.full((20, 40), 255, np.uint8)])
    rgba[5:8, 5:8, 3] = 0
    Image.fromarray(rgba).save(path)


def palette_png(path):
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(path, transparency=0)


def float_tiff(path):
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(path)


def int_tiff(path):
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(path)


@pytest.mark.parametrize("write,name,match", [
    (transparent_png, "alpha.png", "has transparent pixels.*Note: flatten it"),
    (palette_png, "palette.png", "has transparent pixels"),
    (float_tiff, "float.tif", "floating-point pixels.*Note: convert it to 8- or 16-bit"),
    (int_tiff, "int.tif", "32-bit integer pixels"),
])
def test_pixels_without_a_faithful_rgb_form_are_refused(tmp_path, write, name, match):
    write(tmp_path / name)
    with pytest.raises(FSQDeployError, match=match) as e:
        read_image(tmp_path / name)
    assert "\n" not in str(e.value)


def test_compress_refuses_a_transparent_image_in_one_line(tmp_path, art64):
    transparent_png(tmp_path / "alpha.png")
    r = subprocess.run([sys.executable, "-m", "fsqdeploy.cli", "compress", str(tmp_path / "alpha.png"),
                        "-m", str(art64.art), "-o", str(tmp_path / "alpha.fsq")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has transparent pixels" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha.png"]


def test_a_turned_phone_photo_streams_at_its_displayed_size(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)).save(root / f"p{i}.png", exif=exif)
    photos = data.stream_photos(f"folder:{root}", 32)
    assert photos.train.shapes[0] == (72, 40)
    assert photos.train[0].shape == (72, 40, 3)  # before: refused as "is now 40x72 px, its header said 72x40"
