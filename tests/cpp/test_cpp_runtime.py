"""The C++ runtime (runtime/cpp) on real exported artifacts, and the Python embedding example.

ctest (run by .ci/cpp.sh) covers the C++ library itself, including Python <-> C++ bitstreams;
what only this suite can do is use the session's exported models: the C++ manifest reader on a
real ART (paper, and the exported conv ART's spatial manifest), the C++ reader on files the Python
Codec compressed (version 2 patches, a version 2 latent grid, and version 1), and a changed ART
refused.

fsq-cpp comes from FSQ_CPP_BUILD_DIR when set (.ci/cpp.sh sets it), else it is built here; the
tests skip, with the reason, where the C++ toolchain or its Debian packages are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsqdeploy.runtime.bitstream import FsqHeader, load_fsq, read_fsq, save_fsq, write_fsq

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_CPP = ROOT / "runtime" / "cpp"
MISSING_TOOLS = ("nlohmann json not found", "OpenSSL (libcrypto) and zlib are required", "No CMAKE_CXX_COMPILER")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def fsq_cpp(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("FSQ_CPP_BUILD_DIR")
    if prebuilt and (Path(prebuilt) / "examples" / "fsq-cpp").is_file():
        return Path(prebuilt) / "examples" / "fsq-cpp"
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed (bash .ci/cpp.sh installs the C++ toolchain)")
    build = tmp_path_factory.mktemp("cpp-build")
    configure = subprocess.run(
        [cmake, "-S", str(RUNTIME_CPP), "-B", str(build), "-DFSQ_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Debug"],
        capture_output=True,
        text=True,
    )
    if configure.returncode != 0:
        missing = next((m for m in MISSING_TOOLS if m in configure.stderr), None)
        if missing:
            pytest.skip(f"the C++ runtime cannot build here: {missing} (bash .ci/cpp.sh installs it)")
        pytest.fail(f"cmake configure failed:\n{configure.stdout}\n{configure.stderr}")
    built = subprocess.run(
        [cmake, "--build", str(build), "--target", "fsq-cpp", "fsq-minimal", "--parallel"],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return build / "examples" / "fsq-cpp"


def run(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


def has_onnxruntime(fsq_cpp: Path, art: Path) -> bool:
    """Whether this fsq-cpp was built with the ONNX Runtime backend (`fsq-cpp info ART` says)."""
    info = run(fsq_cpp, "info", art)
    assert info.returncode == 0, info.stderr
    return "onnxruntime" in next(line for line in info.stdout.splitlines() if line.startswith("backends"))


def test_cpp_verifies_a_real_artifact(exported, fsq_cpp):
    manifest = json.loads((exported.art / "manifest.json").read_text())
    proc = run(fsq_cpp, "info", exported.art)
    assert proc.returncode == 0, proc.stderr
    assert f"model_id   {manifest['model_id']}" in proc.stdout
    assert f"(W={manifest['code_width']}: {manifest['stages']} stage(s) of D={manifest['latent_dim']})" in proc.stdout
    for name, entry in manifest["files"].items():  # graphs and checkpoint/..., each hashed by C++
        assert f"{name}  {entry['size']} bytes  sha256 ok" in proc.stdout


def test_cpp_reads_what_the_python_codec_compressed(art64, fsq_cpp, tmp_path):
    from fsqdeploy.runtime.codec import Codec

    image = np.random.default_rng(0).integers(0, 256, (70, 150, 3), dtype=np.uint8)
    with Codec.load(art64.art, backend="onnxruntime") as codec:
        header, indices = codec.encode_image(image)
        save_fsq(tmp_path / "photo.fsq", header, indices)
        model_id = codec.model_id
    assert (header.version, header.layout) == (2, 0)  # what a paper codec writes now
    proc = run(fsq_cpp, "info", tmp_path / "photo.fsq")
    assert proc.returncode == 0, proc.stderr
    assert f"({(tmp_path / 'photo.fsq').stat().st_size} bytes, version 2)" in proc.stdout
    assert "image      70x150 pixels, 64-pixel patches, grid 2x3 (6 patches)" in proc.stdout
    assert f"model      {model_id}" in proc.stdout
    assert f"levels     {list(codec.levels)}".replace("'", "") in proc.stdout

    # The same indices as version 1 (the format before v2) still read, 34 bytes shorter.
    save_fsq(tmp_path / "photo-v1.fsq", FsqHeader.for_image(model_id, 70, 150, 64, codec.levels), indices)
    proc = run(fsq_cpp, "info", tmp_path / "photo-v1.fsq")
    assert proc.returncode == 0, proc.stderr
    assert f"({(tmp_path / 'photo.fsq').stat().st_size - 34} bytes, version 1)" in proc.stdout
    assert "image      70x150 pixels, 64-pixel patches, grid 2x3 (6 patches)" in proc.stdout


def test_cpp_reads_a_conv_artifact_and_its_latent_grid_files(conv_exported, fsq_cpp, tmp_path):
    """The exported conv ART (graphs with dynamic height and width, FP16 too): its spatial manifest,
    and a photo the Python Codec compressed through those graphs into a v2 latent grid."""
    from fsqdeploy.errors import FSQDeployError
    from fsqdeploy.runtime.codec import Codec

    art = conv_exported.art
    manifest = json.loads((art / "manifest.json").read_text())
    proc = run(fsq_cpp, "info", art)
    assert proc.returncode == 0, proc.stderr
    assert "bitstream  20 bits per 8x8 latent cell (conv)" in proc.stdout  # levels (8,5,5,5) x 2 stages
    for name, entry in manifest["files"].items():
        assert f"{name}  {entry['size']} bytes  sha256 ok" in proc.stdout

    image = np.random.default_rng(1).integers(0, 256, (70, 150, 3), dtype=np.uint8)
    with Codec.load(art, backend="onnxruntime", entropy=False) as codec:
        data = codec.compress(image)
    (tmp_path / "photo.fsq").write_bytes(data)
    header, _ = read_fsq(data)
    assert (header.version, header.layout, header.grid_rows, header.grid_cols) == (2, 1, 9, 19)
    proc = run(fsq_cpp, "info", tmp_path / "photo.fsq")
    assert proc.returncode == 0, proc.stderr
    assert f"({len(data)} bytes, version 2)" in proc.stdout
    assert "image      70x150 pixels, 8-pixel latent cells, grid 9x19 (171 cells)" in proc.stdout
    assert "levels     [8, 5, 5, 5, 8, 5, 5, 5] (D=8, 20 bits per cell)" in proc.stdout
    assert f"model      {manifest['model_id']}" in proc.stdout
    assert "coding     0 (fixed-rate)" in proc.stdout
    assert f"payload    {-(-171 * 20 // 8)} bytes, CRCs ok" in proc.stdout

    # The entropy-coded file (coding 2) needs the artifact's prior, which `fsq-cpp info FILE` has not:
    # refused with Python's words (the prior-aware reader is checked by ctest's cross_python);
    # `fsq-cpp info FILE ART` reads it with ART/prior.json.
    # Written as coding 2 explicitly: compress picks coding 0 where the prior would not pay.
    with Codec.load(art, backend="onnxruntime") as codec:
        header, cells = codec.encode_image(image)
        assert codec.prior is not None
        (tmp_path / "coded.fsq").write_bytes(write_fsq(header.with_prior(codec.prior), cells, codec.prior))
    with pytest.raises(FSQDeployError, match="no prior was given") as python_error:
        load_fsq(tmp_path / "coded.fsq")
    proc = run(fsq_cpp, "info", tmp_path / "coded.fsq")
    assert proc.returncode == 2 and proc.stderr.strip() == str(python_error.value)
    coded = (tmp_path / "coded.fsq").read_bytes()
    proc = run(fsq_cpp, "info", tmp_path / "coded.fsq", art)
    assert proc.returncode == 0, proc.stderr
    assert f"coding     2 (rANS, context tables), prior {codec.prior.sha256.hex()[:8]}.." in proc.stdout
    assert f"payload    {len(coded) - header.header_length - 4} bytes, CRCs ok" in proc.stdout



def test_cpp_compresses_a_conv_photo_into_the_python_codecs_bytes(conv_exported, fsq_cpp, tmp_path):
    """fsq-cpp encode on the exported conv ART (one pass through the dynamic-shape encoder, coded
    over ART/prior.json) writes the bytes the Python Codec writes, at odd sizes, for a photo (coding
    2) and for noise (where the prior does not pay: coding 0); fsq-cpp decode reads the Python file
    back to Python's image within one grey level."""
    from PIL import Image

    from fsqdeploy.data import sample_photos
    from fsqdeploy.runtime.codec import Codec

    art = conv_exported.art
    if not has_onnxruntime(fsq_cpp, art):
        pytest.skip("this fsq-cpp has no ONNX Runtime backend (bash .ci/cpp.sh builds one with scripts/ort_sdk.sh)")
    photo = sample_photos().test[0]
    grey = np.repeat(photo[40:73, 20:67].mean(axis=2).astype(np.uint8)[..., None], 3, axis=2)
    images = {"photo": photo[:70, :150], "odd": photo[101:134, 7:54],
              "noise": np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8), "grey": grey}
    codings = {}
    with Codec.load(art, backend="onnxruntime") as codec:
        for name, image in images.items():
            Image.fromarray(image).save(tmp_path / f"{name}.ppm")
            python_file = codec.compress(image)
            codings[name] = read_fsq(python_file, codec.prior)[0].coding
            proc = run(fsq_cpp, "encode", art, tmp_path / f"{name}.ppm", tmp_path / f"{name}.fsq")
            assert proc.returncode == 0, proc.stderr
            assert (tmp_path / f"{name}.fsq").read_bytes() == python_file, name
            (tmp_path / f"{name}-py.fsq").write_bytes(python_file)
            proc = run(fsq_cpp, "decode", art, tmp_path / f"{name}-py.fsq", tmp_path / f"{name}-out.ppm")
            assert proc.returncode == 0, proc.stderr
            cpp_image = np.asarray(Image.open(tmp_path / f"{name}-out.ppm").convert("RGB")).astype(int)
            python_image = codec.decompress(python_file).astype(int)
            assert cpp_image.shape == python_image.shape == image.shape
            assert np.abs(cpp_image - python_image).max() <= 1, name  # float sums may differ by an ulp
            # the grey flag (set by both writers: the bytes are equal) makes both decoders return grey
            grey_back = name == "grey"
            assert read_fsq(python_file, codec.prior)[0].grey == grey_back, name
            assert (np.ptp(cpp_image, axis=2).max() == 0) == grey_back, name
            proc = run(fsq_cpp, "info", tmp_path / f"{name}.fsq", art)
            assert proc.returncode == 0, proc.stderr
            assert (f"image      {image.shape[0]}x{image.shape[1]} grey pixels" in proc.stdout) == grey_back, name
            assert (tmp_path / f"{name}-out.ppm").read_bytes()[:2] == (b"P5" if grey_back else b"P6"), name
    # a grey photo stored as one channel (PGM, P5) is the same grey image: the same file
    Image.fromarray(grey[..., 0]).save(tmp_path / "grey.pgm")
    proc = run(fsq_cpp, "encode", art, tmp_path / "grey.pgm", tmp_path / "grey-p5.fsq")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "grey-p5.fsq").read_bytes() == (tmp_path / "grey.fsq").read_bytes()
    assert codings == {"photo": 2, "odd": 2, "noise": 0, "grey": 2}

    # in tiles of 16 x 16 pixels (2 x 2 cells and the halos): the one-pass file, and its image back
    f = int(json.loads((art / "manifest.json").read_text())["downsample"])
    proc = run(fsq_cpp, "encode", art, tmp_path / "photo.ppm", tmp_path / "tiled.fsq", "--tile", 2 * f)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiled.fsq").read_bytes() == (tmp_path / "photo-py.fsq").read_bytes()
    proc = run(fsq_cpp, "decode", art, tmp_path / "tiled.fsq", tmp_path / "tiled.ppm", "--tile", 2 * f)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiled.ppm").read_bytes() == (tmp_path / "photo-out.ppm").read_bytes()
    # a region (decode --region X,Y,W,H): Python's region within one grey level, and in tiles the same
    with Codec.load(art, backend="onnxruntime") as codec:
        python_part = codec.decompress((tmp_path / "photo-py.fsq").read_bytes(), (37, 11, 50, 29)).astype(int)
    for extra in ((), ("--tile", 2 * f)):
        proc = run(fsq_cpp, "decode", art, tmp_path / "photo-py.fsq", tmp_path / "part.ppm", "--region", "37,11,50,29",
                   *extra)
        assert proc.returncode == 0, proc.stderr
        cpp_part = np.asarray(Image.open(tmp_path / "part.ppm").convert("RGB")).astype(int)
        assert cpp_part.shape == python_part.shape == (29, 50, 3)
        assert np.abs(cpp_part - python_part).max() <= 1
    for region, message in [("37,11,150,29", "decompress: region 37,11,150,29 (x, y, width, height) is not inside "
                             "the 150x70 image"), ("1,2,3", "fsq-cpp: --region '1,2,3' is not X,Y,W,H")]:
        proc = run(fsq_cpp, "decode", art, tmp_path / "photo-py.fsq", tmp_path / "bad.ppm", "--region", region)
        assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr
    assert not (tmp_path / "bad.ppm").exists()
    proc = run(fsq_cpp, "encode", art, tmp_path / "photo.ppm", tmp_path / "x.fsq", "--tile", f + 1)
    assert proc.returncode == 2 and proc.stderr.startswith(f"codec: tile {f + 1} is not a positive multiple of {f}")

    # a backend this build does not have: one line, exit 2
    proc = run(fsq_cpp, "decode", art, tmp_path / "noise.fsq", tmp_path / "x.ppm", "--backend", "tensorrt")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cpp_onnxruntime_backend_codes_like_python(art32, fsq_cpp, tmp_path):
    """The C++ ONNX Runtime backend (built by .ci/cpp.sh against scripts/ort_sdk.sh's SDK) on a real
    paper ART: `fsq-cpp encode` writes the very bytes the Python Codec writes (fixed rate, as the C++
    Codec does), and `fsq-cpp decode` gives its image back within one grey level of Python's."""
    from PIL import Image

    from fsqdeploy.runtime.codec import Codec

    if not has_onnxruntime(fsq_cpp, art32.art):
        pytest.skip("this fsq-cpp has no ONNX Runtime backend (bash .ci/cpp.sh builds one with scripts/ort_sdk.sh)")
    image = np.random.default_rng(2).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    image[20:50, 10:90] = (200, 60, 40)  # a flat patch beside the noise
    Image.fromarray(image).save(tmp_path / "in.ppm")
    with Codec.load(art32.art, backend="onnxruntime", entropy=False) as codec:
        python_file = codec.compress(image)
        python_image = codec.decompress(python_file)
    proc = run(fsq_cpp, "encode", art32.art, tmp_path / "in.ppm", tmp_path / "cpp.fsq", "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cpp.fsq").read_bytes() == python_file
    proc = run(fsq_cpp, "decode", art32.art, tmp_path / "cpp.fsq", tmp_path / "out.ppm", "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    cpp_image = np.asarray(Image.open(tmp_path / "out.ppm").convert("RGB"))
    assert cpp_image.shape == python_image.shape == image.shape
    assert np.abs(cpp_image.astype(int) - python_image.astype(int)).max() <= 1  # float sums may differ by an ulp


@pytest.mark.parametrize("which", ["conv_exported", "art32"])
def test_the_readme_example_codes_both_architectures_as_python_does(which, fsq_cpp, tmp_path, request):
    """fsq-minimal (examples/cpp/minimal.cpp, runtime/cpp/README.md's usage example) on an exported
    conv ART and a paper one: its frame.fsq is the Python Codec's compress of the same grey frame, byte
    for byte (conv entropy-coded over the prior, paper fixed rate as the C++ Codec writes it), and the
    paper model also codes its patch batch."""
    from fsqdeploy.runtime.codec import Codec

    art = request.getfixturevalue(which).art
    if not has_onnxruntime(fsq_cpp, art):
        pytest.skip("this fsq-cpp has no ONNX Runtime backend (bash .ci/cpp.sh builds one with scripts/ort_sdk.sh)")
    proc = run(fsq_cpp.parent / "fsq-minimal", art, tmp_path / "frame.fsq")
    assert proc.returncode == 0, proc.stderr
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    with Codec.load(art, backend="onnxruntime", entropy=which == "conv_exported") as codec:
        python_file = codec.compress(frame)
        header = read_fsq(python_file, codec.prior)[0]
    assert (tmp_path / "frame.fsq").read_bytes() == python_file
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"640x480 image, {header.grid_rows * header.grid_cols} cells of {header.cell_size} pixels, "
                        f"coding {header.coding}, via onnxruntime")
    assert len(lines) == (1 if which == "conv_exported" else 2)


def test_the_cpp_readme_shows_the_example_as_it_is():
    readme = (RUNTIME_CPP / "README.md").read_text()
    example = (ROOT / "examples" / "cpp" / "minimal.cpp").read_text()
    body = example[example.index("#include <fsq/fsq.hpp>"):]
    assert f"```cpp\n{body}```" in readme


def test_cpp_refuses_a_changed_artifact(art_copy, fsq_cpp):
    data = bytearray((art_copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (art_copy / "decoder.onnx").write_bytes(bytes(data))
    proc = run(fsq_cpp, "info", art_copy)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (
        f"artifact: '{art_copy}' failed verification: decoder.onnx: sha256 differs from the manifest. "
        "Note: the directory changed after export; export again"
    )


def test_cpp_refuses_a_damaged_bitstream_like_python(art32, fsq_cpp, tmp_path):
    """Python's message, byte for byte, for a damaged v2 patch file, for an intact one whose coding
    no reader knows, and for ones that say coding 1 or 2 (rANS) but name no prior."""
    import zlib

    from fsqdeploy.errors import FSQDeployError
    from fsqdeploy.runtime.codec import Codec

    with Codec.load(art32.art, backend="onnxruntime") as codec:
        written = codec.compress(np.zeros((40, 40, 3), dtype=np.uint8))
    damaged = bytearray(written)
    damaged[-5] ^= 0x40  # the last payload byte

    def with_coding(coding: int) -> bytearray:
        coded = bytearray(written)
        coded[49] = coding  # with a header CRC that matches
        crc_at = int.from_bytes(coded[6:8], "little") - 4
        coded[crc_at : crc_at + 4] = zlib.crc32(bytes(coded[:crc_at])).to_bytes(4, "little")
        return coded

    cases = (("damaged", damaged, "corrupted payload"), ("coded", with_coding(3), "unsupported coding 3"),
             ("rans", with_coding(1), r"prior_hash is zero in an entropy-coded \(coding 1\)"),
             ("context", with_coding(2), r"prior_hash is zero in an entropy-coded \(coding 2\)"))
    for name, data, reason in cases:
        path = tmp_path / f"{name}.fsq"
        path.write_bytes(bytes(data))
        with pytest.raises(FSQDeployError, match=reason) as python_error:
            load_fsq(path)
        proc = run(fsq_cpp, "info", path)
        assert proc.returncode == 2
        assert proc.stderr.strip() == str(python_error.value)


def test_python_embedding_example(art32, tmp_path):
    out = tmp_path / "example.fsq"
    proc = run(sys.executable, ROOT / "examples" / "python" / "embed.py", art32.art, "--out", out,
               "--backend", "onnxruntime")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "100x150 image in" in proc.stdout and "via onnxruntime, PSNR" in proc.stdout
    header, indices = load_fsq(out)
    assert header.model_hash.hex() == json.loads((art32.art / "manifest.json").read_text())["model_id"]
    assert indices.shape == (header.num_patches, len(header.levels))

    missing = run(sys.executable, ROOT / "examples" / "python" / "embed.py", tmp_path / "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("artifact: directory")


def test_cpp_tokens_of_a_file_are_the_python_codecs_tokens(conv_exported, art64, fsq_cpp, tmp_path):
    """`fsq-cpp tokens FILE [ART]` (fsq::indices_to_tokens over the file's cells) prints Codec.tokenize's
    grid: for an entropy-coded conv file and for a paper model's patches."""
    from fsqdeploy.runtime.codec import Codec

    image = np.random.default_rng(5).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    for art in (conv_exported.art, art64.art):
        with Codec.load(art, backend="onnxruntime") as codec:
            (tmp_path / "photo.fsq").write_bytes(codec.compress(image))
            expected = codec.tokenize(image)
        with_prior = [art] if (art / "prior.json").is_file() else []  # a paper artifact has no prior
        proc = run(fsq_cpp, "tokens", tmp_path / "photo.fsq", *with_prior)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == f"{expected.shape[0]} x {expected.shape[1]}"
        assert np.array_equal(np.array([[int(t) for t in line.split()] for line in lines[1:]]), expected)


def test_python_info_prints_what_fsq_cpp_info_prints(cli, conv_exported, art64, fsq_cpp, tmp_path):
    """`fsqdeploy info FILE [-m ART]` and `fsq-cpp info FILE [ART]`, line for line: a paper model's
    version 2 patches and version 1, a conv grid fixed-rate, entropy-coded, and grey."""
    import skimage.data

    from fsqdeploy.runtime.codec import Codec

    image = np.ascontiguousarray(skimage.data.chelsea()[100:137, 150:240])  # a photo: the prior pays on it
    files: list[tuple[Path, Path | None]] = []
    with Codec.load(art64.art, backend="onnxruntime") as codec:
        header, indices = codec.encode_image(image)
        save_fsq(tmp_path / "patches.fsq", header, indices)
        save_fsq(tmp_path / "v1.fsq", FsqHeader.for_image(codec.model_id, 37, 90, 64, codec.levels), indices)
    files += [(tmp_path / "patches.fsq", None), (tmp_path / "v1.fsq", None)]
    for entropy in (False, True):
        with Codec.load(conv_exported.art, backend="onnxruntime", entropy=entropy) as codec:
            (tmp_path / f"grid-{entropy}.fsq").write_bytes(codec.compress(image))
            (tmp_path / f"grey-{entropy}.fsq").write_bytes(codec.compress(image[..., 0]))
        art = conv_exported.art if entropy else None
        files += [(tmp_path / f"grid-{entropy}.fsq", art), (tmp_path / f"grey-{entropy}.fsq", art)]
    printed = []
    for path, art in files:
        with_art = [] if art is None else [art]
        proc = run(fsq_cpp, "info", path, *with_art)
        assert proc.returncode == 0, proc.stderr
        code, out, err = cli("info", path, *(["-m", art] if art else []))
        assert code == 0, err
        assert out == proc.stdout, path.name
        printed.append(out)
    assert "version 1)" in printed[1] and "coding     2 (rANS, context tables), prior " in printed[-1]
    assert " grey pixels" in printed[-1]
