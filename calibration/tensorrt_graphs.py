"""The second pair of INT8 graphs ``fsqdeploy calibrate`` writes: the ones TensorRT builds engines from.

The ONNX Runtime graphs (encoder.int8.onnx, decoder.int8.onnx) are shaped for ONNX Runtime's CPU
kernels, and two of their choices are wrong for TensorRT:

- Activations are asymmetric uint8 (ONNX Runtime's native x86 form) and biases int32. TensorRT reads
  only symmetric INT8 quantization: its ONNX parser refuses a UINT8 QuantizeLinear, a non-zero zero
  point ("TRT only supports symmetric quantization") and an int32 DequantizeLinear ("only activation
  types allowed as input", onnx-tensorrt issue 850). Here activations are int8 with zero point 0,
  biases stay float, and weights are float initializers behind a per-channel Q/DQ pair, the form
  NVIDIA's own quantization tools write.
- The decoder's ConvTranspose layers are rewritten into phase convolutions (2.25x the multiply-adds)
  because ONNX Runtime has no INT8 ConvTranspose, and the encoder's last convolution into a MatMul;
  the first convolution stays in float for ONNX Runtime's speed. TensorRT has INT8 kernels for all
  of them, so these graphs are the exported FP32 graphs with Q/DQ pairs and nothing rewritten.
- Q/DQ pairs sit on every layer's inputs only, NVIDIA's recommended placement: TensorRT fuses a
  layer's output scale from the next layer's input quantization, and the encoder's last
  convolution hands the float layer computing the latent a float result (quantizing that output
  to 8 bits costs ~1.3% of the indices; docs/calibration.md).

What stays in float is what the indices need (quantize.protected_nodes: the FSQ quantizer, the
layer feeding it, FSQDequantize), the encoder's first convolution (it reads the images: a
symmetric INT8 grid gives [0, 1] pixels 128 levels; 3 input channels make it cheap in float), and
the layers a ``--sensitivity`` pass kept in float. Ranges
are collected again on these graphs (same method, same data). Their accuracy is measured on ONNX
Runtime's CPU, which computes Q/DQ graphs exactly as the ONNX operators define them; TensorRT's
fused INT8 kernels round intermediate results their own way, so an engine's numbers can differ a
little (tests marked ``gpu`` measure them against PyTorch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import onnx

from fsqdeploy.artifact import GRAPHS, graph_file
from fsqdeploy.calibration.quantize import QuantSettings, layer_groups, layers, name_nodes, protected_nodes

TENSORRT_FILES = {g: graph_file(g, "int8", target="tensorrt") for g in GRAPHS}


def tensorrt_settings(settings: QuantSettings) -> QuantSettings:
    """``settings`` for TensorRT's form (quantize.QuantSettings.target): int8 activations with zero point
    0, int8 weights per output channel, no reduced range."""
    return replace(settings, activation_type="int8", weight_type="int8", per_channel=True, reduce_range=False,
                   target="tensorrt")


def prepare(graph: str, source: onnx.ModelProto, onnxruntime_floats: Mapping[str, str]
            ) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The graph to quantize (a named copy of the exported one) and the nodes kept in float: the
    quantizer's, plus the sensitivity pass's choices carried over from the ONNX Runtime graph (a
    decoder layer there is named ``<ConvTranspose>/phase_conv``)."""
    model = name_nodes(onnx.ModelProto.FromString(source.SerializeToString()))
    names = {n.name for n in model.graph.node}
    kept = dict(protected_nodes(model, graph))
    inputs = {i.name for i in model.graph.input}
    groups = layer_groups(model)
    for layer in layers(model):
        if graph == "encoder" and layer.input[0] in inputs:
            # Pixels in [0, 1] on a symmetric INT8 grid get 128 levels, half of what they carry.
            kept.update({name: "reads the images" for name in groups[layer.name]})
    for name, why in onnxruntime_floats.items():
        original = name.removesuffix("/phase_conv")
        if why == "sensitivity" and original in names:
            kept.setdefault(original, why)
    return model, kept
