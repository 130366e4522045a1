"""The conv codec and its training: spatial shapes, FSQ over channels, crops, held-out photos,
best-checkpoint selection, exact resume, and the CLI's per-architecture rules."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from fsqdeploy import FSQVAE
from fsqdeploy.config import ModelConfig, TrainConfig, tile_halos
from fsqdeploy.data import HELDOUT_PHOTOS, TRAINING_PHOTOS, PhotoSplits, sample_photos
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import parse_levels
from fsqdeploy.images import pad_to_multiple
from fsqdeploy.train.conv_loop import evaluate_photos, train_conv
from fsqdeploy.train.crops import random_crops
from fsqdeploy.train.stats import index_stats


def conv_cfg(channels=(8, 8, 8), latent_dim=4, levels="8,5,5,5", image_size=32, stages=1) -> ModelConfig:
    return ModelConfig(arch="conv", image_size=image_size, channels=channels, latent_dim=latent_dim,
                       levels=parse_levels(levels, latent_dim) * stages, stages=stages)


@pytest.mark.parametrize("channels", [(8, 8, 8), (8, 8, 8, 8)])
@pytest.mark.parametrize("hw", [(32, 32), (48, 80), (16 * 5, 16 * 3)])
def test_spatial_shapes_for_several_sizes_and_factors(channels, hw):
    cfg = conv_cfg(channels)
    f = cfg.downsample
    h, w = (-(-v // f) * f for v in hw)
    model = FSQVAE(cfg).eval()
    idx = model.encode(torch.rand(2, 3, h, w))
    assert idx.shape == (2, 4, h // f, w // f) and idx.dtype == torch.int64
    assert model.decode(idx).shape == (2, 3, h, w)


def test_fsq_over_the_channel_axis_equals_per_vector_fsq():
    torch.manual_seed(0)
    model = FSQVAE(conv_cfg(stages=2)).eval()
    x = torch.rand(2, 3, 48, 64)
    grid = model.encode(x)
    z = model.encoder(x)  # [N, D, h, w]
    for n in range(2):
        for r in range(z.shape[2]):
            for c in range(z.shape[3]):
                vector = model.quantizer.indices(z[n, :, r, c][None])[0]
                assert torch.equal(grid[n, :, r, c], vector)
    codes = model.quantizer.indices_to_decoder_input(grid[0, :, 1, 2][None])[0]
    full = model.decoder.deconv[0].weight  # the decoder sees exactly the per-vector codes at each position
    assert full.shape[1] == codes.shape[0]


def test_spatial_checks_refuse_bad_sizes_channels_and_indices():
    model = FSQVAE(conv_cfg()).eval()
    with pytest.raises(FSQDeployError, match="multiples of 8, got 30x32"):
        model.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(FSQDeployError, match=r"\[N, 3, H, W\]"):
        model.encode(torch.rand(1, 4, 32, 32))
    with pytest.raises(FSQDeployError, match=r"index 8 at \[0, 0, 1, 1\] is outside \[0, 8\)"):
        bad = torch.zeros(1, 4, 2, 2, dtype=torch.int64)
        bad[0, 0, 1, 1] = 8
        model.decode(bad)
    with pytest.raises(FSQDeployError, match=r"\[N, 4, h, w\]"):
        model.decode(torch.zeros(1, 4, dtype=torch.int64))


def test_halos_cover_the_receptive_field():
    """A pixel change farther than the encoder halo from a cell's block cannot change its latent."""
    cfg = conv_cfg()
    halo, _ = tile_halos(cfg)
    torch.manual_seed(0)
    model = FSQVAE(cfg).eval()
    x = torch.rand(1, 3, 96, 96)
    y = x.clone()
    y[..., :, 96 - 1] = 1 - y[..., :, 96 - 1]  # change the last column only
    za, zb = model.encoder(x), model.encoder(y)
    f = cfg.downsample
    far = (96 - 1 - halo) // f  # cells whose block ends at least `halo` px before the changed column
    assert torch.equal(za[..., :far], zb[..., :far])
    assert not torch.equal(za, zb)


def test_the_linear_path_maps_each_cell_alone_and_is_off_in_old_configs():
    """The linear path (k = s = f) carries a cell's pixels to its latent vector and the vector to its
    pixels, and nothing else: so it adds no reach to the halos. Configs written before it load without."""
    from fsqdeploy.config import model_config_from_dict, model_config_to_dict

    cfg = dataclasses.replace(conv_cfg(), linear_path=True)
    torch.manual_seed(0)
    model = FSQVAE(cfg).eval()
    f = cfg.downsample
    x = torch.rand(1, 3, 4 * f, 4 * f)
    y = x.clone()
    y[..., f : 2 * f, f : 2 * f] = 1 - y[..., f : 2 * f, f : 2 * f]  # one cell's pixels
    changed = (model.encoder.linear(x) != model.encoder.linear(y)).any(dim=1)[0]
    assert changed[1, 1] and changed.sum() == 1
    codes = torch.zeros(1, 4, 4, 4)
    codes[0, :, 2, 3] = 1.0
    out = (model.decoder.linear(codes) - model.decoder.linear(torch.zeros_like(codes))).abs().sum(dim=1)[0]
    assert out[2 * f : 3 * f, 3 * f : 4 * f].gt(0).all() and out.gt(0).sum() == f * f
    assert model.encode(x).shape == (1, 4, 4, 4) and model.decode(model.encode(x)).shape == (1, 3, 4 * f, 4 * f)
    old = model_config_to_dict(conv_cfg())
    del old["linear_path"]
    assert model_config_from_dict(old).linear_path is False
    with pytest.raises(FSQDeployError, match="linear path is for the conv architecture only"):
        ModelConfig(linear_path=True).validate()
    with pytest.raises(FSQDeployError, match="malformed model field"):
        model_config_from_dict({**old, "linear_path": "yes"})


def test_crops_keep_the_pixel_range_and_repeat_per_step():
    photos = sample_photos().train
    a = random_crops(photos, 8, 32, seed=3, step=5)
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, random_crops(photos, 8, 32, seed=3, step=5))
    assert not torch.equal(a, random_crops(photos, 8, 32, seed=3, step=6))
    # colour order and flips: across many crops every channel order occurs (means are permuted)
    assert float(a.std()) > 0.05


def test_tint_gives_greyscale_crops_colour_within_the_pixel_range():
    grey = np.repeat(np.linspace(0, 255, 64 * 64, dtype=np.uint8).reshape(64, 64, 1), 3, axis=2)
    crops = random_crops([grey], 64, 32, seed=0, step=0)
    assert float(crops.min()) >= 0.0 and float(crops.max()) <= 1.0
    spread = (crops.amax(dim=1) - crops.amin(dim=1)).amax(dim=(1, 2))  # per crop, the largest channel gap
    tinted = spread > 1e-4  # the others are exactly grey, as the photo is
    assert 16 <= int(tinted.sum()) <= 48  # about TINTED = half of them
    assert float(spread[tinted].mean()) > 0.1


def test_heldout_photos_are_disjoint_from_training_photos():
    photos = sample_photos()
    assert set(HELDOUT_PHOTOS).isdisjoint(TRAINING_PHOTOS)
    assert "cat" not in TRAINING_PHOTOS  # skimage's cat is chelsea, a held-out photo
    digest = lambda p: hashlib.sha256(p.tobytes()).hexdigest()  # noqa: E731
    assert {digest(p) for p in photos.train}.isdisjoint({digest(p) for p in photos.test})
    # no held-out photo is a crop of a training photo either: compare 16x16 corner blocks
    blocks = {p[:16, :16].tobytes() for p in photos.train}
    assert all(p[:16, :16].tobytes() not in blocks for p in photos.test)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in (*photos.train, *photos.test))


def tiny_photos() -> PhotoSplits:
    rng = np.random.default_rng(0)
    smooth = lambda h, w: np.repeat(np.repeat(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), 8, 0), 8, 1)  # noqa: E731
    train = tuple(smooth(64, 96) for _ in range(4))
    test = (smooth(40, 56)[:37, :53].copy(), smooth(48, 48))
    return PhotoSplits(train, test, ("odd", "square"), "tiny")


TINY_RUN = dict(batch_size=4, lr=3e-3, recon_loss="mse", quant_weight=0.0, entropy_weight=0.0,
                temperature_schedule="constant", temperature_end=1.0, epochs=0)


def test_training_keeps_the_best_checkpoint_and_says_which_step(tmp_path):
    cfg = TrainConfig(steps=12, eval_every=3, **TINY_RUN)
    photos = tiny_photos()
    model = train_conv(conv_cfg(), cfg, tmp_path, photos=photos, device=torch.device("cpu"))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [3, 6, 9, 12]
    best = max(lines, key=lambda m: m["test_psnr"])
    assert lines[-1]["best_step"] == best["step"]
    saved = json.loads((tmp_path / "config.json").read_text())["training"]
    assert saved["best_step"] == best["step"]
    cells = []
    again = evaluate_photos(FSQVAE.load(tmp_path), photos, cells)
    assert again["test_psnr"] == pytest.approx(best["test_psnr"], abs=1e-9)
    tokens = index_stats(np.concatenate(cells), model.levels)  # the held-out token view, as eval counts it
    assert (best["test_tokens_in_use"], best["test_token_perplexity"]) == \
        (tokens["tokens_in_use"], pytest.approx(tokens["token_perplexity"]))
    assert 1 <= best["test_tokens_in_use"] <= len(np.concatenate(cells))
    assert evaluate_photos(model, photos)["test_psnr"] == pytest.approx(best["test_psnr"], abs=1e-9)
    assert set(best["test_psnr_per_image"]) == {"odd", "square"}
    for name in ("recon.png", "curves.png", "trainer_state.pt"):
        assert (tmp_path / name).stat().st_size > 0


def test_the_saved_model_is_the_weight_average(tmp_path):
    cfg = TrainConfig(steps=6, eval_every=6, **TINY_RUN)
    train_conv(conv_cfg(), cfg, tmp_path, photos=tiny_photos(), device=torch.device("cpu"))
    saved = FSQVAE.load(tmp_path).state_dict()
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    weight = "encoder.features.0.weight"
    assert torch.equal(saved[weight], state["averaged"]["module." + weight])
    assert not torch.equal(saved[weight], state["model"][weight])  # the last step's weights are not it


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=8, eval_every=4, **TINY_RUN)
    photos = tiny_photos()
    whole = train_conv(conv_cfg(), cfg, tmp_path / "a", photos=photos, device=torch.device("cpu"))
    train_conv(conv_cfg(), cfg, tmp_path / "b", photos=photos, device=torch.device("cpu"), stop_after_step=4)
    resumed = train_conv(conv_cfg(), cfg, tmp_path / "b", photos=photos, device=torch.device("cpu"), resume=True)
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    state_a = torch.load(tmp_path / "a" / "trainer_state.pt", weights_only=True)
    state_b = torch.load(tmp_path / "b" / "trainer_state.pt", weights_only=True)
    for k in state_a["model"]:
        assert torch.equal(state_a["model"][k], state_b["model"][k]), k


def test_bfloat16_autocast_where_the_cpu_has_bfloat16_instructions(monkeypatch):
    from fsqdeploy.train.conv_loop import autocast_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for found, expected in [({"avx512_bf16": True, "amx_bf16": False}, True), ({"amx_bf16": True}, True),
                            ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True}, False), ({}, False)]:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda found=found: found)
        assert autocast_bf16(cpu, amp=True) is expected, found
        assert autocast_bf16(cpu, amp=False) is False
    monkeypatch.setattr(torch.version, "hip", None)
    for major, expected in [(9, True), (8, True), (7, False)]:  # H100, A100: bfloat16 tensor cores; V100, T4: not
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, major=major: type("P", (), {
            "major": major})())
        assert autocast_bf16(cuda, amp=True) is expected and autocast_bf16(cuda, amp=False) is False


@pytest.mark.parametrize("amp", [True, False])
def test_cpu_mixed_precision_runs_the_network_in_bfloat16_and_the_quantizer_in_fp32(tmp_path, monkeypatch, amp):
    """--amp on a bfloat16 CPU: the decoder's logits come out bfloat16 while the latent reaching the
    quantizer is float32; metrics.jsonl says so. --no-amp: float32 throughout."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    original = FSQVAE.forward

    def spy(self, images):
        out = original(self, images)
        if torch.is_grad_enabled():  # the training step, not the held-out evaluation
            seen.extend((out.logits.dtype, s.bounded.dtype) for s in out.stages)
        return out

    monkeypatch.setattr(FSQVAE, "forward", spy)
    cfg = TrainConfig(steps=4, eval_every=4, amp=amp, **TINY_RUN)
    train_conv(conv_cfg(), cfg, tmp_path, photos=tiny_photos(), device=torch.device("cpu"))
    logits = torch.bfloat16 if amp else torch.float32
    assert seen and all(pair == (logits, torch.float32) for pair in seen), seen
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["autocast"] == ("bfloat16" if amp else None)
    assert np.isfinite(lines[-1]["train_loss"])


def test_padding_replicates_edges_to_a_multiple():
    photo = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    padded = pad_to_multiple(photo, 4)
    assert padded.shape == (8, 8, 3)
    assert np.array_equal(padded[:5, :7], photo) and np.array_equal(padded[7, 6], photo[4, 6])


@pytest.mark.parametrize("args, message", [
    (["--arch", "conv", "--epochs", "3"], "--epochs and --adaptive-levels are for --arch paper"),
    (["--arch", "paper", "--steps", "3"], "--steps and --minutes are for --arch conv"),
    (["--arch", "gdn"], "unknown architecture 'gdn'"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--image-size", "60"], "not a positive multiple of 16"),  # the default channels: f = 16
    (["--data", "cifar10:/nowhere", "--steps", "1"], "not a source of whole images"),
    (["--arch", "paper", "--linear-path"], "the linear path is for the conv architecture only"),
])
def test_train_cli_refuses_bad_options_in_one_line(tmp_path, args, message):
    from test_cli import assert_one_line_error, fsqdeploy  # tests/train is on sys.path (rootdir-relative)

    assert_one_line_error(fsqdeploy("train", "--out", tmp_path / "run", *args, cwd=tmp_path), message)
    assert not (tmp_path / "run").exists()


def test_train_and_eval_a_conv_run_from_the_command_line(tmp_path, feature_extractor):
    from test_cli import fsqdeploy

    run = tmp_path / "run"
    r = fsqdeploy("train", "--data", "synthetic", "--steps", "4", "--eval-every", "2", "--channels", "8,8,8",
                  "--batch-size", "4", "--out", run)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 4]
    # the default levels 7 x 11, 5 -> 34 bits per cell (7^11 * 5 < 2^34); --channels 8,8,8 makes the cell 8x8
    assert lines[0]["bits_per_pixel"] == pytest.approx(34 / 64)
    # the run says which precision --amp gave on this machine, as metrics.jsonl does
    said = "precision: bfloat16 autocast, the quantizer in FP32" if lines[0]["autocast"] else "precision: FP32"
    assert said in r.stderr.splitlines()[0]
    r32 = fsqdeploy("train", "--data", "synthetic", "--steps", "2", "--channels", "8,8,8", "--batch-size", "4",
                    "--no-amp", "--out", tmp_path / "fp32")
    assert r32.returncode == 0 and r32.stderr.splitlines()[0].strip() == "precision: FP32", r32.stderr
    assert json.loads((tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()[-1])["autocast"] is None
    r = fsqdeploy("eval", run, "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["test_psnr"] == pytest.approx(max(m["test_psnr"] for m in lines), abs=1e-6)
    # a folder the run never trained on is evaluated whole, not cut to its path-hash test split
    from PIL import Image

    from fsqdeploy.data import folder_split

    folder = tmp_path / "unseen"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(
            folder / f"p{i}.png")
    assert len(folder_split(folder)[1]) < 10
    r = fsqdeploy("eval", run, "--data", f"folder:{folder}", "--json", tmp_path / "f.json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "f.json").read_text())
    assert metrics["images"] == 10 and len(metrics["test_psnr_per_image"]) == 10
    # rFID over the whole photos at their own size (a local extractor): each against its reconstruction
    rfid = fsqdeploy("eval", run, "--data", f"folder:{folder}", "--fid", "--inception-weights", feature_extractor,
                     "--json", tmp_path / "fid.json")
    assert rfid.returncode == 0, rfid.stderr
    with_fid = json.loads((tmp_path / "fid.json").read_text())
    assert with_fid["fid"] > 1e-4 and with_fid["test_psnr"] == metrics["test_psnr"]
    # the code statistics are the evaluated images', not training's: a flat photo's 3 x 5 cells differ only
    # where the convolutions' zero padding reaches (corners, edges, inside: at most 9 kinds)
    Image.fromarray(np.full((24, 40, 3), 128, np.uint8)).save(tmp_path / "flat.png")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat.png").rename(tmp_path / "flat" / "flat.png")
    r = fsqdeploy("eval", run, "--data", f"folder:{tmp_path / 'flat'}", "--json", tmp_path / "flat.json")
    assert r.returncode == 0, r.stderr
    flat = json.loads((tmp_path / "flat.json").read_text())
    assert flat["tokens_in_use"] <= 9 < metrics["tokens_in_use"] and flat["codebook_usage"] < metrics["codebook_usage"]
    one = fsqdeploy("eval", run, "--data", f"folder:{tmp_path / 'flat'}", "--fid", "--inception-weights",
                    feature_extractor)
    assert one.returncode == 2 and one.stderr.strip().splitlines() == [
        f"fsqdeploy: error: eval: FID needs at least 2 images, and folder:{tmp_path / 'flat'} gives 1. Note: "
        "evaluate a folder of photos (--data folder:DIR)"], one.stderr
    assert metrics["selection"] == "every file: the model trained on synthetic, none of them"
    assert "every file: the model trained on synthetic" in " ".join(r.stdout.split())
