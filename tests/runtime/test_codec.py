"""Codec over every CPU backend: agreement with PyTorch, validation, backend selection."""

import numpy as np
import pytest
import torch

from fsqdeploy import FSQDeployError, backends
from fsqdeploy.artifact import Manifest
from fsqdeploy.backends import REGISTRY, get_backend
from fsqdeploy.backends.base import BatchSizeSwitch
from fsqdeploy.backends.cpu_graphs import MATMUL_MIN_BATCH
from fsqdeploy.data import load_images
from fsqdeploy.images import images_to_float
from fsqdeploy.runtime.codec import Codec

CPU_FP32 = ["torch", "onnxruntime", "openvino"]


def backend_unavailable_reason(backend: str) -> str | None:
    return get_backend(backend).unavailable_reason()


@pytest.fixture(scope="module")
def reference(art64):
    return Codec.load(art64.art, "torch")


@pytest.fixture(scope="module")
def real64():
    return images_to_float(load_images("sample", 64).test[:40])


# art32's encoder ends in a 2x2 convolution that the CPU runtimes run as a MatMul
# (fsqdeploy/backends/cpu_graphs.py), art64's in a 4x4 one that stays a convolution: both paths are held here.
@pytest.mark.parametrize("art_name", ["art32", "art64"])
@pytest.mark.parametrize("backend", CPU_FP32)
@pytest.mark.parametrize("kind", ["random", "real"])
def test_fp32_backends_agree_with_pytorch(request, art_name, backend, kind):
    if backend_unavailable_reason(backend):
        pytest.skip(backend_unavailable_reason(backend))
    exported = request.getfixturevalue(art_name)
    reference = Codec.load(exported.art, "torch")
    size, width = reference.image_size, reference.code_width
    x = (images_to_float(load_images("sample", size).test[:40]) if kind == "real"
         else np.random.default_rng(0).random((40, 3, size, size), dtype=np.float32))
    with Codec.load(exported.art, backend) as codec:
        assert codec.backend == backend and codec.precision == "fp32" and codec.auto_skipped == []
        assert isinstance(codec.manifest, Manifest) and codec.manifest.art == exported.art
        idx = codec.encode(x)
        assert idx.dtype == np.int32 and idx.shape == (40, width)
        assert np.array_equal(idx, reference.encode(x))
        images = codec.decode(idx)
        assert images.dtype == np.float32 and images.shape == x.shape
        assert np.abs(images - reference.decode(idx)).max() < 1e-5
    # and the reference is the model itself
    assert np.array_equal(reference.encode(x), exported.model.encode(torch.from_numpy(x)).numpy())


def test_torch_tensors_in_and_out(art64, real64):
    with Codec.load(art64.art, "onnxruntime") as codec:
        idx = codec.encode(torch.from_numpy(real64))
        assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int32
        images = codec.decode(idx)
        assert isinstance(images, torch.Tensor) and images.shape == (40, 3, 64, 64)


def test_large_batches_are_chunked(art64):
    x = np.random.default_rng(1).random((1100, 3, 64, 64), dtype=np.float32)
    with Codec.load(art64.art, "onnxruntime") as codec:
        assert codec.encode(x).shape == (1100, 16)


def test_auto_picks_an_available_backend_and_says_which(art64, caplog):
    """On any machine: the first backend of AUTO_ORDER that runs here and finds what it needs in ART
    (art64 holds no TensorRT engines, so a TensorRT machine skips "tensorrt" with that reason)."""
    caplog.set_level("INFO", logger="fsqdeploy")
    with Codec.load(art64.art) as codec:
        assert codec.backend in REGISTRY and backend_unavailable_reason(codec.backend) is None
        assert get_backend(codec.backend).artifact_problem(codec.manifest, "fp32") is None
    order = backends.AUTO_ORDER
    assert [name for name, _ in codec.auto_skipped] == list(order[: order.index(codec.backend)])
    assert all(reason for _, reason in codec.auto_skipped)
    if backend_unavailable_reason("tensorrt") is None:  # a TensorRT machine: art64 holds no engines
        assert dict(codec.auto_skipped)["tensorrt"].startswith(f"'{art64.art}' has no encoder.fp32.plan")
    assert f"auto -> {codec.backend}" in caplog.text


@pytest.fixture(scope="module")
def codec(art64):
    with Codec.load(art64.art, "onnxruntime") as c:
        yield c


@pytest.mark.parametrize(
    "images,match",
    [
        (np.zeros((2, 3, 32, 32), np.float32), r"shape \[N, 3, 64, 64\]"),
        (np.zeros((2, 64, 64, 3), np.float32), "shape"),
        (np.zeros((1, 3, 64, 64), np.uint8), "floating point"),
        (np.full((1, 3, 64, 64), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((1, 3, 64, 64), np.nan, np.float32), "NaN"),
    ],
)
def test_encode_validates(codec, images, match):
    with pytest.raises(FSQDeployError, match=match):
        codec.encode(images)


@pytest.mark.parametrize(
    "indices,match",
    [
        (np.zeros((2, 15), np.int32), r"shape \[N, 16\]"),
        (np.zeros((2, 16), np.float32), "integers"),
        (np.full((1, 16), -1, np.int32), "outside"),
        (np.full((1, 16), 8, np.int64), r"index 8 at \[0, 0\] is outside \[0, 8\)"),
    ],
)
def test_decode_validates(codec, indices, match):
    with pytest.raises(FSQDeployError, match=match):
        codec.decode(indices)


def test_float64_images_are_accepted(codec, real64):
    assert np.array_equal(codec.encode(real64.astype(np.float64)), codec.encode(real64))


def test_unavailable_backends_are_clear(art64):
    for backend in ("onnxruntime-cuda", "onnxruntime-trt", "tensorrt"):
        reason = backend_unavailable_reason(backend)
        if reason is None:
            continue
        with pytest.raises(FSQDeployError, match="install|GPU|CUDA"):
            Codec.load(art64.art, backend, precision="fp16" if backend != "onnxruntime-cuda" else "fp32")


def test_unknown_backend_and_precision(art64):
    with pytest.raises(FSQDeployError, match="unknown backend 'tflite'. Note: use auto or one of torch, onnxruntime"):
        Codec.load(art64.art, "tflite")
    with pytest.raises(FSQDeployError, match="does not run bf16"):
        Codec.load(art64.art, "onnxruntime", precision="bf16")


def test_tampered_artifact_is_refused(tmp_path, art64):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(art64.art, art)
    data = bytearray((art / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (art / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(FSQDeployError, match="decoder.onnx"):
        Codec.load(art, "onnxruntime")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_encoders_switch_graphs_by_batch_size(art32, backend):
    if backend_unavailable_reason(backend):
        pytest.skip(backend_unavailable_reason(backend))
    x = images_to_float(load_images("sample", 32).test[:MATMUL_MIN_BATCH])
    reference = Codec.load(art32.art, "torch").encode(x)
    with Codec.load(art32.art, backend) as codec:
        switch = codec.encoder
        assert isinstance(switch, BatchSizeSwitch)
        assert np.array_equal(codec.encode(x[:5]), reference[:5])
        assert switch.small.last_inference_time is not None and switch.large.last_inference_time is None
        assert np.array_equal(codec.encode(x), reference)
        assert switch.large.last_inference_time is not None
