"""fsqdeploy.compare: the one batch loop, the one comparator and its record's numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.compare import Fidelity, Run, SessionCodec, batched, compare, run
from fsqdeploy.metrics import PSNR_CAP, mean_psnr, ssim

N, W, S = 10, 4, 8


class ToyCodec:
    """Indices from the mean of an image's quarters; decode paints them back, plus a bias.
    Counts its calls and the batch sizes it saw."""

    def __init__(self, bias: float = 0.0, flip: tuple[np.ndarray, np.ndarray] | None = None):
        self.bias, self.flip = bias, flip
        self.encode_batches: list[int] = []
        self.decode_batches: list[int] = []
        self.offset = 0

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.encode_batches.append(len(images))
        idx = (images.reshape(len(images), W, -1).mean(-1) * 7).round().astype(np.int32)
        if self.flip is not None:  # flip given (image, column) entries, in absolute image numbers
            rows, cols = self.flip
            for r, c in zip(rows, cols):
                if self.offset <= r < self.offset + len(images):
                    idx[r - self.offset, c] = (idx[r - self.offset, c] + 1) % 8
        self.offset += len(images)
        return idx

    def decode(self, indices: np.ndarray) -> np.ndarray:
        self.decode_batches.append(len(indices))
        values = indices.astype(np.float32) / 7 + np.float32(self.bias)
        return np.repeat(values, 3 * S * S // W, axis=1).reshape(len(indices), 3, S, S)


def _images(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, S, S), dtype=np.float32)


def test_batched_runs_every_batch_once_in_order():
    seen = []

    def fn(x):
        seen.append(len(x))
        assert x.flags.c_contiguous
        return x * 2

    x = np.arange(10, dtype=np.float32).reshape(10, 1)[::1]
    assert np.array_equal(batched(fn, x, 4), x * 2) and seen == [4, 4, 2]
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        batched(fn, x, 0)
    with pytest.raises(ValueError, match="no images to run"):
        batched(fn, x[:0], 4)


def test_run_encodes_and_decodes_in_batches():
    codec, images = ToyCodec(), _images()
    result = run(codec, images, 4)
    assert codec.encode_batches == [4, 4, 2] and codec.decode_batches == [4, 4, 2]
    assert result.indices.shape == (N, W) and result.decoded.shape == (N, 3, S, S)
    assert result.decoded_reference_indices is None
    assert np.array_equal(result.decoded, codec.decode(codec.encode(images)))


def test_run_with_reference_indices_decodes_again_only_batches_with_a_flip():
    images = _images()
    reference = run(ToyCodec(), images, 4)
    flipping = ToyCodec(bias=0.01, flip=(np.array([5]), np.array([2])))  # image 5: the second batch
    candidate = run(flipping, images, 4, reference_indices=reference.indices)
    # 3 batches of the reference indices, then only the second batch of its own again.
    assert flipping.decode_batches == [4, 4, 2, 4]
    own = ToyCodec(bias=0.01).decode(candidate.indices)
    assert np.array_equal(candidate.decoded, own)
    assert np.array_equal(candidate.decoded_reference_indices, ToyCodec(bias=0.01).decode(reference.indices))
    with pytest.raises(ValueError, match="reference indices"):
        run(ToyCodec(), images, 4, reference_indices=reference.indices[:, :2])


def test_compare_counts_flips_and_separates_decoder_error_from_them():
    """Three flipped indices in two images, a decoder off by 0.01 everywhere: the record says so."""
    images = _images()
    reference = run(ToyCodec(), images, 4)
    flips = (np.array([2, 2, 7]), np.array([0, 3, 1]))
    candidate = run(ToyCodec(bias=0.01, flip=flips), images, 4, reference_indices=reference.indices)
    f = compare(reference, candidate)
    assert f.images == N and f.flipped_indices == 3 and f.flipped_images == 2
    assert f.index_agreement == pytest.approx(1 - 3 / (N * W)) and f.flipped_image_share == pytest.approx(0.2)
    # The decoder alone: 0.01 everywhere, so 40 dB on every image.
    assert f.max_abs_error == pytest.approx(0.01, abs=1e-6)
    assert f.psnr_vs_reference == pytest.approx(40.0, abs=1e-3)
    # The round trip adds the flips: one level (1/7) on top of the bias, and a lower PSNR.
    assert f.roundtrip_max_abs_error == pytest.approx(1 / 7 + 0.01, abs=1e-6)
    assert f.roundtrip_psnr_vs_reference < f.psnr_vs_reference
    assert f.roundtrip_psnr_vs_reference == pytest.approx(mean_psnr(candidate.decoded, reference.decoded))
    assert f.psnr_vs_input is None and "psnr_vs_input" not in f.to_dict()


def test_identical_runs_agree_fully_and_psnr_is_capped():
    images = _images()
    a, b = run(ToyCodec(), images, 3), run(ToyCodec(), images, 5)
    f = compare(a, b, images)
    assert (f.index_agreement, f.flipped_indices, f.flipped_images, f.flipped_image_share) == (1.0, 0, 0, 0.0)
    # No reference indices given, but no flip either: its own decode is the decoder-only one.
    assert f.max_abs_error == 0.0 and f.psnr_vs_reference == PSNR_CAP == f.roundtrip_psnr_vs_reference
    assert f.psnr_vs_input == f.reference_psnr_vs_input == pytest.approx(mean_psnr(a.decoded, images))
    assert f.ssim_vs_input == pytest.approx(float(ssim(a.decoded, images).double().mean()))


def test_without_reference_indices_a_flipped_run_has_no_decoder_only_fields():
    images = _images()
    reference = run(ToyCodec(), images)
    candidate = run(ToyCodec(flip=(np.array([0]), np.array([0]))), images)
    f = compare(reference, candidate, images)
    assert f.max_abs_error is None and f.psnr_vs_reference is None and f.pixel_agreement is None
    d = f.to_dict()
    assert "max_abs_error" not in d and "psnr_vs_reference" not in d
    assert d["flipped_images"] == 1 and d["psnr_vs_input"] == f.psnr_vs_input


def test_to_dict_is_plain_json_under_the_documented_names():
    images = _images()
    reference = run(ToyCodec(), images)
    f = compare(reference, run(ToyCodec(bias=0.02), images, reference_indices=reference.indices), images)
    d = f.to_dict()
    assert list(d) == ["images", "index_agreement", "flipped_indices", "flipped_images", "flipped_image_share",
                       "max_abs_error", "psnr_vs_reference", "roundtrip_max_abs_error", "roundtrip_psnr_vs_reference",
                       "psnr_vs_input", "ssim_vs_input", "reference_psnr_vs_input", "pixel_agreement",
                       "max_pixel_error"]
    assert all(type(v) in (int, float) for v in d.values())
    assert Fidelity(**d) == f


def test_pixel_agreement_counts_the_8_bit_values_a_decoder_moves():
    """Two values pushed across a rounding boundary, one by a hair and one by three levels: 8-bit
    pixels see both, however small the float difference (the decoder-only pair, as decompress writes)."""
    indices = np.zeros((2, W), np.int32)
    decoded = np.full((2, 3, S, S), np.float32((100 + 0.4999) / 255))
    moved = decoded.copy()
    moved[0, 0, 0, 0] = np.float32((100 + 0.5001) / 255)  # 2e-4 levels apart, one level after rounding
    moved[1, 2, 3, 4] = np.float32((103 + 0.2) / 255)
    f = compare(Run(indices, decoded), Run(indices, moved))
    assert f.max_pixel_error == 3
    assert f.pixel_agreement == pytest.approx(1 - 2 / decoded.size)
    assert compare(Run(indices, decoded), Run(indices, decoded)).pixel_agreement == 1.0


def test_compare_refuses_runs_of_different_images():
    a = run(ToyCodec(), _images(6))
    b = run(ToyCodec(), _images(5))
    with pytest.raises(ValueError, match="the runs differ in shape"):
        compare(a, b)
    with pytest.raises(ValueError, match="input images"):
        compare(a, a, _images(5))
    assert isinstance(a, Run)


def test_session_codec_matches_pytorch_on_an_exported_artifact(art32):
    """The ONNX Runtime adapter against the model as trained: parity's numbers, through compare."""
    model = art32.model

    class PyTorch:
        def encode(self, images):
            with torch.no_grad():
                return model.encode(torch.from_numpy(images)).numpy()

        def decode(self, indices):
            with torch.no_grad():
                return model.decode(torch.from_numpy(indices.astype(np.int64))).numpy()

    images = np.random.default_rng(1).random((20, 3, 32, 32), dtype=np.float32)
    onnxruntime = SessionCodec(ort_session(art32.art / "encoder.onnx"), ort_session(art32.art / "decoder.onnx"))
    reference = run(PyTorch(), images, 7)
    candidate = run(onnxruntime, images, 7, reference_indices=reference.indices)
    assert candidate.indices.dtype == np.int32
    f = compare(reference, candidate, images)
    assert f.index_agreement == 1.0 and f.flipped_images == 0
    assert f.max_abs_error <= 1e-5 and f.roundtrip_max_abs_error == f.max_abs_error
    assert f.psnr_vs_reference > 90 and f.psnr_vs_input == pytest.approx(f.reference_psnr_vs_input, abs=1e-3)


def test_importing_compare_needs_no_heavy_module():
    """A hub module: numpy and the hub at import time; torch only when a PSNR is computed."""
    code = ("import sys\n"
            "for name in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'openvino'): sys.modules[name] = None\n"
            "import fsqdeploy.compare\n"
            "print(fsqdeploy.compare.batched(lambda b: b + 1, __import__('numpy').zeros((3, 2)), 2).sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6.0"
