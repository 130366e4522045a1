"""The ONNX operators TensorRT's ONNX parser supports, per TensorRT major version.

Source: onnx-tensorrt ``docs/operators.md`` (the "Operator Support Matrix", rows marked ``Y``).

- TensorRT 10: the table of the 10.15 release, minus the operators that the onnx-tensorrt
  ``CHANGELOG.md`` says were added after 10.0 (DeformConv 10.1; BlackmanWindow, HammingWindow,
  HannWindow 10.4; STFT 10.5; Attention 10.14; RotaryEmbedding, RMSNormalization, TensorScatter
  10.15), so that a graph passing the lint parses on every 10.x. TensorRT 10.0 reads opsets 9 to 20.
- TensorRT 11: not read off an 11.x table (none was at hand: the onnx-tensorrt snapshots and pages
  searched stop at the 10.15 table), but reasoned from the 10.15 table and what 11.x documents
  changing in the parser: 11.0 kept every ONNX operator of 10.x (its release notes list no parser
  removals; the removals of 11.0 are weak typing, implicit INT8 and old plugins, which are not ONNX
  operators) and "Added support for Swish operator"; later additions (DFT in 11.2, opset 25 in
  11.5) are left out, so that a graph passing the lint parses on every 11.x. So: the 10.15 table,
  the operators added during 10.x included, plus Swish; opsets 9 to 24 (the 10.15 range; the 11.x
  ONNX Opset Guide gives "Minimum opset ... 9", and opset 25 came with 11.5).
- TensorRT 8: the table of the 8.5 release (opsets up to 17). TensorRT 8 cannot parse ONNX local
  functions (added in 9.0), so an 8.x target needs an ``--inline`` export.

The lint checks operator names and the opset only; per-type restrictions in the table's third
column (e.g. INT32 ReduceSum, which 8.5 does not list) are for a real engine build to catch.
"""

from __future__ import annotations

_COMMON = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
    Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
    GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GridSample GRU HardSigmoid HardSwish Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
    Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
    RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
    Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
    ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)

# Added in 8.6 / 9.x and present in every 10.x table.
_SINCE_10 = frozenset(
    "CastLike Gelu GroupNormalization Hardmax IsInf LayerNormalization Mish".split()
)

# Added during 10.x (onnx-tensorrt CHANGELOG.md: DeformConv 10.1; BlackmanWindow, HammingWindow,
# HannWindow 10.4; STFT 10.5; Attention 10.14; RotaryEmbedding, RMSNormalization, TensorScatter
# 10.15), so in every 11.x; and Swish, added in 11.0 (TensorRT 11.0 release, "Parsers").
_DURING_10 = frozenset(
    "DeformConv BlackmanWindow HammingWindow HannWindow STFT Attention RotaryEmbedding RMSNormalization "
    "TensorScatter".split()
)
_SINCE_11 = frozenset({"Swish"})

SUPPORTED_OPS: dict[int, frozenset[str]] = {
    8: _COMMON,
    10: _COMMON | _SINCE_10,
    11: _COMMON | _SINCE_10 | _DURING_10 | _SINCE_11,
}

# (lowest, highest) ONNX opset the parser of each major version reads.
OPSET_RANGE: dict[int, tuple[int, int]] = {8: (1, 17), 10: (9, 20), 11: (9, 24)}

# The first major version whose parser imports ONNX local functions.
LOCAL_FUNCTIONS_SINCE = 9


def supported_versions() -> list[int]:
    return sorted(SUPPORTED_OPS)
