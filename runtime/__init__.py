"""The deployment runtime: ``Codec`` (over every backend of the fsqdeploy.backends registry, with
compress/decompress to .fsq bitstreams), the bitstream format, bench. Importing it imports no torch."""

from fsqdeploy.runtime.codec import Codec

__all__ = ["Codec"]
