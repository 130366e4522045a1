"""Tiny runs and their exported artifacts, built once per session and shared by every test folder.

Two patch (paper) model variants: 32 px with one stage of 8 levels, and 64 px with two residual
stages of the levels pattern 8,5,5,5; and one spatial (conv) model, f = 8, two residual stages of
8,5,5,5 over 4 latent channels. Weights are random (seed 0); a few train-mode passes over sample
images give BatchNorm real running statistics, so folding it is not a no-op.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conv_runs import make_conv_run
from trt_standin import fake_cuda, fake_trt  # noqa: F401 - the strict stand-in tensorrt, for every test folder

from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig
from fsqdeploy.data import load_images
from fsqdeploy.export.pipeline import export_artifact
from fsqdeploy.fsq import parse_levels
from fsqdeploy.images import images_to_float
from fsqdeploy.model import FSQVAE

FIXTURE_PARITY_IMAGES = 256


@dataclass(frozen=True)
class Exported:
    run: Path
    art: Path
    model: FSQVAE


def make_run(path: Path, image_size: int, pattern: str, latent_dim: int, stages: int) -> FSQVAE:
    cfg = ModelConfig(image_size=image_size, channels=(8, 16, 32, 32), latent_dim=latent_dim,
                      levels=parse_levels(pattern, latent_dim * stages), stages=stages, temperature=0.1)
    torch.manual_seed(0)
    model = FSQVAE(cfg).train()
    x = torch.from_numpy(images_to_float(load_images("sample", image_size).train[:128]))
    with torch.no_grad():
        for _ in range(3):
            model(x)
    save_model(model.eval(), path, {"data": "sample"})
    return FSQVAE.load(path)


@pytest.fixture(scope="session", autouse=True)
def private_tuning_cache(tmp_path_factory):
    """No test reads or writes this machine's CPU tuning records (fsqdeploy.backends.tuning)."""
    import os

    old = os.environ.get("FSQDEPLOY_CACHE_DIR")
    os.environ["FSQDEPLOY_CACHE_DIR"] = str(tmp_path_factory.mktemp("fsqdeploy-cache"))
    yield
    if old is None:
        del os.environ["FSQDEPLOY_CACHE_DIR"]
    else:
        os.environ["FSQDEPLOY_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def run32(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run32")
    make_run(path, 32, "8", 16, 1)
    return path


@pytest.fixture(scope="session")
def run64(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run64")
    make_run(path, 64, "8,5,5,5", 8, 2)
    return path


@pytest.fixture(scope="session")
def conv_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conv_run")
    make_conv_run(path)
    return path


@pytest.fixture(scope="session")
def conv_exported(tmp_path_factory, conv_run) -> Exported:
    """The conv run exported with FP32 and FP16 graphs; the gate runs the three held-out photos."""
    art = tmp_path_factory.mktemp("arts") / "conv"
    export_artifact(conv_run, art, opset=18, parity_images=3, precisions=("fp32", "fp16"))
    return Exported(conv_run, art, FSQVAE.load(conv_run))


def _export(tmp_path_factory, run: Path, name: str, **kwargs) -> Exported:
    art = tmp_path_factory.mktemp("arts") / name
    export_artifact(run, art, opset=18, parity_images=FIXTURE_PARITY_IMAGES, **kwargs)
    return Exported(run, art, FSQVAE.load(run))


@pytest.fixture(scope="session")
def art32(tmp_path_factory, run32) -> Exported:
    return _export(tmp_path_factory, run32, "art32")


@pytest.fixture(scope="session")
def art64(tmp_path_factory, run64) -> Exported:
    return _export(tmp_path_factory, run64, "art64")


@pytest.fixture(scope="session")
def art64_inline(tmp_path_factory, run64) -> Exported:
    return _export(tmp_path_factory, run64, "art64_inline", inline=True)


@pytest.fixture(params=["art32", "art64"])
def exported(request) -> Exported:
    return request.getfixturevalue(request.param)


@pytest.fixture
def art_copy(tmp_path, art64) -> Path:
    """A private copy of the 64 px artifact for tests that damage it."""
    dst = tmp_path / "art"
    shutil.copytree(art64.art, dst)
    return dst


@pytest.fixture
def feature_extractor(tmp_path) -> Path:
    """A TorchScript file standing in for Inception (any image size -> 16 features), for --fid."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(3 * 8 * 8, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 8).flatten(1))

    path = tmp_path / "features.pt"
    torch.jit.script(Features()).save(str(path))
    return path


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``fsqdeploy ARGV`` in-process; returns (exit code, stdout, stderr)."""
    from fsqdeploy.cli import main

    def run(*argv: object) -> tuple[int, str, str]:
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def one_line_error():
    """``one_line_error(code, stderr, match)``: exit 2 and exactly one 'fsqdeploy: error:' line."""

    def check(code: int, err: str, match: str) -> None:
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("fsqdeploy: error: ") and match in lines[0], lines[0]

    return check
