"""Reading image files: every stage sees the pixels a viewer shows, or one clear refusal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import ExifTags, Image

from fsqdeploy import FSQDeployError, data
from fsqdeploy.images import centre_crop, displayed_size, read_image


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


def test_min_side_decodes_a_jpeg_at_a_smaller_scale_and_leaves_other_files_whole(tmp_path):
    import skimage.data

    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((1600, 1200), Image.BICUBIC))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored 1600 x 1200, shown 1200 x 1600
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=95, exif=exif)
    Image.fromarray(photo).save(tmp_path / "big.png")
    full, small = read_image(tmp_path / "big.jpg"), read_image(tmp_path / "big.jpg", min_side=256)
    assert full.shape == (1600, 1200, 3) and small.shape == (400, 300, 3)  # 1/4: the last scale >= 256 a side
    assert read_image(tmp_path / "big.jpg", min_side=301).shape == (800, 600, 3)  # 1/4 would be 300
    # what a resize makes of it is what a resize makes of the full decode, to within a fraction of a level
    a, b = centre_crop(small, 256).astype(float), centre_crop(full, 256).astype(float)
    assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 40
    np.testing.assert_array_equal(read_image(tmp_path / "big.png", min_side=256), read_image(tmp_path / "big.png"))


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


def linear_rgb_profile() -> bytes:
    """A minimal ICC v2 display profile: sRGB's primaries (D50-adapted) with gamma 1, so that an
    honest conversion to sRGB moves every mid-tone (linear 128 is sRGB 188)."""
    import struct

    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = b"linear test\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + struct.pack(">HB", 0, 0) + bytes(67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 256) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, tag in tags:
        tag += bytes(-len(tag) % 4)
        table, body = table + sig + struct.pack(">II", offset + len(body), len(tag)), body + tag
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


def test_a_wide_profile_is_converted_to_srgb(tmp_path):
    Image.fromarray(np.full((4, 6, 3), 128, np.uint8)).save(tmp_path / "linear.png", icc_profile=linear_rgb_profile())
    got = read_image(tmp_path / "linear.png")
    assert got.shape == (4, 6, 3) and abs(int(got[0, 0, 0]) - 188) <= 1 and (got == got[0, 0]).all()
    rgba = np.full((4, 6, 4), 128, np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "linear_rgba.png", icc_profile=linear_rgb_profile())
    np.testing.assert_array_equal(read_image(tmp_path / "linear_rgba.png"), got)


def test_srgb_untagged_and_damaged_profiles_keep_the_stored_pixels(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, profile in (("srgb.png", srgb), ("plain.png", None), ("damaged.png", b"not an ICC profile" * 8)):
        Image.fromarray(gradient()).save(tmp_path / name, **({"icc_profile": profile} if profile else {}))
        np.testing.assert_array_equal(read_image(tmp_path / name), gradient(), err_msg=name)
