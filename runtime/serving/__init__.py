"""Serving the codec from Triton Inference Server: ``write_repository`` (runtime/serving/triton.py)
turns an artifact into a model repository, ``TritonCodec`` (client.py) is the Codec over a server.
Importing it imports neither tritonclient nor onnx; docs/serving.md says how to run it."""

from fsqdeploy.runtime.serving.client import TritonCodec
from fsqdeploy.runtime.serving.triton import RepositoryOptions, write_repository

__all__ = ["RepositoryOptions", "TritonCodec", "write_repository"]
