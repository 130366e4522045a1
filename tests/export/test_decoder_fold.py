"""The exact module folds applied before export (export/torch_folds.py)."""

import pytest
import torch

from fsqdeploy import FSQVAE
from fsqdeploy.config import ModelConfig
from fsqdeploy.export.onnx_export import export_decoder
from fsqdeploy.export.torch_folds import fold_decoder_head


@pytest.mark.parametrize("size,channels", [(32, (32, 64, 128, 256)), (64, (8, 16, 32, 64)), (16, (8,))])
def test_folded_head_matches_the_decoder(size, channels):
    torch.manual_seed(0)
    model = FSQVAE(ModelConfig(image_size=size, channels=channels, latent_dim=16, levels=[8] * 16)).eval()
    codes = torch.rand(64, 16) * 2 - 1
    with torch.no_grad():
        ref = model.decoder(codes)
        folded = fold_decoder_head(model.decoder)(codes)
    assert folded.shape == ref.shape
    assert (folded - ref).abs().max() < 1e-5


def test_folded_graph_has_one_transposed_convolution_less():
    model = FSQVAE(ModelConfig()).eval()
    ops = [n.op_type for n in export_decoder(model, 18).graph.node]
    assert ops.count("ConvTranspose") == 3 and ops.count("Gemm") == 1
