"""The deployment runtime: ``Codec`` (over every backend of the fsqdeploy.backends registry, with
compress/decompress to .fsq bitstreams), the bitstream format, bench. Importing it imports no torch."""

from fsqdeploy.runtime.codec import Codec
from fsqdeploy.runtime.serving.client import TritonCodec  # the Codec over a Triton server (docs/serving.md)

__all__ = ["Codec", "TritonCodec"]
