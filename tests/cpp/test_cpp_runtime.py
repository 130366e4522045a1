"""The C++ runtime (runtime/cpp) on real exported artifacts, and the Python embedding example.

ctest (run by .ci/cpp.sh) covers the C++ library itself, including Python <-> C++ bitstreams;
what only this suite can do is use the session's exported models: the C++ manifest reader on a
real ART, the C++ reader on a file the Python Codec compressed, and a changed ART refused.

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

from fsqdeploy.runtime.bitstream import load_fsq, save_fsq

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
        [cmake, "--build", str(build), "--target", "fsq-cpp", "--parallel"], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return build / "examples" / "fsq-cpp"


def run(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


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
    proc = run(fsq_cpp, "info", tmp_path / "photo.fsq")
    assert proc.returncode == 0, proc.stderr
    assert "image      70x150 pixels, 64-pixel patches, grid 2x3 (6 patches)" in proc.stdout
    assert f"model      {model_id}" in proc.stdout
    assert f"levels     {list(codec.levels)}".replace("'", "") in proc.stdout


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
    from fsqdeploy.errors import FSQDeployError
    from fsqdeploy.runtime.codec import Codec

    path = tmp_path / "x.fsq"
    with Codec.load(art32.art, backend="onnxruntime") as codec:
        save_fsq(path, *codec.encode_image(np.zeros((40, 40, 3), dtype=np.uint8)))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # the last payload byte
    path.write_bytes(bytes(data))
    with pytest.raises(FSQDeployError) as python_error:
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
