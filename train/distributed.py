"""Training on several processes: ``torchrun --nproc-per-node N -m fsqdeploy train ...``.

torchrun starts N copies of the command and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). ``from_env`` joins that
process group (NCCL when each rank has a GPU, gloo on CPUs) and says which rank this is; without
torchrun (no ``WORLD_SIZE``, or 1) it is the single-process run, and nothing here changes anything.

How a distributed run stays the run a single process would make with the whole batch (both
architectures: train/loop.py for ``paper``, train/conv_loop.py for ``conv``):

- ``--batch-size B`` is per process: the effective batch is B x N. Every rank draws the same global
  batch of B x N indices (paper) or crop plans (conv, train/crops.py) from the same seeded generator
  and keeps its slice ``[rank::N]`` (``shard``), so together the ranks see exactly the batches a
  single process with B x N sees. A streamed ``folder:DIR`` decodes only the rank's slice.
- DistributedDataParallel averages the gradients; with equal slices that is the gradient of the
  global batch's mean loss. The learning rate is not scaled: it is the single-process rate for the
  effective batch (the run prints both).
- The FSQ usage statistics (EMA counts and sums, fsqdeploy/fsq.py) are all-reduced inside the
  quantizer's update, so every rank holds the statistics of the global batch (level adaptation
  reads them). BatchNorm normalises each rank's slice on its own unless ``--sync-bn`` converts it
  to SyncBatchNorm (CUDA only in PyTorch: ``check_sync_bn``); its running statistics are averaged
  over the ranks at the end of each epoch (paper) or before each evaluation (conv, for the model and
  its weight average alike), so every rank holds one state there. The conv weight average is of
  parameters DDP keeps identical, so it is identical too. The entropy term of the loss is a
  per-slice statistic. A ``--minutes`` budget runs on rank 0's clock (``from_rank0``), so the
  learning rate and the last step agree on every rank.
- Metrics are summed across ranks; rank 0 alone evaluates (conv) and writes the run directory
  (each file atomically, as a single process does) while the others wait at a barrier, so a
  resumed job reads one state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fsqdeploy.errors import FSQDeployError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def from_env(device: torch.device) -> Dist:
    """Join torchrun's process group (once) and return this rank's place; SINGLE without torchrun."""
    import torch.distributed as dist

    world = world_size()
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return Dist(rank, world, local)


def rank_device(device: torch.device, ctx: Dist) -> torch.device:
    """Each rank's own GPU (``cuda:LOCAL_RANK``) when training on CUDA; the CPU is shared."""
    return torch.device("cuda", ctx.local_rank) if device.type == "cuda" and ctx.active else device


def shard(indices: np.ndarray, ctx: Dist) -> np.ndarray:
    """This rank's slice of a global batch."""
    return indices[ctx.rank :: ctx.world]


def check_divisible(total: int, batch_size: int, ctx: Dist, what: str) -> None:
    """Equal slices keep DDP's gradient mean equal to the global batch's: refuse ragged global batches."""
    if ctx.active and (total % (batch_size * ctx.world)) % ctx.world:
        raise FSQDeployError(f"train: the last global batch of {what} ({total % (batch_size * ctx.world)} images) "
                             f"does not split evenly over {ctx.world} processes. Note: use a --batch-size or "
                             "process count that divides it")


def world_size() -> int:
    """The process count torchrun announced (1 without torchrun), before joining any group."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def check_sync_bn(sync_bn: bool, device: torch.device, world: int) -> None:
    """--sync-bn only where it can act: several processes, each on a GPU. PyTorch 2.13's SyncBatchNorm
    refuses CPU tensors in its forward and DistributedDataParallel refuses it in CPU modules, so gloo
    on CPUs cannot run it."""
    if sync_bn and world <= 1:
        raise FSQDeployError("train: --sync-bn synchronises BatchNorm across torchrun processes and this is one "
                             "process. Note: launch with torchrun --nproc-per-node N, or drop --sync-bn")
    if sync_bn and device.type != "cuda":
        raise FSQDeployError("train: --sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only, not with "
                             "gloo on CPUs). Note: drop --sync-bn on CPUs")


def wrap(model: nn.Module, ctx: Dist, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module the optimizer steps through: DistributedDataParallel when distributed."""
    check_sync_bn(sync_bn, device, ctx.world)
    if not ctx.active:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_sum(values: dict[str, float], ctx: Dist, device: torch.device) -> dict[str, float]:
    """Per-key sums over the ranks (every rank gets them)."""
    if not ctx.active or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def from_rank0(value: float, ctx: Dist, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (a decision all ranks must take alike, e.g. a clock's)."""
    if not ctx.active:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def average_batchnorm_statistics(model: nn.Module, ctx: Dist) -> None:
    """Each rank's BatchNorm running statistics follow its own slices (DDP broadcasts rank 0's
    before each forward, and the forward then updates them locally); their mean over the ranks, at
    the end of every epoch, is the one state every rank evaluates and rank 0 saves."""
    if not ctx.active:
        return
    import torch.distributed as dist

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            for buffer in (module.running_mean, module.running_var):
                dist.all_reduce(buffer)
                buffer.div_(ctx.world)


def barrier(ctx: Dist) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()
