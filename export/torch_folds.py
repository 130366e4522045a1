"""Exact rewrites applied to the PyTorch modules before export (the ONNX-side rewrites live in
fsqdeploy/onnxgraph/rewrites.py).

``fold_batchnorm``: every Conv2d followed by a BatchNorm2d becomes one Conv2d, so the exported
encoder provably holds no BatchNormalization, whatever the exporter version does. A conv encoder
with a linear path normalises a sum, ``BN(deep + linear) = (s * deep + t) + s * linear``: its
BatchNorm goes into the deep path's last convolution (scale and shift) and into the linear path's
(scale only), and the folded encoder adds the two.

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

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.model import ConvEncoder, Decoder


class _FoldedLinearPathEncoder(nn.Module):
    """A conv encoder with a linear path, its latent BatchNorm folded into both paths."""

    def __init__(self, features: nn.Sequential, linear: nn.Conv2d):
        super().__init__()
        self.features, self.linear = features, linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) + self.linear(x)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A deep copy with every Conv2d -> BatchNorm2d pair of every Sequential fused into one Conv2d."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(module).eval()
    if isinstance(folded, ConvEncoder) and folded.linear is not None:
        bn, linear = folded.features[-1], folded.linear
        assert isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        with torch.no_grad():
            linear.weight.mul_(scale.view(-1, 1, 1, 1))
            linear.bias.mul_(scale)  # type: ignore[union-attr]
        # the deep path keeps the BatchNorm after its last convolution: the pass below fuses them
        folded = _FoldedLinearPathEncoder(folded.features, linear).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        layers, fused, i = list(seq), [], 0
        while i < len(layers):
            a, b = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                fused.append(fuse_conv_bn_eval(a, b))
                i += 2
            else:
                fused.append(a)
                i += 1
        for name in list(seq._modules):
            del seq._modules[name]
        for j, layer in enumerate(fused):
            seq.add_module(str(j), layer)
    left = [type(m).__name__ for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise FSQDeployError(f"export: {len(left)} BatchNorm layer(s) do not follow a convolution")
    return folded


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
