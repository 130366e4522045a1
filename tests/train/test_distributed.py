"""Distributed training (train/distributed.py) with gloo on 2 CPU processes: both ranks hold the same
weights, 2 processes at batch B train what 1 process at batch 2B trains (a model without BatchNorm,
whose per-rank statistics differ by design), the FSQ statistics are the global batch's on every
rank, only rank 0 writes, and a killed job resumes to the uninterrupted result; the same for the
conv architecture (its weight average included); --sync-bn is refused where it cannot run."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

SMALL = dict(channels=(8, 16, 32, 64), latent_dim=16, levels=[8] * 16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, kwargs: dict, no_batchnorm: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if no_batchnorm:
        torch.nn.BatchNorm2d = lambda c: torch.nn.Identity()  # type: ignore[assignment,misc]
    from fsqdeploy.config import ModelConfig, TrainConfig
    from fsqdeploy.data import ImageSplits, load_images
    from fsqdeploy.train.loop import train

    s = load_images("sample", 32)
    splits = ImageSplits(s.train[:128], s.test[:32], s.source)
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 16, "seed": 1, "entropy_weight": 0.0, "device": "cpu",
                         **kwargs.pop("cfg", {})})
    model = train(ModelConfig(**SMALL), cfg, out, splits=splits, **kwargs)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    digest = hashlib.sha256(b"".join(state[k].tobytes() for k in sorted(state))).hexdigest()
    np.savez(Path(out) / f"rank{rank}_of{world}.npz", **state)
    (Path(out) / f"rank{rank}_of{world}.sha").write_text(digest)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def run(world: int, out: Path, no_batchnorm: bool = False, **kwargs) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if world == 1:
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_worker, args=(0, 1, 0, str(out), kwargs, no_batchnorm))
        p.start()
        p.join(300)
        assert p.exitcode == 0
        return
    mp.spawn(_worker, args=(world, _free_port(), str(out), kwargs, no_batchnorm), nprocs=world, join=True)


def weights(out: Path, rank: int, world: int) -> dict[str, np.ndarray]:
    return dict(np.load(out / f"rank{rank}_of{world}.npz"))


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "two"
    run(2, out)
    return out


# With stop_after_epoch, train() returns the rank's own model in memory (not the checkpoint rank 0
# wrote), so what each rank computed is compared.
IN_MEMORY = dict(cfg={"epochs": 3}, stop_after_epoch=2)


def test_both_ranks_hold_the_same_weights_and_statistics(tmp_path):
    out = tmp_path / "ranks"
    run(2, out, **IN_MEMORY)
    assert (out / "rank0_of2.sha").read_text() == (out / "rank1_of2.sha").read_text()
    a, b = weights(out, 0, 2), weights(out, 1, 2)
    assert any("ema_counts" in k for k in a)
    for k in a:  # ema_counts / ema_sums: the global batch's, on both
        assert np.array_equal(a[k], b[k]), k


def test_rank0_alone_writes_and_says_how_it_ran(two):
    lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert lines[-1]["processes"] == 2 and lines[-1]["effective_batch_size"] == 32
    assert not list(two.glob("*.tmp")) and (two / "trainer_state.pt").is_file()
    config = json.loads((two / "config.json").read_text())
    assert config["training"]["batch_size"] == 16  # per process, as given


def test_two_processes_at_b_train_what_one_process_at_2b_trains(tmp_path):
    run(2, tmp_path / "two", no_batchnorm=True, **IN_MEMORY)
    run(1, tmp_path / "one", no_batchnorm=True, cfg={"epochs": 3, "batch_size": 32}, stop_after_epoch=2)
    two, one = weights(tmp_path / "two", 0, 2), weights(tmp_path / "one", 0, 1)
    assert set(two) == set(one)
    for k in one:
        assert np.allclose(two[k], one[k], rtol=1e-4, atol=1e-5), (k, np.abs(two[k] - one[k]).max())


def test_a_killed_job_resumes_to_the_uninterrupted_result(two, tmp_path):
    cut = tmp_path / "cut"
    run(2, cut, stop_after_epoch=1)  # the whole job stops after epoch 1
    assert json.loads((cut / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    run(2, cut, resume=True)
    assert (cut / "model.safetensors").read_bytes() == (two / "model.safetensors").read_bytes()


def test_ragged_global_batches_are_refused(tmp_path):
    from fsqdeploy.errors import FSQDeployError
    from fsqdeploy.train.distributed import Dist, check_divisible

    check_divisible(128, 16, Dist(0, 2, 0), "x")  # 4 full global batches
    check_divisible(130, 16, Dist(0, 2, 0), "x")  # a last batch of 2: one image each
    with pytest.raises(FSQDeployError, match="does not split evenly over 2 processes"):
        check_divisible(129, 16, Dist(0, 2, 0), "x")


# --- the conv architecture ------------------------------------------------------------------------------

def _conv_worker(rank: int, world: int, port: int, out: str, kwargs: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from test_conv_train import TINY_RUN, conv_cfg, tiny_photos  # tests/train is on sys.path

    from fsqdeploy.config import TrainConfig
    from fsqdeploy.train import conv_loop

    averages = []  # the weight average each rank builds, to compare it across ranks
    build = conv_loop._weight_average
    conv_loop._weight_average = lambda model: averages.append(build(model)) or averages[-1]
    cfg = TrainConfig(**{**TINY_RUN, "steps": 6, "eval_every": 3, "seed": 1, "device": "cpu", **kwargs.pop("cfg", {})})
    model = conv_loop.train_conv(conv_cfg(), cfg, out, photos=tiny_photos(), device=torch.device("cpu"), **kwargs)
    states = {"model": model.state_dict(), "average": averages[0].module.state_dict()}
    np.savez(Path(out) / f"conv{rank}_of{world}.npz",
             **{f"{kind}/{k}": v.detach().numpy() for kind, state in states.items() for k, v in state.items()})
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def run_conv(world: int, out: Path, **kwargs) -> None:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_conv_worker, args=(world, _free_port(), str(out), kwargs), nprocs=world, join=True)


@pytest.fixture(scope="module")
def conv_two(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_conv") / "two"
    run_conv(2, out)
    return out


def test_conv_ranks_hold_the_same_weights_weight_average_and_statistics(tmp_path):
    out = tmp_path / "ranks"
    run_conv(2, out, stop_after_step=3)  # the rank's own model and average, after the evaluation at step 3
    a, b = dict(np.load(out / "conv0_of2.npz")), dict(np.load(out / "conv1_of2.npz"))
    assert set(a) == set(b) and any(k.startswith("average/") for k in a)
    assert any("ema_counts" in k for k in a) and any("running_var" in k for k in a)
    for k in a:  # parameters, BatchNorm statistics (averaged), FSQ statistics (all-reduced), the average
        assert np.array_equal(a[k], b[k]), k
    from test_conv_train import conv_cfg

    from fsqdeploy import FSQVAE

    torch.manual_seed(1)
    initial = FSQVAE(conv_cfg()).state_dict()
    moved = [k for k, v in initial.items() if v.is_floating_point() and not np.allclose(a[f"model/{k}"], v.numpy())]
    assert moved, "no weight changed in 3 steps"


def test_conv_rank0_alone_writes_and_reports_the_effective_batch(conv_two):
    lines = [json.loads(x) for x in (conv_two / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [3, 6]
    assert all(m["processes"] == 2 and m["effective_batch_size"] == 8 for m in lines)
    assert not list(conv_two.glob("*.tmp")) and (conv_two / "trainer_state.pt").is_file()
    assert json.loads((conv_two / "config.json").read_text())["training"]["batch_size"] == 4  # per process


def test_conv_killed_job_resumes_to_the_uninterrupted_result(conv_two, tmp_path):
    cut = tmp_path / "cut"
    run_conv(2, cut, stop_after_step=3)
    assert [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [3]
    run_conv(2, cut, resume=True)
    assert (cut / "model.safetensors").read_bytes() == (conv_two / "model.safetensors").read_bytes()
    whole = torch.load(conv_two / "trainer_state.pt", weights_only=True)
    resumed = torch.load(cut / "trainer_state.pt", weights_only=True)
    for part in ("model", "averaged"):
        for k in whole[part]:
            assert torch.equal(whole[part][k], resumed[part][k]), (part, k)


@pytest.mark.parametrize("env, message", [
    ({}, "this is one process"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "--sync-bn needs CUDA"),
])
def test_sync_bn_is_refused_where_it_cannot_run_in_one_line(tmp_path, env, message):
    env = {**os.environ, **env, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "fsqdeploy", "train", "--out", str(tmp_path / "r"), "--steps", "1",
                           "--device", "cpu", "--sync-bn"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
