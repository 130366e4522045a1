"""Finite scalar quantization (FSQ) with temperature, per-dimension levels and residual stages.

Each latent dimension d is bounded to a small range and rounded to one of ``levels[d]`` integers.
The integer *index* of dimension d lies in [0, L_d); the *code* is the rounded value divided by
``half_width = L_d // 2``, so codes lie in [-1, 1] and are what the decoder sees.

Where this module departs from the seed paper ("Finite Scalar Quantization for Image Compression"),
and why; each departure is pinned by a test in tests/test_fsq.py that shows the paper's form fails:

1. The bound (paper eq. 6). The paper writes ``zb = floor(L/2) * tanh(z / T)``. For odd L that
   spans (-(L-1)/2, (L-1)/2) and rounds to L integers, but for even L it spans (-L/2, L/2) and
   rounds to L + 1 integers, one more than an index in [0, L) can hold. We use the bound of
   Mentzer et al. (2023) instead::

       half_l = (L - 1) * (1 + eps) / 2      offset = 0.5 if L is even else 0
       shift  = atanh(offset / half_l)       zb = tanh(z / T + shift) * half_l - offset

   which rounds to exactly the L integers -floor(L/2) .. ceil(L/2) - 1. The two public references
   differ here: vector-quantize-pytorch uses ``1 + eps`` with ``atanh``, google-research's notebook
   ``1 - eps`` with ``tan``. We take ``1 + eps`` with ``atanh`` on purpose: it makes the shift exact,
   so bound(0) == 0 for every L (the tan form is only approximately centred). eps = 1e-3.

2. The straight-through estimator (paper eq. 7). The paper writes
   ``round(zb / T) * T + (z - zb).detach()``: both terms are constants to autograd, so no gradient
   ever reaches the encoder. We use ``zb + (round(zb) - zb).detach()``: the forward value is
   round(zb), the backward pass is the identity. The temperature is applied once, inside the bound.

3. Inference decides by thresholds. ``round(bound(z))`` is a monotone step function of z, so it
   equals the number of decision thresholds ``t_k = T * (atanh((k + 1/2 + offset) / half_l) - shift)``
   that z reaches. The thresholds are computed once in float64 and rounded to float32; at inference
   (``module.eval()``, ``encode``, every exported graph) the index is ``sum_k [z >= t_k]``. Comparisons
   are exact in every IEEE runtime, whereas ``tanh`` differs by an ulp or two between PyTorch,
   ONNX Runtime and TensorRT, which would flip indices of values near a boundary. Training keeps the
   differentiable tanh + round form; the two agree except within a few ulps of a threshold.

4. Residual stages (paper section 3.6 gives no equations). Stage k + 1 quantizes the residual of
   stage k in latent space: ``u_{k+1} = (u_k - centre_k[index_k]) * L_k``, where ``centre_k`` is the
   latent value whose bound is exactly the chosen integer (a table computed in float64, so the
   exported graph reproduces it with a Gather and a Sub). The decoder sees the learned-weight sum of
   the stages' codes; the indices are the concatenation of the stages' indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fsqdeploy.errors import FSQDeployError

EPS = 1e-3
MAX_LEVEL = 65535


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def parse_levels(spec: str | Sequence[int], width: int) -> list[int]:
    """Expand a levels pattern to ``width`` entries: "8" -> [8]*width, "8,5,5,5" repeated.

    The pattern's length must divide ``width``; every level must be an integer in [2, 65535].
    """
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
        try:
            pattern = [int(p) for p in parts]
        except ValueError:
            raise FSQDeployError(
                f"levels: {spec!r} is not a comma-separated list of integers. Note: e.g. --levels 8 or 8,5,5,5"
            ) from None
    else:
        pattern = [int(v) for v in spec]
    if not pattern:
        raise FSQDeployError("levels: the list is empty. Note: e.g. --levels 8 or 8,5,5,5")
    bad = [v for v in pattern if not 2 <= v <= MAX_LEVEL]
    if bad:
        raise FSQDeployError(f"levels: {bad[0]} is out of range; each level must be in [2, {MAX_LEVEL}]")
    if width % len(pattern):
        raise FSQDeployError(
            f"levels: a pattern of {len(pattern)} levels does not divide the latent size {width}. "
            "Note: give 1 level, a pattern whose length divides it, or one level per dimension"
        )
    return pattern * (width // len(pattern))


def _bound_constants(levels: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """half_l, offset and shift of the bound for each dimension, in float64."""
    levels = levels.astype(np.float64)
    half_l = (levels - 1.0) * (1.0 + eps) / 2.0
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    return half_l, offset, shift


def decision_thresholds(levels: Sequence[int], temperature: float, eps: float = EPS) -> np.ndarray:
    """Float32 thresholds [D, max(L) - 1]; row d holds the L_d - 1 values of z where the index steps up.

    Rows of dimensions with fewer levels are padded with +inf, which no finite z reaches.
    """
    lv = np.asarray(levels, dtype=np.int64)
    half_l, offset, shift = _bound_constants(lv, eps)
    width = int(lv.max()) - 1
    out = np.full((len(lv), width), np.inf, dtype=np.float64)
    for d, L in enumerate(lv):
        k = np.arange(L - 1, dtype=np.float64) - (L // 2)  # the lower integer of each step
        out[d, : L - 1] = temperature * (np.arctanh((k + 0.5 + offset[d]) / half_l[d]) - shift[d])
    return out.astype(np.float32)


def level_centres(levels: Sequence[int], temperature: float, eps: float = EPS) -> np.ndarray:
    """Float32 table [D, max(L)]: the latent z whose bound is exactly the integer of each index."""
    lv = np.asarray(levels, dtype=np.int64)
    half_l, offset, shift = _bound_constants(lv, eps)
    out = np.zeros((len(lv), int(lv.max())), dtype=np.float64)
    for d, L in enumerate(lv):
        integers = np.arange(L, dtype=np.float64) - (L // 2)
        out[d, :L] = temperature * (np.arctanh((integers + offset[d]) / half_l[d]) - shift[d])
    return out.astype(np.float32)


@dataclass
class FSQOutput:
    codes: torch.Tensor  # [N, D] float in [-1, 1]; straight-through in training
    indices: torch.Tensor  # [N, D] int64 in [0, L_d)
    bounded: torch.Tensor  # [N, D] float, before rounding (zero-gradient copy at inference)


class FSQ(nn.Module):
    """One FSQ stage over ``len(levels)`` dimensions, with EMA usage statistics (paper eqs. 8-10)."""

    def __init__(self, levels: Sequence[int], eps: float = EPS, ema_decay: float = 0.99):
        super().__init__()
        self.eps = eps
        self.ema_decay = ema_decay
        lv = torch.tensor(list(levels), dtype=torch.int64)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("half_width", (lv // 2).to(torch.float32), persistent=False)
        # The temperature is state: the trainer anneals it and inference uses its final value.
        self.register_buffer("temperature", torch.tensor(1.0))
        # EMA statistics per dimension and level: counts N (eq. 8) and sums of bounded values m
        # (eq. 9); their ratio e (eq. 10) is the mean latent that lands on each level.
        width = int(lv.max())
        self.register_buffer("ema_counts", torch.zeros(len(lv), width))
        self.register_buffer("ema_sums", torch.zeros(len(lv), width))
        self._tables: dict[tuple[float, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        return int(self.levels.numel())

    @property
    def codebook_size(self) -> int:
        """Number of distinct index vectors, prod L_d (an exact Python int; it can be huge)."""
        return math.prod(int(v) for v in self.levels.tolist())

    def level_list(self) -> list[int]:
        return [int(v) for v in self.levels.tolist()]

    def set_levels(self, levels: Sequence[int]) -> None:
        """Replace the levels (adaptive quantization); the EMA statistics restart from zero."""
        if len(levels) != self.dim:
            raise FSQDeployError(f"quantizer: expected {self.dim} levels, got {len(levels)}")
        device = self.levels.device
        lv = torch.tensor(list(levels), dtype=torch.int64, device=device)
        self.levels = lv
        self.half_width = (lv // 2).to(torch.float32)
        self.ema_counts = torch.zeros(len(lv), int(lv.max()), device=device)
        self.ema_sums = torch.zeros_like(self.ema_counts)
        self._tables = {}

    def _bound_params(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        half_l, offset, shift = _bound_constants(self.levels.cpu().numpy(), self.eps)
        as_t = lambda a: torch.as_tensor(a, dtype=like.dtype, device=like.device)  # noqa: E731
        return as_t(half_l), as_t(offset), as_t(shift)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Map z to the open interval whose rounding gives exactly L_d integers (departure 1)."""
        half_l, offset, shift = self._bound_params(z)
        return torch.tanh(z / self.temperature + shift) * half_l - offset

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(thresholds [D, Lmax-1], centres [D, Lmax]) for the current temperature, cached."""
        key = (float(self.temperature), str(device))
        if key not in self._tables:
            levels, t = self.level_list(), float(self.temperature)
            self._tables = {
                key: (
                    torch.from_numpy(decision_thresholds(levels, t, self.eps)).to(device),
                    torch.from_numpy(level_centres(levels, t, self.eps)).to(device),
                )
            }
        return self._tables[key]

    def indices_from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Inference indices: how many decision thresholds z reaches (departure 3). Exact in FP32."""
        thresholds, _ = self.tables(z.device)
        return (z.float().unsqueeze(-1) >= thresholds).sum(-1)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.round(codes * self.half_width + self.half_width).to(torch.int64)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        return (indices.to(torch.float32) - self.half_width) / self.half_width

    def centres(self, indices: torch.Tensor) -> torch.Tensor:
        """The latent value of each chosen level (used for the residual of the next stage)."""
        _, centres = self.tables(indices.device)
        return torch.gather(centres.expand(indices.shape[0], -1, -1), 2, indices.unsqueeze(-1)).squeeze(-1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Straight-through codes in [-1, 1] (departure 2)."""
        return round_ste(self.bound(z)) / self.half_width

    def forward(self, z: torch.Tensor) -> FSQOutput:
        if self.training:
            bounded = self.bound(z)
            rounded = round_ste(bounded)
            indices = (rounded.detach() + self.half_width).to(torch.int64)
            self._update_ema(indices, bounded.detach())
            return FSQOutput(rounded / self.half_width, indices, bounded)
        indices = self.indices_from_latent(z)
        return FSQOutput(self.indices_to_codes(indices), indices, self.bound(z).detach())

    @torch.no_grad()
    def _update_ema(self, indices: torch.Tensor, bounded: torch.Tensor) -> None:
        width = self.ema_counts.shape[1]
        onehot = torch.nn.functional.one_hot(indices, width).to(bounded.dtype)  # [N, D, Lmax]
        counts = onehot.sum(0)
        sums = (onehot * bounded.unsqueeze(-1)).sum(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # A distributed run (train/distributed.py): every rank adds the global batch's statistics,
            # so all ranks hold one state, the one a single process with the whole batch would.
            both = torch.stack([counts, sums])
            torch.distributed.all_reduce(both)
            counts, sums = both[0], both[1]
        g = self.ema_decay
        self.ema_counts.mul_(g).add_(counts, alpha=1 - g)
        self.ema_sums.mul_(g).add_(sums, alpha=1 - g)

    def ema_level_means(self) -> torch.Tensor:
        """Eq. 10: the mean bounded value that landed on each level."""
        return self.ema_sums / (self.ema_counts + 1e-6)


class ResidualFSQ(nn.Module):
    """K FSQ stages on residuals with learned importance weights (paper 3.6; departure 4)."""

    def __init__(self, levels: Sequence[int], stages: int = 1, eps: float = EPS, ema_decay: float = 0.99):
        super().__init__()
        levels = list(levels)
        if stages < 1 or len(levels) % stages:
            raise FSQDeployError(f"quantizer: {len(levels)} levels cannot be split into {stages} stages")
        width = len(levels) // stages
        self.stages = nn.ModuleList(
            FSQ(levels[k * width : (k + 1) * width], eps, ema_decay) for k in range(stages)
        )
        self.stage_weights = nn.Parameter(torch.ones(stages))

    @property
    def latent_dim(self) -> int:
        return self.stages[0].dim

    @property
    def code_width(self) -> int:
        return sum(s.dim for s in self.stages)

    def level_list(self) -> list[int]:
        return [v for s in self.stages for v in s.level_list()]

    @property
    def temperature(self) -> float:
        return float(self.stages[0].temperature)

    def set_temperature(self, t: float) -> None:
        for s in self.stages:
            s.temperature.fill_(t)

    def residual_gain(self, k: int) -> torch.Tensor:
        """Stage k+1's input is stage k's residual times L_k, so it spans the next stage's range."""
        return self.stages[k].levels.to(torch.float32)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, list[FSQOutput]]:
        """Return the decoder input (weighted sum of stage codes) and each stage's output."""
        u, outputs = z, []
        mixed = torch.zeros_like(z)
        for k, stage in enumerate(self.stages):
            out = stage(u)
            outputs.append(out)
            mixed = mixed + self.stage_weights[k] * out.codes
            if k + 1 < len(self.stages):
                u = (u - stage.centres(out.indices)) * self.residual_gain(k)
        return mixed, outputs

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Inference: concatenated int64 indices [N, K*D], decided by thresholds."""
        u, parts = z, []
        for k, stage in enumerate(self.stages):
            idx = stage.indices_from_latent(u)
            parts.append(idx)
            if k + 1 < len(self.stages):
                u = (u - stage.centres(idx)) * self.residual_gain(k)
        return torch.cat(parts, dim=1)

    def indices_to_decoder_input(self, indices: torch.Tensor) -> torch.Tensor:
        """Inverse of ``indices`` up to quantization: the decoder input for [N, K*D] indices."""
        width = self.latent_dim
        mixed = None
        for k, stage in enumerate(self.stages):
            codes = stage.indices_to_codes(indices[:, k * width : (k + 1) * width])
            term = self.stage_weights[k] * codes
            mixed = term if mixed is None else mixed + term
        return mixed
