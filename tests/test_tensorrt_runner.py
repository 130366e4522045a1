"""TensorRTRunner's hot path (``_slot``, ``run_batch``, ``infer_torch``, ``_infer``) driven on a CPU
against the strict stand-in tensorrt (tests/trt_standin.py) and a stand-in for the torch.cuda calls
the runner makes: its buffers are CPU tensors there, the stand-in's execution contexts read the
input through the bound address and write ``expected_output`` of it to the output's address, and
CUDA graphs record launches and replay them. What this proves is the runner's side: shapes,
addresses and contexts per batch size, chunks and padding, capture only on a repeated size,
eviction, stream order and the failure branches; the engines themselves run only on a GPU
(tests/export/test_tensorrt.py, marked ``gpu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from trt_standin import FakeCuda, StandIn, expected_output, write_engine

from fsqdeploy.backends.tensorrt import TensorRTRunner
from fsqdeploy.errors import FSQDeployError

IN_ROW, OUT_ROW = (3, 4, 4), (6,)


@dataclass
class Setup:
    trt: StandIn
    cuda: FakeCuda
    engine: Path


@pytest.fixture
def make_engine(tmp_path, fake_trt, fake_cuda):
    """``make_engine(profile=(1, 2, 4), **behaviour)``: an encoder-shaped stand-in engine, images
    (N, 3, 4, 4) float32 -> indices (N, 6) int32, with its sidecar; the runner's CUDA is stand-in."""

    def make(profile=(1, 2, 4), *, capture_fails=False, version_compatible=False, sidecar=None, **behaviour):
        trt = fake_trt(**behaviour)
        trt.cuda = fake_cuda(capture_fails=capture_fails)
        plan = trt.plan({"images": ("FLOAT", [-1, *IN_ROW])}, {"indices": ("INT32", [-1, *OUT_ROW])}, profile,
                        version_compatible=version_compatible, device_memory=3 << 20)
        engine = write_engine(tmp_path / "encoder.fp32.plan", plan, trt.facts, **(sidecar or {}))
        return Setup(trt, trt.cuda, engine)

    return make


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((n, *IN_ROW), dtype=np.float32))


def _want(x: torch.Tensor) -> np.ndarray:
    return expected_output(x.numpy(), OUT_ROW, np.int32)


def _batches(trt: StandIn) -> list[int]:
    return [batch for _, _, batch in trt.launches]


def test_activation_reads_the_engine(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine) as runner:
        assert (runner.input_name, runner.output_name) == ("images", "indices")
        assert (runner.min_batch, runner.max_batch) == (1, 4)
        assert runner.input_shape == (-1, *IN_ROW) and runner.output_shape == (-1, *OUT_ROW)
        assert runner.dtypes == {"images": torch.float32, "indices": torch.int32}
        assert runner.context_memory_bytes == 3 << 20 and runner.contexts == 0  # contexts come with batches
    assert runner.engine is None and runner.contexts == 0


def test_one_context_and_static_buffers_per_batch_size_with_cuda_graphs(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine) as runner:
        x3, x2 = _images(3), _images(2, seed=1)
        assert np.array_equal(runner.infer_torch(x3).numpy(), _want(x3))
        assert np.array_equal(runner.infer_torch(x2).numpy(), _want(x2))
        assert list(runner._slots) == [3, 2] and len(s.trt.contexts) == 2 == runner.contexts
        for batch, slot in runner._slots.items():
            assert slot.context._shapes == {"images": [batch, *IN_ROW]}
            assert slot.input.shape == (batch, *IN_ROW) and slot.output.shape == (batch, *OUT_ROW)
            assert slot.context._addresses == {"images": slot.input.data_ptr(), "indices": slot.output.data_ptr()}
        assert runner._slot(3) is runner._slots[3] and list(runner._slots) == [2, 3]  # most recent last


def test_without_cuda_graphs_one_context_serves_the_profile(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine, use_cuda_graphs=False) as runner:
        for seed, n in enumerate([3, 1, 4, 2, 4]):
            x = _images(n, seed)
            assert np.array_equal(runner.infer_torch(x).numpy(), _want(x)), n
        assert len(s.trt.contexts) == 1 == runner.contexts and runner.graph_replays == 0
        (slot,) = runner._slots.values()
        assert len(slot.input) == 4 and len(slot.output) == 4  # grown to the largest batch, kept
        assert slot.context._shapes == {"images": [4, *IN_ROW]}
        assert slot.context._addresses == {"images": slot.input.data_ptr(), "indices": slot.output.data_ptr()}
        assert _batches(s.trt) == [3, 1, 4, 2, 4] and all(c is slot.context for c, _, _ in s.trt.launches)


def test_batches_above_the_profile_run_in_chunks(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine, use_cuda_graphs=False) as runner:
        x = _images(10)
        assert np.array_equal(runner.infer_torch(x).numpy(), _want(x))
        assert _batches(s.trt) == [4, 4, 2]
        with pytest.raises(FSQDeployError, match="batch 5 is outside the engine profile 1..4 of 'encoder.fp32.plan'"):
            runner.run_batch(_images(5))


def test_batches_below_the_profile_are_padded(make_engine):
    s = make_engine(profile=(2, 2, 4))
    with TensorRTRunner(s.engine) as runner:
        x1, x5 = _images(1), _images(5, seed=1)
        assert np.array_equal(runner.infer_torch(x1).numpy(), _want(x1))
        assert np.array_equal(runner.infer_torch(x5).numpy(), _want(x5))  # 4, then 1 padded to 2
        assert _batches(s.trt) == [2, 4, 2]
        assert runner.infer_torch(_images(0)).shape == (0, *OUT_ROW) and len(s.trt.launches) == 3
        with pytest.raises(FSQDeployError, match="batch 1 is outside the engine profile 2..4"):
            runner.run_batch(x1)


def test_a_cuda_graph_is_captured_only_when_a_size_repeats(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine) as runner:
        outs = []
        for seed in range(4):  # batch 3, four times, new images each time
            x = _images(3, seed)
            outs.append(np.array_equal(runner.infer_torch(x).numpy(), _want(x)))
        x2 = _images(2, seed=9)
        assert np.array_equal(runner.infer_torch(x2).numpy(), _want(x2))
        assert all(outs) and runner.captured_batch_sizes == [3] and runner.graph_replays == 3
        kinds = [e[0] for e in s.cuda.events if e[0] != "wait"]
        # 1st: direct; 2nd: warm capture (recorded, not run) then replay; 3rd, 4th: replay; batch 2: direct
        assert kinds == ["launch", "capture", "captured", "replay", "replay", "replay", "launch"]
        assert all(e[1] == runner.stream.cuda_stream for e in s.cuda.events if e[0] != "wait")


def test_a_failed_capture_runs_directly_from_then_on(make_engine):
    s = make_engine(capture_fails=True)
    with TensorRTRunner(s.engine) as runner:
        for seed in range(3):
            x = _images(3, seed)
            assert np.array_equal(runner.infer_torch(x).numpy(), _want(x))
        assert runner._slots[3].capture_failed and runner.captured_batch_sizes == [] and runner.graph_replays == 0
        assert [e[0] for e in s.cuda.events if e[0] != "wait"] == ["launch", "capture", "captured", "launch", "launch"]


def test_the_least_recent_batch_size_is_evicted(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine) as runner:
        runner.max_shapes = 2
        for n in (1, 2, 3):
            runner.infer_torch(_images(n))
        assert list(runner._slots) == [2, 3] and runner.contexts == 2 and len(s.trt.contexts) == 3
        x = _images(1, seed=5)
        assert np.array_equal(runner.infer_torch(x).numpy(), _want(x))
        assert list(runner._slots) == [3, 1] and len(s.trt.contexts) == 4  # size 1 came back with a new context
        assert runner._slots[1].context is s.trt.contexts[-1]


def test_the_engine_runs_on_the_runner_stream_between_two_waits(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine, use_cuda_graphs=False) as runner:
        runner.run_batch(_images(2))
        mine, caller = runner.stream.cuda_stream, s.cuda.default.cuda_stream
        assert mine != caller
        assert s.cuda.events == [("wait", mine, caller), ("launch", mine, 0, 2), ("wait", caller, mine)]


def test_infer_maps_numpy_feeds(make_engine):
    s = make_engine()
    with TensorRTRunner(s.engine) as runner:
        x = _images(6)
        out = runner.infer({"images": x.numpy()})
        assert set(out) == {"indices"} and out["indices"].dtype == np.int32
        assert np.array_equal(out["indices"], _want(x)) and runner.last_inference_time is not None
        with pytest.raises(FSQDeployError, match="expects input 'images'"):
            runner.infer({"latent": x.numpy()})


def test_a_failed_launch_is_one_line(make_engine):
    s = make_engine(execute_fails=True)
    with TensorRTRunner(s.engine) as runner:
        for _ in range(2):  # direct, then through the failed capture
            with pytest.raises(FSQDeployError, match="tensorrt: execute_async_v3 failed for 'encoder.fp32.plan'$"):
                runner.infer_torch(_images(2))
    assert any("illegal memory access" in msg for _, msg in s.trt.log)


def test_version_compatible_engines_load_with_host_code_allowed(make_engine):
    """TensorRT deserializes a version-compatible plan only where engine_host_code_allowed is set
    (the stand-in refuses it otherwise); the runner sets it from the sidecar."""
    s = make_engine(version_compatible=True, sidecar={"version_compatible": True})
    with TensorRTRunner(s.engine) as runner:
        x = _images(2)
        assert runner.runtime.engine_host_code_allowed is True
        assert np.array_equal(runner.infer_torch(x).numpy(), _want(x))
    lying = make_engine(version_compatible=True, sidecar={"version_compatible": False})
    with pytest.raises(FSQDeployError, match="tensorrt: could not load '.*encoder.fp32.plan'. Note: rebuild it"):
        TensorRTRunner(lying.engine).activate()
    assert "engine_host_code_allowed is False" in lying.trt.log[-1][1]


def test_an_engine_that_does_not_load_is_one_line(make_engine):
    s = make_engine(deserialize_fails=True)
    with pytest.raises(FSQDeployError, match="could not load .* rebuild it with fsqdeploy export"):
        TensorRTRunner(s.engine).activate()
