"""FSQVAE shapes, the encode/decode API, input validation and checkpoint loading."""

import json

import numpy as np
import pytest
import torch

from fsqdeploy import FSQVAE, FSQDeployError
from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig
from fsqdeploy.fsq import parse_levels


@pytest.mark.parametrize("size,stages", [(32, 1), (64, 1), (64, 2)])
def test_shapes(size, stages):
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=size, levels=parse_levels("8,5,5,5", 64) * stages, stages=stages)
    model = FSQVAE(cfg)
    x = torch.rand(3, 3, size, size)
    out = model(x)
    assert out.logits.shape == (3, 3, size, size)
    assert out.latent.shape == (3, 64) and out.indices.shape == (3, 64 * stages)
    model.eval()
    idx = model.encode(x)
    assert idx.dtype == torch.int64 and idx.shape == (3, 64 * stages)
    levels = torch.tensor(model.levels)
    assert bool(((idx >= 0) & (idx < levels)).all())
    images = model.decode(idx)
    assert images.shape == (3, 3, size, size) and images.min() >= 0 and images.max() <= 1
    # numpy in, same answer
    assert torch.equal(model.encode(x.numpy()), idx)


def test_encoder_layers_follow_the_paper():
    model = FSQVAE(ModelConfig())
    convs = [m for m in model.encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 32, (4, 4), (2, 2), (1, 1)),
        (32, 64, (4, 4), (2, 2), (1, 1)),
        (64, 128, (4, 4), (2, 2), (1, 1)),
        (128, 256, (4, 4), (2, 2), (1, 1)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.features) == 4
    assert model.encoder.fc.out_features == 64 and model.decoder.fc.in_features == 64
    deconvs = [m for m in model.decoder.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [128, 64, 32, 3]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FSQVAE(ModelConfig(levels=parse_levels("8,5", 64))).eval()


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.rand(2, 3, 16, 16), r"shape \[N, 3, 32, 32\]"),
        (torch.rand(3, 32, 32), "shape"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "floating point"),
        (torch.full((1, 3, 32, 32), 1.5), r"lie in \[0, 1\]"),
        (torch.full((1, 3, 32, 32), -0.1), r"lie in \[0, 1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    ],
)
def test_encode_rejects_bad_images(model, images, match):
    with pytest.raises(FSQDeployError, match=match):
        model.encode(images)


@pytest.mark.parametrize(
    "indices,match",
    [
        (torch.zeros(2, 63, dtype=torch.int64), r"shape \[N, 64\]"),
        (torch.zeros(2, 64), "integers"),
        (torch.full((1, 64), -1), "outside"),
        (torch.tensor([[7] * 64]), r"index 7 at \[0, 1\] is outside \[0, 5\)"),
    ],
)
def test_decode_rejects_bad_indices(model, indices, match):
    with pytest.raises(FSQDeployError, match=match):
        model.decode(indices)


def test_empty_batch_is_fine(model):
    assert model.encode(torch.zeros(0, 3, 32, 32)).shape == (0, 64)


def test_save_and_load_round_trip(tmp_path, model):
    save_model(model, tmp_path / "run", {"data": "synthetic"})
    loaded = FSQVAE.load(tmp_path / "run")
    assert not loaded.training
    x = torch.rand(8, 3, 32, 32)
    assert torch.equal(loaded.encode(x), model.encode(x))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["levels"] == model.levels and len(cfg["levels"]) == 64
    assert cfg["temperature"] == pytest.approx(model.quantizer.temperature)


def _corrupt_run(tmp_path, model, how):
    run = tmp_path / how
    save_model(model, run)
    if how == "truncated-weights":
        data = (run / "model.safetensors").read_bytes()
        (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "garbage-weights":
        (run / "model.safetensors").write_bytes(b"\x00" * 100)
    elif how == "missing-weights":
        (run / "model.safetensors").unlink()
    elif how == "bad-json":
        (run / "config.json").write_text("{not json")
    elif how == "wrong-levels":
        cfg = json.loads((run / "config.json").read_text())
        cfg["levels"] = [16] * 64
        (run / "config.json").write_text(json.dumps(cfg))
    elif how == "not-a-checkpoint":
        (run / "config.json").write_text("{}")
    return run


@pytest.mark.parametrize(
    "how,match",
    [
        ("truncated-weights", "corrupt"),
        ("garbage-weights", "corrupt"),
        ("missing-weights", "missing"),
        ("bad-json", "not valid JSON"),
        ("wrong-levels", "does not match config.json"),
        ("not-a-checkpoint", "not an fsqdeploy checkpoint"),
    ],
)
def test_load_rejects_broken_runs(tmp_path, model, how, match):
    with pytest.raises(FSQDeployError, match=match):
        FSQVAE.load(_corrupt_run(tmp_path, model, how))


def test_load_missing_directory(tmp_path):
    with pytest.raises(FSQDeployError, match="does not exist"):
        FSQVAE.load(tmp_path / "nope")


def test_numpy_indices_decode(model):
    idx = np.zeros((2, 64), dtype=np.int32)
    assert model.decode(idx).shape == (2, 3, 32, 32)
