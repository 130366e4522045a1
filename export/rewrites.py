"""Exact rewrites applied to the PyTorch modules before export.

``fold_decoder_head``: the decoder's Linear and its first ConvTranspose2d have no nonlinearity
between them, so together they are one affine map from the D-dim code to the first feature map.
One Gemm replaces both: for the paper's shape it is 64 x 2048 multiply-adds per image instead of
64 x 1024 + 2.1 M, and ONNX Runtime's ConvTranspose kernel, the slowest op of the exported decoder,
has one layer less to run (benchmarks/backends.py measures the effect). The map is read off the
original layers in float64, so the folded graph matches the original to float32 rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fsqdeploy.model import Decoder


class FoldedDecoder(nn.Module):
    def __init__(self, decoder: Decoder):
        super().__init__()
        fc, first = copy.deepcopy(decoder.fc).double(), copy.deepcopy(decoder.deconv[0]).double()
        if not isinstance(first, nn.ConvTranspose2d):
            raise TypeError("the decoder must start with a ConvTranspose2d after its Linear")
        hidden, side = decoder.hidden, decoder.side
        dim = fc.in_features
        with torch.no_grad():

            def head(v: torch.Tensor) -> torch.Tensor:
                return first(fc(v).view(-1, hidden, side, side))

            bias = head(torch.zeros(1, dim, dtype=torch.float64))
            weight = (head(torch.eye(dim, dtype=torch.float64)) - bias).flatten(1)  # [D, C*H*W]
        self.out_shape = tuple(bias.shape[1:])
        self.head = nn.Linear(dim, weight.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(weight.T.float())
            self.head.bias.copy_(bias.flatten().float())
        self.rest = copy.deepcopy(decoder.deconv[1:])

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.rest(self.head(codes).view(-1, *self.out_shape))


def fold_decoder_head(decoder: Decoder) -> nn.Module:
    return FoldedDecoder(decoder).eval()
