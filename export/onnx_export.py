"""Torch -> ONNX: the encoder+quantizer graph and the decoder graph, with FSQ as custom-domain ops.

The conv parts come from ``torch.onnx.export`` (the torch.export-based exporter; the TorchScript
one is deprecated in torch 2.9+) after the exact module folds of export/torch_folds.py (BatchNorm
into the convolutions, the decoder's Linear into its first transposed convolution). The quantizer is
added by hand with ``onnx.helper``, because its semantics are ours to define exactly:

- ``fsqdeploy::FSQQuantize(latent f32 [N, D], thresholds f32 [D, Lmax-1]) -> indices i32 [N, D]``,
  one node per stage, attributes ``levels``, ``temperature``, ``stage`` (descriptive: the body reads
  only its inputs). Body: ``ReduceSum(Cast<int32>(Unsqueeze(latent, -1) >= thresholds), -1)``, the
  number of decision thresholds the latent reaches, exactly ``FSQ.indices_from_latent`` (fsq.py,
  departure 3). That is round-half-to-even of the bound, up to the float32 placement of the
  thresholds, and comparisons are exact on every IEEE runtime, so it is bit exact everywhere.
  The sum is INT32 (TensorRT 10 lists INT32 ReduceSum): a float sum could run in FP16 under an
  FP16 engine build and stop being exact above 2048 levels.
- Residual stages are plain ops between the FSQQuantize nodes, in ResidualFSQ.indices' order:
  ``u_{k+1} = (u_k - Gather(centres_k, d * Lmax + index_k)) * levels_k``.
- ``fsqdeploy::FSQDequantize(indices i32 [N, K*D], half_width f32 [K*D], stage_weights f32 [K*D])
  -> decoder_input f32 [N, D]``: ``w * ((float(i) - h) / h)`` per position, then the K stage slices
  summed left to right, as ResidualFSQ.indices_to_decoder_input does.

Both are ONNX local functions made of standard ops, so ONNX Runtime runs them as they are and
TensorRT 10 either inlines them or uses a plugin registered under the same name.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from fsqdeploy import __version__
from fsqdeploy.artifact import (
    BATCH,
    DECODER_FILE,
    ENCODER_FILE,
    GRID_HEIGHT,
    GRID_WIDTH,
    HEIGHT,
    IMAGES,
    INDICES,
    WIDTH,
)
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.export.torch_folds import fold_batchnorm, fold_decoder_head
from fsqdeploy.fsq import ResidualFSQ
from fsqdeploy.model import FSQVAE
from fsqdeploy.onnxgraph.graph import (
    DECODER_INPUT,
    DEQUANTIZE_OP,
    DOMAIN,
    DOMAIN_VERSION,
    LATENT,
    QUANTIZE_OP,
    inline_functions,
    validate,
)
from fsqdeploy.onnxgraph.surgery import stamp

DEFAULT_OPSET = 18
SUPPORTED_OPSETS = (17, 18, 19, 20)  # the exporter writes >= 17; TensorRT 10.0 reads <= 20

# Op types torch may leave behind that have no place in an inference graph.
TRAINING_ONLY_OPS = frozenset({"BatchNormalization", "Dropout", "Identity"})


def check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise FSQDeployError(
            f"export: opset {opset} is not supported. Note: use one of "
            f"{', '.join(map(str, SUPPORTED_OPSETS))} (default {DEFAULT_OPSET})"
        )


# -- the conv parts, from torch --------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs progress and notes about optional packages (torchvision); hide them."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def torch_to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str,
                  opset: int, spatial_multiple: int | None = None) -> onnx.ModelProto:
    """Export ``module`` (one input, one output) with a dynamic batch axis and constants folded.

    ``spatial_multiple``: the input's last two axes are dynamic too, constrained to multiples of it
    (the conv encoder takes any H, W that are multiples of f; the decoder any grid size, 1)."""
    dims: dict[int, Any] = {0: torch.export.Dim(BATCH, min=1)}
    if spatial_multiple is not None:
        rows, cols = torch.export.Dim("rows", min=1), torch.export.Dim("cols", min=1)
        dims |= {2: rows * spatial_multiple, 3: cols * spatial_multiple} if spatial_multiple > 1 else {2: rows, 3: cols}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module.eval(), (example,), input_names=[input_name], output_names=[output_name],
            dynamic_shapes=(dims,), opset_version=opset, dynamo=True, optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    got = {o.domain: o.version for o in proto.opset_import}.get("", None)
    if got != opset:  # the exporter falls back to its own opset instead of failing
        raise FSQDeployError(f"export: torch wrote opset {got}, not the requested {opset}")
    return _strip_torch_metadata(proto)


def _strip_torch_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop per-node stack traces and FX names: they leak local paths and change with torch."""
    g = model.graph
    for node in g.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for vi in [*g.input, *g.output, *g.value_info]:
        del vi.metadata_props[:]
    del g.value_info[:]
    del g.metadata_props[:]
    del model.metadata_props[:]
    model.doc_string = ""
    return model


# -- the FSQ functions -----------------------------------------------------------------------------


def _const_i64(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64,
                                                                              [len(values)], values))


def _scoped(prefix: str, inputs: list[str], outputs: list[str], body: list[onnx.NodeProto]
            ) -> tuple[list[str], list[str], list[onnx.NodeProto]]:
    """Prefix every name inside a function body. onnx-tensorrt has been seen binding a function's
    formal input to a graph tensor of the same name (e.g. ``latent``) instead of the argument, so
    function-local names must never collide with graph names."""
    def rename(name: str) -> str:
        return f"{prefix}{name}" if name else name

    for node in body:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    return [rename(n) for n in inputs], [rename(n) for n in outputs], body


def build_quantize_function(opset: int) -> onnx.FunctionProto:
    """FSQQuantize: how many of its decision thresholds each latent value reaches, as int32."""
    body = [
        _const_i64("last_axis", [-1]),
        helper.make_node("Unsqueeze", ["latent", "last_axis"], ["latent_column"]),  # [N, D, 1]
        helper.make_node("GreaterOrEqual", ["latent_column", "thresholds"], ["reached"]),  # [N, D, T]
        helper.make_node("Cast", ["reached"], ["reached_i32"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["reached_i32", "last_axis"], ["indices"], keepdims=0),
    ]
    inputs, outputs, body = _scoped("fsqq_", ["latent", "thresholds"], ["indices"], body)
    return helper.make_function(
        DOMAIN, QUANTIZE_OP, inputs, outputs, body,
        [helper.make_opsetid("", opset)], attributes=["levels", "temperature", "stage"],
        doc_string="indices[n, d] = #{k : latent[n, d] >= thresholds[d, k]} (exact in every IEEE runtime)",
    )


def build_dequantize_function(opset: int, stages: int, width: int) -> onnx.FunctionProto:
    """FSQDequantize: per position w * (float(i) - h) / h, then the K stage slices summed in order."""
    body = [
        helper.make_node("Cast", ["indices"], ["indices_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["indices_f", "half_width"], ["centred"]),
        helper.make_node("Div", ["centred", "half_width"], ["codes"]),
        # torch computes stage_weights[k] * codes; IEEE multiplication commutes, so this is exact.
        helper.make_node("Mul", ["stage_weights", "codes"], ["terms" if stages > 1 else "decoder_input"]),
    ]
    if stages > 1:
        parts = [f"stage{k}" for k in range(stages)]
        body += [_const_i64("split", [width] * stages),
                 helper.make_node("Split", ["terms", "split"], parts, axis=1)]
        acc = parts[0]
        for k in range(1, stages):  # ((t0 + t1) + t2) + ...: the order ResidualFSQ sums in
            out = "decoder_input" if k == stages - 1 else f"sum{k}"
            body.append(helper.make_node("Add", [acc, parts[k]], [out]))
            acc = out
    inputs, outputs, body = _scoped("fsqd_", ["indices", "half_width", "stage_weights"], ["decoder_input"], body)
    return helper.make_function(
        DOMAIN, DEQUANTIZE_OP, inputs, outputs, body,
        [helper.make_opsetid("", opset)], attributes=["levels", "stages"],
        doc_string="decoder_input = sum_k stage_weights * (float(indices) - half_width) / half_width over K slices",
    )


def _per_channel(values: np.ndarray, spatial: bool) -> np.ndarray:
    """A per-channel table [C, ...] as the graph broadcasts it: unchanged against [N, C] vectors, with
    two unit axes after C ([C, 1, 1, ...]) against a channels-first grid [N, C, h, w]. The FSQ
    functions' bodies are the same either way: they compare along a new last axis and broadcast."""
    return values.reshape(values.shape[0], 1, 1, *values.shape[1:]) if spatial else values


def quantizer_graph_parts(quantizer: ResidualFSQ, latent: str, output: str, spatial: bool = False
                          ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and initializers from the latent to the concatenated int32 indices (ResidualFSQ.indices).
    ``spatial``: the latent is a grid [N, D, h, w] and FSQ runs over its channel axis at each position."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    cpu = torch.device("cpu")
    u, stage_outputs = latent, []
    count = len(quantizer.stages)
    for k, stage in enumerate(quantizer.stages):
        thresholds, centres = (t.numpy() for t in stage.tables(cpu))
        idx = output if count == 1 else f"fsq_indices_{k}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(_per_channel(thresholds, spatial), np.float32),
                                             f"fsq_thresholds_{k}"))
        nodes.append(helper.make_node(
            QUANTIZE_OP, [u, f"fsq_thresholds_{k}"], [idx], name=f"fsq_quantize_{k}", domain=DOMAIN,
            levels=stage.level_list(), temperature=float(stage.temperature), stage=k,
        ))
        stage_outputs.append(idx)
        if k + 1 == count:
            break
        # u_{k+1} = (u_k - centres_k[d, index]) * levels_k: one Gather from the flattened table.
        dim, lmax = centres.shape
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(centres.reshape(-1), np.float32), f"fsq_centres_{k}"),
            numpy_helper.from_array(_per_channel((np.arange(dim) * lmax).astype(np.int32), spatial),
                                    f"fsq_row_offsets_{k}"),
            numpy_helper.from_array(_per_channel(quantizer.residual_gain(k).numpy().astype(np.float32), spatial),
                                    f"fsq_gain_{k}"),
        ]
        nxt = f"fsq_stage_input_{k + 1}"
        nodes += [
            helper.make_node("Add", [idx, f"fsq_row_offsets_{k}"], [f"fsq_flat_index_{k}"], name=f"fsq_flat_{k}"),
            helper.make_node("Gather", [f"fsq_centres_{k}", f"fsq_flat_index_{k}"], [f"fsq_centre_{k}"],
                             name=f"fsq_centre_{k}", axis=0),
            helper.make_node("Sub", [u, f"fsq_centre_{k}"], [f"fsq_residual_{k}"], name=f"fsq_residual_{k}"),
            helper.make_node("Mul", [f"fsq_residual_{k}", f"fsq_gain_{k}"], [nxt], name=f"fsq_gain_{k}"),
        ]
        u = nxt
    if count > 1:
        nodes.append(helper.make_node("Concat", stage_outputs, [output], name="fsq_concat", axis=1))
    return nodes, inits


def dequantizer_graph_parts(quantizer: ResidualFSQ, indices: str, output: str, spatial: bool = False
                            ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    width = quantizer.latent_dim
    half_width = np.concatenate([s.half_width.numpy() for s in quantizer.stages]).astype(np.float32)
    weights = np.repeat(quantizer.stage_weights.detach().cpu().numpy().astype(np.float32), width)
    half_width, weights = _per_channel(half_width, spatial), _per_channel(weights, spatial)
    inits = [numpy_helper.from_array(half_width, "fsq_half_width"),
             numpy_helper.from_array(weights, "fsq_stage_weights")]
    node = helper.make_node(DEQUANTIZE_OP, [indices, "fsq_half_width", "fsq_stage_weights"], [output],
                            name="fsq_dequantize", domain=DOMAIN, levels=quantizer.level_list(),
                            stages=len(quantizer.stages))
    return [node], inits


# -- the two graphs --------------------------------------------------------------------------------


def _io(name: str, elem_type: int, dims: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [BATCH, *dims])


def _image_dims(model: FSQVAE) -> list[int | str]:
    s = model.config.image_size
    return [3, HEIGHT, WIDTH] if model.config.spatial else [3, s, s]


def _index_dims(model: FSQVAE) -> list[int | str]:
    return [model.code_width, GRID_HEIGHT, GRID_WIDTH] if model.config.spatial else [model.code_width]


def export_encoder(model: FSQVAE, opset: int) -> onnx.ModelProto:
    """images f32 [batch, 3, S, S] -> indices i32 [batch, K*D]; spatial (conv) models:
    images [batch, 3, height, width] (multiples of f) -> indices [batch, K*D, height/f, width/f]."""
    cfg = model.config
    if cfg.spatial:
        f = cfg.downsample
        example = torch.rand(2, 3, 3 * f, 5 * f)  # non-square, so no axis is traced as equal to another
        proto = torch_to_onnx(fold_batchnorm(model.encoder), example, IMAGES, LATENT, opset, spatial_multiple=f)
    else:
        s = cfg.image_size
        proto = torch_to_onnx(fold_batchnorm(model.encoder), torch.rand(2, 3, s, s), IMAGES, LATENT, opset)
    nodes, inits = quantizer_graph_parts(model.quantizer, LATENT, INDICES, spatial=cfg.spatial)
    g = proto.graph
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.input[:], g.output[:]
    g.input.append(_io(IMAGES, TensorProto.FLOAT, _image_dims(model)))
    g.output.append(_io(INDICES, TensorProto.INT32, _index_dims(model)))
    proto.functions.append(build_quantize_function(opset))
    proto.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    g.name = "fsqdeploy_encoder"
    return proto


class _DecodeImages(nn.Module):
    """The decoder with its sigmoid: the graph outputs images in [0, 1], not logits."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, decoder_input: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(decoder_input))


def export_decoder(model: FSQVAE, opset: int) -> onnx.ModelProto:
    """indices i32 [batch, K*D] -> images f32 [batch, 3, S, S]; spatial (conv) models:
    indices [batch, K*D, rows, cols] -> images [batch, 3, rows*f, cols*f]."""
    q = model.quantizer
    if model.config.spatial:
        # The conv decoder starts with a convolution: nothing to fold into it.
        example = torch.zeros(2, q.latent_dim, 3, 5)
        proto = torch_to_onnx(_DecodeImages(copy.deepcopy(model.decoder)), example, DECODER_INPUT, IMAGES, opset,
                              spatial_multiple=1)
    else:
        example = torch.zeros(2, q.latent_dim)
        proto = torch_to_onnx(_DecodeImages(fold_decoder_head(model.decoder)), example, DECODER_INPUT, IMAGES, opset)
    nodes, inits = dequantizer_graph_parts(q, INDICES, DECODER_INPUT, spatial=model.config.spatial)
    g = proto.graph
    rest = list(g.node)
    del g.node[:]
    g.node.extend([*nodes, *rest])
    g.initializer.extend(inits)
    del g.input[:], g.output[:]
    g.input.append(_io(INDICES, TensorProto.INT32, _index_dims(model)))
    g.output.append(_io(IMAGES, TensorProto.FLOAT, _image_dims(model)))
    proto.functions.append(build_dequantize_function(opset, len(q.stages), q.latent_dim))
    proto.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    g.name = "fsqdeploy_decoder"
    return proto


def model_metadata(model: FSQVAE, checkpoint_sha256: str) -> dict[str, str]:
    """metadata_props of both graphs: enough to tie a graph to its model without the manifest."""
    cfg = model.config
    return {
        "fsqdeploy_version": __version__,
        "levels": ",".join(map(str, model.levels)),
        "latent_dim": str(cfg.latent_dim),
        "image_size": str(cfg.image_size),
        "stages": str(cfg.stages),
        "temperature": repr(float(model.quantizer.temperature)),
        "checkpoint_sha256": checkpoint_sha256,
        **({"arch": cfg.arch, "downsample": str(cfg.downsample)} if cfg.spatial else {}),
    }


def finalize(model: onnx.ModelProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """Stamp producer and metadata, then prove the graph well formed: full checker, strict inference."""
    stamp(model, metadata, producer=("fsqdeploy", __version__))
    leftovers = sorted({n.op_type for n in model.graph.node} & TRAINING_ONLY_OPS)
    if leftovers:
        raise FSQDeployError(f"export: the graph still holds {', '.join(leftovers)} after export")
    validate(model, "export")
    return model


def export_graphs(model: FSQVAE, opset: int, inline: bool, checkpoint_sha256: str
                  ) -> dict[str, onnx.ModelProto]:
    """Both graphs, checked, keyed by file name."""
    check_opset(opset)
    meta = model_metadata(model, checkpoint_sha256)
    graphs = {ENCODER_FILE: export_encoder(model, opset), DECODER_FILE: export_decoder(model, opset)}
    if inline:
        graphs = {name: inline_functions(g) for name, g in graphs.items()}
    return {name: finalize(g, {**meta, "graph": name.removesuffix(".onnx")}) for name, g in graphs.items()}


