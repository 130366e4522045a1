"""The training loop: it learns, it resumes exactly, it adapts levels, and it writes its files."""

import json
import math

import numpy as np
import pytest
import torch

from fsqdeploy import FSQVAE
from fsqdeploy.config import ModelConfig, TrainConfig
from fsqdeploy.data import ImageSplits, load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import parse_levels
from fsqdeploy.metrics import code_bits
from fsqdeploy.train.adaptive import reallocate_levels
from fsqdeploy.train.loop import evaluate, train
from fsqdeploy.train.schedules import progress_of, temperature_at

SMALL = dict(channels=(8, 16, 32, 64), latent_dim=16)


def small_splits(n_train=256, n_test=64) -> ImageSplits:
    s = load_images("sample", 32)
    return ImageSplits(s.train[:n_train], s.test[:n_test], s.source)


def test_short_run_on_sample_lowers_the_loss_and_writes_every_file(tmp_path):
    splits = load_images("sample", 32)
    cfg = TrainConfig(epochs=2, seed=0)
    torch.manual_seed(cfg.seed)
    untrained = evaluate(FSQVAE(ModelConfig()), splits.test, cfg, torch.device("cpu"))
    model = train(ModelConfig(), cfg, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert lines[-1]["test_loss"] < untrained["loss"] - 0.05
    assert lines[-1]["test_psnr"] > untrained["psnr"] + 3
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    for key in ("test_ssim", "codebook_usage", "perplexity", "bits_per_image", "temperature", "images_per_s",
                "train_recon_loss", "train_quant_loss", "test_recon_loss", "test_quant_loss"):
        assert key in lines[-1]
    assert lines[-1]["bits_per_image"] == 192
    assert 1 < lines[-1]["perplexity"] <= 8
    for name in ("model.safetensors", "config.json", "recon.png", "curves.png", "trainer_state.pt"):
        assert (tmp_path / name).stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp"))
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["temperature"] == pytest.approx(0.1, rel=1e-6)  # the final temperature
    assert cfg_json["training"]["data"] == "sample"
    loaded = FSQVAE.load(tmp_path)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_resume_equals_uninterrupted(tmp_path):
    splits = small_splits()
    cfg = TrainConfig(epochs=3, batch_size=64, seed=3, adaptive_levels=True, adapt_epochs=[2])
    full = train(ModelConfig(**SMALL, levels=[8] * 16), cfg, tmp_path / "full", splits=splits)
    train(ModelConfig(**SMALL, levels=[8] * 16), cfg, tmp_path / "cut", splits=splits, stop_after_epoch=1)
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["training"]["epochs_done"] == 1
    resumed = train(ModelConfig(), TrainConfig(), tmp_path / "cut", splits=splits, resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def strip(path):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        for r in rows:
            r.pop("images_per_s")
        return rows

    assert strip(tmp_path / "full" / "metrics.jsonl") == strip(tmp_path / "cut" / "metrics.jsonl")


def test_adaptive_levels_keep_the_bit_budget_and_the_code_width(tmp_path):
    splits = small_splits()
    cfg = TrainConfig(epochs=3, batch_size=64, adaptive_levels=True, adapt_epochs=[1, 2])
    model = train(ModelConfig(**SMALL, levels=[8] * 16), cfg, tmp_path, splits=splits)
    levels = json.loads((tmp_path / "config.json").read_text())["levels"]
    assert len(levels) == 16 and levels == model.levels
    assert code_bits(levels) <= 16 * 3 + 1e-9
    assert levels != [8] * 16  # usage is never perfectly even after training
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["levels_adapted"] and rows[1]["levels_adapted"] and "levels_adapted" not in rows[2]
    assert rows[1]["levels"] == rows[2]["levels"] == levels  # frozen after the last adaptation


def test_reallocate_moves_levels_from_unused_to_saturated_dims():
    counts = np.zeros((4, 8))
    counts[0, :] = 1.0  # uses all 8 levels evenly: starved
    counts[1, :2] = 1.0  # uses 2 of 8: wasteful
    counts[2, :4] = 1.0
    counts[3, :5] = 1.0
    new = reallocate_levels([8, 8, 8, 8], counts, budget_bits=12.0)
    assert new[0] == 9 and new[1] == 7 and code_bits(new) <= 12.0
    # no move that breaks the budget
    assert reallocate_levels([3, 8], np.array([[1.0, 1, 1] + [0] * 5, [1.0] * 8]), budget_bits=code_bits([3, 8])) in (
        [3, 8],
        [2, 9],
    )


def test_hierarchical_training_gives_one_index_vector(tmp_path):
    splits = small_splits(128, 32)
    cfg = TrainConfig(epochs=1, batch_size=64)
    model = train(ModelConfig(**SMALL, levels=parse_levels("8,5", 16) * 2, stages=2), cfg, tmp_path, splits=splits)
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["stages"] == 2 and len(cfg_json["levels"]) == 32
    idx = model.encode(torch.rand(3, 3, 32, 32))
    assert idx.shape == (3, 32)
    assert not torch.equal(model.quantizer.stage_weights.detach(), torch.ones(2))  # the importance weights are learned


@pytest.mark.parametrize("kind", ["exponential", "linear", "cosine"])
def test_schedules_run_from_start_to_end(kind):
    values = [temperature_at(progress_of(s, 100), 1.0, 0.1, kind) for s in range(100)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values, values[1:]))
    if kind == "exponential":  # constant ratio per step
        ratios = [b / a for a, b in zip(values, values[1:])]
        assert max(ratios) - min(ratios) < 1e-9
        assert values[50] == pytest.approx(0.1 ** (50 / 99))


def test_constant_schedule_trains_at_the_inference_temperature():
    assert temperature_at(0.0, 1.0, 0.25, "constant") == temperature_at(1.0, 1.0, 0.25, "constant") == 0.25


def test_zero_weights_turn_terms_off():
    from fsqdeploy.train.losses import fsq_vae_loss

    torch.manual_seed(0)
    model = FSQVAE(ModelConfig(**SMALL, levels=[8] * 16))
    x = torch.rand(8, 3, 32, 32)
    out = model(x)
    stages = list(model.quantizer.stages)
    only_recon = fsq_vae_loss(out.logits, x, stages, out.stages, 0.5, "bce", 1.0, 0.0, 0.0)
    assert torch.equal(only_recon.total, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, x))
    both = fsq_vae_loss(out.logits, x, stages, out.stages, 0.5, "mse", 1.0, 1.0, 0.1)
    expected = float(both.recon + both.quant - 0.1 * both.entropy_rate)
    assert float(both.total.detach()) == pytest.approx(expected, rel=1e-5)
    assert 0 < float(both.entropy_rate) <= 1 and float(both.quant) >= 0
    assert math.isfinite(float(both.total.detach()))


def test_the_checkpoint_is_the_best_epoch_and_says_so(tmp_path, monkeypatch):
    """Test PSNR 10, 20, 15 dB over three epochs: the checkpoint holds epoch 2's weights and its
    temperature, config.json says so, and metrics.jsonl keeps every epoch."""
    import fsqdeploy.train.loop as loop

    real = loop.evaluate
    scores = iter([10.0, 20.0, 15.0])
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {**real(*a, **k), "psnr": next(scores)})
    splits = small_splits(128, 16)
    cfg = TrainConfig(epochs=3, batch_size=64, seed=5)
    model = train(ModelConfig(**SMALL, levels=[8] * 16), cfg, tmp_path / "full", splits=splits)
    written = json.loads((tmp_path / "full" / "config.json").read_text())
    assert written["training"]["best_epoch"] == 2 and written["training"]["best_test_psnr"] == 20.0
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [m["best_epoch"] for m in lines] == [1, 2, 2]

    monkeypatch.setattr(loop, "evaluate", real)
    train(ModelConfig(**SMALL, levels=[8] * 16), cfg, tmp_path / "two", splits=splits, stop_after_epoch=2)
    weights = "model.safetensors"
    assert (tmp_path / "full" / weights).read_bytes() == (tmp_path / "two" / weights).read_bytes()
    assert written["temperature"] == json.loads((tmp_path / "two" / "config.json").read_text())["temperature"]
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.encode(x), FSQVAE.load(tmp_path / "two").encode(x))  # train returns the checkpoint


def test_rate_term_is_the_soft_usage_entropy_in_bits_per_pixel_and_lowers_it_when_stepped():
    """A marginal coder with the batch's soft usage as its table spends sum_d H_d bits per code
    vector: the rate term is that over the pixels a vector covers, and its gradient lowers it."""
    from fsqdeploy.train.losses import fsq_vae_loss, usage_entropy

    torch.manual_seed(0)
    model = FSQVAE(ModelConfig(**SMALL, levels=[8] * 16))
    x = torch.rand(8, 3, 32, 32)
    stages = list(model.quantizer.stages)
    out = model(x)
    terms = fsq_vae_loss(out.logits, x, stages, out.stages, 1.0, "mse", 1.0, 0.0, 0.0, 0.5, 32 * 32)
    bits = float(sum(usage_entropy(s, o).sum() for s, o in zip(stages, out.stages)).detach()) / math.log(2)
    assert float(terms.rate_bpp) == pytest.approx(bits / 1024, rel=1e-6)
    assert 0 < bits <= 16 * 3 + 1e-4  # at most log2(8) bits per dimension
    assert float(terms.total.detach()) == pytest.approx(float(terms.recon) + 0.5 * float(terms.rate_bpp), rel=1e-5)
    off = fsq_vae_loss(out.logits, x, stages, out.stages, 1.0, "mse", 1.0, 0.0, 0.0)
    assert float(off.rate_bpp) == 0.0 and torch.equal(off.total.detach(), off.recon)

    # only the rate term, stepped: the estimate falls
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = float(terms.rate_bpp)
    for _ in range(20):
        out = model(x)
        rate = fsq_vae_loss(out.logits, x, stages, out.stages, 1.0, "mse", 0.0, 0.0, 0.0, 1.0, 32 * 32)
        optimizer.zero_grad()
        rate.total.backward()
        optimizer.step()
    out = model(x)
    after = float(fsq_vae_loss(out.logits, x, stages, out.stages, 1.0, "mse", 0.0, 0.0, 0.0, 1.0, 1024).rate_bpp)
    assert after < 0.9 * before


def test_negative_rate_weight_is_refused():
    from fsqdeploy.train.loop import validate_train_config

    with pytest.raises(FSQDeployError, match="must not be negative"):
        validate_train_config(TrainConfig(rate_weight=-0.1))


def test_rate_term_acts_only_from_rate_from_of_the_run():
    from fsqdeploy.train.loop import validate_train_config
    from fsqdeploy.train.losses import rate_weight_at

    assert rate_weight_at(0.49, 0.03, 0.5) == 0.0 and rate_weight_at(0.5, 0.03, 0.5) == 0.03
    assert rate_weight_at(0.0, 0.03, 0.0) == 0.03
    with pytest.raises(FSQDeployError, match="rate-from"):
        validate_train_config(TrainConfig(rate_from=1.5))
