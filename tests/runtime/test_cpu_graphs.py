"""The graphs each CPU runtime is handed: which rewrites apply, and that they change nothing else."""

import numpy as np
import onnx

from fsqdeploy.backends.cpu_graphs import for_onnxruntime, for_openvino
from fsqdeploy.backends.onnxruntime import ort_session as session


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return session(model).run(None, {model.graph.input[0].name: x})[0]


def test_onnxruntime_gets_no_transposed_convolution_and_a_matmul_encoder_tail(art32):
    encoder, decoder = (onnx.load(str(art32.art / f"{g}.onnx")) for g in ("encoder", "decoder"))
    enc, dec = for_onnxruntime(encoder), for_onnxruntime(decoder)
    assert ops(enc).count("Conv") == ops(encoder).count("Conv") - 1 and "MatMul" in ops(enc)
    # art32's ConvTransposes have 16, 8 and 3 output channels: 64, 32 and 12 phases, the last padded to 16
    assert "ConvTranspose" not in ops(dec) and ops(dec).count("Conv") == 3 and ops(dec).count("Slice") == 1
    # the custom-domain quantizer is left as it was
    assert [f.name for f in enc.functions] == [f.name for f in encoder.functions] == ["FSQQuantize"]
    images = np.random.default_rng(0).random((16, 3, 32, 32), dtype=np.float32)
    indices = run(encoder, images)
    np.testing.assert_array_equal(run(enc, images), indices)
    assert np.abs(run(dec, indices) - run(decoder, indices)).max() <= 1e-6


def test_openvino_gets_inlined_graphs_with_only_narrow_layers_rewritten(art32):
    decoder = onnx.load(str(art32.art / "decoder.onnx"))
    dec = for_openvino(decoder)
    assert not dec.functions and all(n.domain in ("", "ai.onnx") for n in dec.graph.node)
    # art32's ConvTransposes have 16, 8 and 3 output channels: the 16-channel one fills a vector
    assert ops(dec).count("ConvTranspose") == 1
    indices = np.random.default_rng(1).integers(0, 8, (16, 16)).astype(np.int32)
    assert np.abs(run(dec, indices) - run(decoder, indices)).max() <= 1e-6
