"""Exact ONNX graph rewrites: the same function computed by kernels a CPU runtime runs faster.

Used in two places: fsqdeploy calibrate applies them before quantizing (so that INT8 kernels exist
for every layer), and the runtime applies them at load time to the FP32 graphs it hands ONNX Runtime
and OpenVINO (fsqdeploy/backends/cpu_graphs.py says which, with measurements). The exported files themselves
stay as PyTorch wrote them: TensorRT runs ConvTranspose well and reads the plain graph best.

``transposed_to_phase_convs``: ONNX Runtime has no INT8 ConvTranspose kernel, so the QDQ pairs
around one only add work (measured while planning: an INT8 decoder 1.6x slower than FP32). A
ConvTranspose with kernel 4, stride 2, padding 1 is four ordinary convolutions in disguise, one per
output phase (py, px) = (output row mod 2, output column mod 2). Each phase reads a 2x2 window of
the input and all four windows lie inside one 3x3 window, so one 3x3 convolution (padding 1) with
``4 * Cout`` outputs computes every phase at the input resolution. For ``W[Cin, Cout, 4, 4]``::

    K[(py*2 + px)*Cout + o, c, dy, dx] = W[c, o, ky(py, dy), kx(px, dx)]
    ky(0, 0) = 3, ky(0, 1) = 1, ky(1, 1) = 2, ky(1, 2) = 0  (the same table for kx), zero elsewhere

because output row ``2i + py`` takes input row ``i + dy - 1`` through kernel row
``ky = 2i + py + 1 - 2 * (i + dy - 1)``. The phases are then interleaved into the output: the
channel order (py, px, o) is DepthToSpace's DCR mode, written here as

    Transpose(NCHW -> NHWC) -> Reshape [N, H, W, 2, 2*Cout] -> Transpose(swap W and py)
    -> Reshape [N, 2H, 2W, Cout] -> Transpose(NHWC -> NCHW)

rather than as one DepthToSpace node, on purpose: ONNX Runtime runs its INT8 convolutions in NHWC
and wraps every NCHW-only op in a pair of layout transposes. Written this way, the first and last
Transpose cancel those, and what is left moves whole runs of Cout contiguous values. On this
machine (2 cores, paper-shape decoder, batch 256) the INT8 decoder takes ~8 ms this way against
~14 ms with DepthToSpace, and even the FP32 graph runs faster (~17 ms) than with ConvTranspose
(~25 ms). A Relu right after the ConvTranspose moves in front of the interleave (an elementwise op
commutes with a permutation) so it still fuses with the convolution. Only the summation order
changes: the result matches the original to float32 rounding (tests/test_onnxgraph_rewrites.py).

Nodes are selected by op type and checked attribute by attribute; anything else (other kernels,
strides, groups, dilations, output padding or shape, auto_pad, a non-constant weight, a spatial
size that is not static) is left alone. Each rewrite is onnx-graphsurgeon surgery
(fsqdeploy/onnxgraph/surgery.py): the new nodes take over the old one's output tensor, and
``cleanup().toposort()`` drops the old node and the weights nobody reads any more.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fsqdeploy.onnxgraph.surgery import add_node, copy_model, export_graph, import_graph, is_op, only_reader, select

# (phase, window offset) -> kernel tap of ConvTranspose(k=4, s=2, p=1), for rows and columns alike.
PHASE_TAPS = {(0, 0): 3, (0, 1): 1, (1, 1): 2, (1, 2): 0}


def phase_kernel(weight: np.ndarray) -> np.ndarray:
    """ConvTranspose weight ``[Cin, Cout, 4, 4]`` -> 3x3 Conv weight ``[4 * Cout, Cin, 3, 3]``,
    output channels in (py, px, o) order."""
    cin, cout = weight.shape[:2]
    kernel = np.zeros((2, 2, cout, cin, 3, 3), dtype=weight.dtype)
    for (py, dy), ky in PHASE_TAPS.items():
        for (px, dx), kx in PHASE_TAPS.items():
            kernel[py, px, :, :, dy, dx] = weight[:, :, ky, kx].T
    return kernel.reshape(4 * cout, cin, 3, 3)


def is_phase_decomposable(node: gs.Node) -> bool:
    """A 2-D ConvTranspose with kernel 4, stride 2, pads 1, group 1, dilation 1 and constant weights."""
    if not is_op(node, "ConvTranspose") or len(node.inputs) < 2:
        return False
    a, weight = node.attrs, node.inputs[1]
    bias_ok = len(node.inputs) < 3 or node.inputs[2].is_empty() or isinstance(node.inputs[2], gs.Constant)
    return (
        isinstance(weight, gs.Constant) and len(weight.shape) == 4 and tuple(weight.shape[2:]) == (4, 4) and bias_ok
        and list(a.get("kernel_shape", [4, 4])) == [4, 4]
        and list(a.get("strides", [1, 1])) == [2, 2]
        and list(a.get("pads", [0, 0, 0, 0])) == [1, 1, 1, 1]
        and list(a.get("dilations", [1, 1])) == [1, 1]
        and list(a.get("output_padding", [0, 0])) == [0, 0]
        and a.get("group", 1) == 1
        and "output_shape" not in a
        and a.get("auto_pad", "NOTSET") == "NOTSET"
    )


def _spatial_sizes(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Static (H, W) of every 4-D tensor whose last two dimensions shape inference can fix."""
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            sizes[vi.name] = (dims[2].dim_value, dims[3].dim_value)
    return sizes


def _ints(name: str, values: list[int]) -> gs.Constant:
    return gs.Constant(name, np.array(values, dtype=np.int64))


def transposed_to_phase_convs(model: onnx.ModelProto, max_out_channels: int | None = None,
                              channel_multiple: int = 1) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every phase-decomposable ConvTranspose (module docstring) replaced by
    a 3x3 Conv [-> Relu] and the phase interleave; returns the copy and how many were replaced.
    ``max_out_channels`` limits the rewrite to layers with at most that many output channels.
    ``channel_multiple`` pads the Conv's ``4 * Cout`` outputs with zero filters up to a multiple of
    it, sliced off again before the interleave: ONNX Runtime's INT8 convolution runs 12 outputs at
    half the speed of 16 (32 -> 12 vs 32 -> 16 channels, 3x3, 16x16, batch 256: 4.9 vs 2.3 ms), so
    the decoder's 3-channel last layer is faster with 4 more that nobody reads."""
    sizes = _spatial_sizes(model)
    graph = import_graph(model)
    graph_outputs = {t.name for t in graph.outputs}
    replaced = 0
    for node in select(graph, "ConvTranspose"):
        if (not is_phase_decomposable(node) or node.inputs[0].name not in sizes
                or (max_out_channels is not None and node.inputs[1].shape[1] > max_out_channels)):
            continue
        h, w = sizes[node.inputs[0].name]
        name = node.name or f"convtranspose_{replaced}"
        replaced += 1
        weight = node.inputs[1].values
        cout = weight.shape[1]
        kernel = phase_kernel(weight)
        padding = -len(kernel) % channel_multiple
        kernel = np.concatenate([kernel, np.zeros((padding, *kernel.shape[1:]), kernel.dtype)])
        conv_inputs = [node.inputs[0], gs.Constant(f"{name}/phase_weight", kernel)]
        if len(node.inputs) > 2 and not node.inputs[2].is_empty():
            bias = np.tile(node.inputs[2].values, 4)
            conv_inputs.append(gs.Constant(f"{name}/phase_bias", np.concatenate([bias, np.zeros(padding, bias.dtype)])))
        result = node.outputs[0]
        node.outputs.clear()  # the ConvTranspose now computes nothing anyone reads: cleanup drops it
        phases = add_node(graph, "Conv", f"{name}/phase_conv", conv_inputs, [f"{name}/phases"],
                          kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]).outputs[0]
        relu = only_reader(result, "Relu")
        if relu is not None and is_op(relu, "Relu") and result.name not in graph_outputs:
            phases = add_node(graph, "Relu", relu.name or f"{name}/relu", [phases], [f"{phases.name}_relu"]).outputs[0]
            result = relu.outputs[0]
            relu.outputs.clear()
        if padding:
            used = [_ints(f"{name}/zero", [0]), _ints(f"{name}/used", [4 * cout]), _ints(f"{name}/axis", [1])]
            phases = add_node(graph, "Slice", f"{name}/drop_padding", [phases, *used],
                              [f"{phases.name}_used"]).outputs[0]
        rows = _ints(f"{name}/phase_rows", [0, h, w, 2, 2 * cout])
        interleaved = _ints(f"{name}/interleaved", [0, 2 * h, 2 * w, cout])
        x = add_node(graph, "Transpose", f"{name}/to_nhwc", [phases], [f"{name}/phases_nhwc"],
                     perm=[0, 2, 3, 1]).outputs[0]
        x = add_node(graph, "Reshape", f"{name}/split_phases", [x, rows], [f"{name}/by_phase"]).outputs[0]
        x = add_node(graph, "Transpose", f"{name}/interleave", [x], [f"{name}/rows_interleaved"],
                     perm=[0, 1, 3, 2, 4]).outputs[0]
        x = add_node(graph, "Reshape", f"{name}/merge_phases", [x, interleaved], [f"{name}/output_nhwc"]).outputs[0]
        add_node(graph, "Transpose", f"{name}/to_nchw", [x], [result], perm=[0, 3, 1, 2])
    return (export_graph(graph, like=model) if replaced else copy_model(model)), replaced


# ONNX Runtime's CPU convolutions, FP32 and INT8, take output channels in blocks of 16
# (transposed_to_phase_convs' docstring measures what a partial block costs in INT8).
ORT_CHANNEL_BLOCK = 16


def transposed_convs_for_onnxruntime(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Every ConvTranspose(k4, s2, p1) as phase convolutions with their outputs padded to whole blocks,
    the form ONNX Runtime's CPU kernels run fastest, FP32 and INT8 alike. Returns the copy and what
    was applied, for calibration's record."""
    model, count = transposed_to_phase_convs(model, channel_multiple=ORT_CHANNEL_BLOCK)
    applied = [f"{count} ConvTranspose(k4,s2,p1) -> 3x3 Conv (outputs padded to a multiple of "
               f"{ORT_CHANNEL_BLOCK}) + phase interleave"] if count else []
    return model, applied


# -- a convolution with a tiny output as one MatMul ------------------------------------------------

# The dense form multiplies by every input position, the convolution only by those in its window:
# allow at most this many times the convolution's multiply-adds.
MAX_DENSE_COST = 4


def conv_output_hw(in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides: list[int], pads: list[int]
                   ) -> tuple[int, int]:
    (h, w), (kh, kw), (sh, sw), (top, left, bottom, right) = in_hw, kernel_hw, strides, pads
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1


def dense_conv_matrix(weight: np.ndarray, in_hw: tuple[int, int], strides: list[int], pads: list[int]
                      ) -> tuple[np.ndarray, tuple[int, int]]:
    """Conv weight ``[Cout, Cin, kh, kw]`` on a ``[Cin, H, W]`` input -> ``D [Cin*H*W, Cout*OH*OW]`` with
    ``flatten(conv(x)) == flatten(x) @ D`` (NCHW flattening on both sides), and ``(OH, OW)``."""
    cout, cin, kh, kw = weight.shape
    (h, w), (sh, sw), (top, left) = in_hw, strides, pads[:2]
    oh, ow = conv_output_hw(in_hw, (kh, kw), strides, pads)
    dense = np.zeros((cin, h, w, cout, oh, ow), dtype=weight.dtype)
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sh - top + ky, ox * sw - left + kx
                    if 0 <= iy < h and 0 <= ix < w:  # taps on the zero padding contribute nothing
                        dense[:, iy, ix, :, oy, ox] = weight[:, :, ky, kx].T
    return dense.reshape(cin * h * w, cout * oh * ow), (oh, ow)


def conv_as_matmul(model: onnx.ModelProto, conv_name: str, max_cost: float = MAX_DENSE_COST
                   ) -> tuple[onnx.ModelProto, str | None]:
    """A copy of ``model`` with the Conv named ``conv_name`` computed as
    ``Reshape [N, Cin*H*W] -> MatMul(D) -> Reshape [N, Cout, OH, OW] -> Add(bias)``; returns the copy
    and the MatMul's name, or the unchanged copy and None when the Conv does not qualify (group,
    dilation, auto_pad, non-constant weight, no static input size, or a dense form costing more than
    ``max_cost`` times the convolution).

    Why: the encoder's last convolution feeds the float layer that computes the latent. Quantizing
    its output to 8 bits costs ~1.3% of the indices of a trained paper-shape model (its thresholds
    are ~0.03 apart); keeping it in float costs ~40% of the FP32 encoder's time, because ONNX
    Runtime has no INT8 convolution with a float output. It does have one for MatMul
    (DequantizeLinear -> MatMul fuses into MatMulIntegerToFloat), so the layer runs on INT8 inputs
    and weights and hands the float layer a float result. The bias is added after a Reshape so that
    ONNX Runtime's MatMul+Add fusion, which runs first, does not turn it back into a float Gemm.
    """
    sizes = _spatial_sizes(model)
    graph = import_graph(model)
    node = next((n for n in select(graph, "Conv") if n.name == conv_name), None)
    if node is None or not isinstance(node.inputs[1], gs.Constant) or node.inputs[0].name not in sizes:
        return copy_model(model), None
    a = node.attrs
    weight = node.inputs[1].values
    bias = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
    if (weight.ndim != 4 or a.get("group", 1) != 1 or list(a.get("dilations", [1, 1])) != [1, 1]
            or a.get("auto_pad", "NOTSET") != "NOTSET" or (bias is not None and not isinstance(bias, gs.Constant))):
        return copy_model(model), None
    h, w = sizes[node.inputs[0].name]
    strides, pads = list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0]))
    cout, cin = weight.shape[:2]
    oh, ow = conv_output_hw((h, w), weight.shape[2:], strides, pads)
    # The cost test comes first: the dense matrix of a large convolution runs to hundreds of MB.
    if cin * h * w * cout * oh * ow > max_cost * weight.size * oh * ow:
        return copy_model(model), None
    dense, _ = dense_conv_matrix(weight, (h, w), strides, pads)
    name, x, result = node.name, node.inputs[0], node.outputs[0]
    node.outputs.clear()  # the Conv now computes nothing anyone reads: cleanup drops it
    flat = add_node(graph, "Reshape", f"{name}/flatten", [x, _ints(f"{name}/flat", [0, -1])],
                    [f"{name}/input_flat"]).outputs[0]
    product = add_node(graph, "MatMul", f"{name}/as_matmul", [flat, gs.Constant(f"{name}/dense_weight", dense)],
                       [f"{name}/matmul"]).outputs[0]
    unflat = _ints(f"{name}/unflat", [0, cout, oh, ow])
    if bias is not None:
        unbiased = add_node(graph, "Reshape", f"{name}/unflatten", [product, unflat], [f"{name}/unbiased"]).outputs[0]
        add_node(graph, "Add", f"{name}/bias", [unbiased, gs.Constant(f"{name}/bias", bias.values.reshape(cout, 1, 1))],
                 [result])
    else:
        add_node(graph, "Reshape", f"{name}/unflatten", [product, unflat], [result])
    return export_graph(graph, like=model), f"{name}/as_matmul"


def tiny_convs_as_matmul(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Every Conv whose dense form costs no more multiply-adds than the convolution itself (an output
    of at most 2x2 for kernel 4, stride 2, padding 1: every window covers the whole input, padding
    included) as one MatMul. CPU convolution kernels tile the output's rows and columns; with two of
    each they idle, while a [batch, Cin*H*W] x [Cin*H*W, Cout*OH*OW] product is the shape GEMM
    kernels are best at. Returns the copy and how many were replaced."""
    out, replaced = copy_model(model), 0
    for name in [n.name for n in model.graph.node if n.op_type == "Conv" and n.name]:
        out, matmul = conv_as_matmul(out, name, max_cost=1.0)
        replaced += matmul is not None
    return out, replaced
