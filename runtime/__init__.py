"""The deployment runtime: ``Codec`` over PyTorch, ONNX Runtime, OpenVINO and TensorRT, bench, bitstream."""

from fsqdeploy.runtime.codec import Codec

__all__ = ["Codec"]
