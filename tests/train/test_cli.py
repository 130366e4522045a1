"""`fsqdeploy train` and `fsqdeploy eval` from the command line: results and one-line errors."""

import json
import subprocess
import sys

import pytest
import torch

from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig
from fsqdeploy.model import FSQVAE


def fsqdeploy(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fsqdeploy.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_one_line_error(result, match):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("fsqdeploy: error: ") and match in lines[0], lines[0]


def test_train_and_eval_on_synthetic(tmp_path):
    run = tmp_path / "run"
    r = fsqdeploy("train", "--arch", "paper", "--data", "synthetic", "--epochs", "1", "--channels", "8,16,32,64",
                  "--latent-dim", "16", "--levels", "8,5", "--out", run)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["levels"] == [8, 5] * 8 and cfg["training"]["data"] == "synthetic"
    r = fsqdeploy("eval", run, "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["images"] == 512 and metrics["bits_per_image"] == 43  # ceil(8 * (3 + 2.32))
    assert 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    # a non-empty --out is refused without --resume / --force
    r = fsqdeploy("train", "--arch", "paper", "--data", "synthetic", "--epochs", "1", "--out", run)
    assert_one_line_error(r, "not empty")


def test_eval_fid_with_a_local_feature_extractor(tmp_path, feature_extractor):
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_model(FSQVAE(ModelConfig(channels=(8, 16, 32, 64), latent_dim=16, levels=[8] * 16)), run,
               {"data": "synthetic"})
    r = fsqdeploy("eval", run, "--fid", "--inception-weights", feature_extractor, "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["fid"] > 0.01  # an untrained model is far off


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_shift():
    import numpy as np

    from fsqdeploy.train.stats import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "--data", "folder:/no/such/dir"], "does not exist"),
        (["train", "--data", "imagenet"], "imagenet"),
        (["train", "--levels", "8,x"], "not a comma-separated list"),
        (["train", "--levels", "8,5,5,5,5"], "does not divide"),  # 5 does not divide D = 12
        (["train", "--arch", "paper", "--image-size", "40"], "multiple of 16"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--temperature-schedule", "sigmoid"], "unknown temperature schedule"),
        (["train", "--recon-loss", "l1"], "unknown reconstruction loss"),
        (["train", "--resume"], "nothing to resume"),
        (["train", "--device", "cuda"], "CUDA is not available"),
        (["eval", "/no/such/run"], "does not exist"),
        (["eval", ".", "--fid"], "--inception-weights"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, args, match):
    if args[0] == "train":
        args = [*args, "--out", tmp_path / "out"]
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = fsqdeploy(*args, cwd=tmp_path)
    assert_one_line_error(r, match)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_eval_corrupt_checkpoint(tmp_path):
    run = tmp_path / "run"
    save_model(FSQVAE(ModelConfig(channels=(8, 16, 32, 64), latent_dim=16, levels=[8] * 16)), run)
    (run / "model.safetensors").write_bytes(b"garbage")
    assert_one_line_error(fsqdeploy("eval", run, "--data", "synthetic"), "corrupt")


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    from fsqdeploy.metrics import ssim

    torch.manual_seed(0)
    a = torch.rand(4, 3, 32, 32)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(4):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), channel_axis=0, data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-5
