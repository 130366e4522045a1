"""Training on a streamed folder:DIR: DataLoader workers decode one file at a time, in the order the
batches were planned, so a streamed run is the in-memory run (any worker count, both architectures),
memory holds only the batches in flight, and a corrupt file ends the run in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsqdeploy import data
from fsqdeploy.config import ModelConfig, TrainConfig
from fsqdeploy.train.crops import random_crops, streamed_crops


def photo_folder(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        h, w = 48 + 8 * (i % 3), 56 + 8 * (i % 4)
        blocks = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(np.repeat(np.repeat(blocks, 8, 0), 8, 1)).save(root / f"p{i:03d}.png")
    return root


def test_streamed_crops_are_the_in_memory_crops_for_any_worker_count(tmp_path):
    spec = f"folder:{photo_folder(tmp_path / 'photos', 20)}"
    held, streamed = data.load_photos(spec, 32), data.stream_photos(spec, 32)
    for workers in (0, 2):
        for keep in (slice(None), slice(1, None, 2)):
            got = list(streamed_crops(streamed.train, 6, 32, 5, 2, 6, workers, keep))
            want = [random_crops(held.train, 6, 32, 5, step, keep=keep) for step in range(2, 6)]
            assert len(got) == 4 and all(torch.equal(a, b) for a, b in zip(got, want)), (workers, keep)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_decodes_one_photo_per_crop_and_only_batches_in_flight(tmp_path, monkeypatch, workers):
    spec = f"folder:{photo_folder(tmp_path / 'photos', 40)}"
    log = tmp_path / "decodes.log"
    import fsqdeploy.images

    read = fsqdeploy.images.read_image

    def counting(path, component="compress"):  # the decoding threads call it too
        with open(log, "a") as f:
            f.write(f"{path}\n")
        return read(path, component)

    monkeypatch.setattr(fsqdeploy.images, "read_image", counting)
    photos = data.stream_photos(spec, 32, max_test=1)
    decoded_up_front = len(log.read_text().splitlines())
    assert decoded_up_front == 1  # the one held-out photo: training photos' sizes come from headers
    batches = streamed_crops(photos.train, 2, 32, 0, 0, 100, workers)
    for _ in range(3):
        next(batches)
    decodes = len(log.read_text().splitlines()) - decoded_up_front
    # at most 2 batches per worker in flight: 3 consumed + 2 x workers, 2 crops each
    assert 3 * 2 <= decodes <= (3 + 2 * workers) * 2 < len(photos.train)
    del batches


def _paper(spec, out, workers, splits=None):
    from fsqdeploy.train.loop import train

    cfg = TrainConfig(data=spec, epochs=2, batch_size=8, seed=2, device="cpu", entropy_weight=0.0, workers=workers)
    small = ModelConfig(channels=(8, 16, 32, 64), latent_dim=16, levels=[8] * 16)
    return train(small, cfg, out, splits=splits, stop_after_epoch=1)


def test_paper_on_a_streamed_folder_trains_what_the_in_memory_folder_trains(tmp_path):
    torch.set_num_threads(1)
    spec = f"folder:{photo_folder(tmp_path / 'photos', 30)}"
    runs, psnr = {}, {}
    for name, workers, splits in (("memory", 0, data.load_images(spec, 32)), ("w0", 0, None), ("w2", 2, None)):
        runs[name] = _paper(spec, tmp_path / "runs" / name, workers, splits).state_dict()
        psnr[name] = json.loads((tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()[0])["test_psnr"]
    for name in ("w0", "w2"):
        assert psnr[name] == psnr["memory"]
        for k, v in runs["memory"].items():
            assert torch.equal(v, runs[name][k]), (name, k)


def test_conv_on_a_streamed_folder_trains_what_the_in_memory_folder_trains(tmp_path):
    from test_conv_train import TINY_RUN, conv_cfg

    from fsqdeploy.train.conv_loop import train_conv

    torch.set_num_threads(1)
    spec = f"folder:{photo_folder(tmp_path / 'photos', 20)}"
    cfg = dict(TINY_RUN, data=spec, steps=4, eval_every=2, device="cpu")
    states = {}
    for name, workers, photos in (("memory", 0, data.load_photos(spec, 32)), ("w0", 0, None), ("w2", 2, None)):
        out = tmp_path / "runs" / name
        train_conv(conv_cfg(), TrainConfig(**cfg, workers=workers), out, photos=photos, device=torch.device("cpu"))
        states[name] = torch.load(out / "trainer_state.pt", weights_only=True)
        assert json.loads((out / "config.json").read_text())["training"]["data"] == spec
    for name in ("w0", "w2"):
        for part in ("model", "averaged"):
            for k, v in states["memory"][part].items():
                assert torch.equal(v, states[name][part][k]), (name, part, k)
        assert states[name]["history"][-1]["test_psnr"] == states["memory"]["history"][-1]["test_psnr"]


def test_a_corrupt_training_file_ends_the_run_in_one_line(tmp_path):
    from test_cli import assert_one_line_error, fsqdeploy  # tests/train is on sys.path

    folder = photo_folder(tmp_path / "photos", 10)
    train_files, _ = data.folder_split(folder)
    victim = train_files[0]
    victim.write_bytes(victim.read_bytes()[:200])  # the header survives, the pixels do not
    r = fsqdeploy("train", "--arch", "paper", "--data", f"folder:{folder}", "--epochs", "1", "--batch-size", "4",
                  "--channels", "8,16,32,64", "--latent-dim", "16", "--workers", "2", "--out", tmp_path / "run",
                  "--device", "cpu")
    assert_one_line_error(r, f"cannot read image '{victim}'")
    assert "continue the run with --resume" in r.stderr
