"""The fsqdeploy Python runtime inside an app: load an artifact, compress an image to a .fsq file,
read it back later, decompress.

    python examples/python/embed.py ART [IMAGE] [--out photo.fsq] [--backend auto]

Without IMAGE it makes a 100x150 gradient. The .fsq file is what an app stores or sends: a few
bytes per patch, tied to the model that wrote it (another model's Codec refuses it). The C++
runtime (runtime/cpp) reads and writes the same files. On ONNX Runtime or OpenVINO this needs no
PyTorch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_bytes_atomic
from fsqdeploy.images import read_image
from fsqdeploy.runtime import Codec


def gradient(height: int = 100, width: int = 150) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compress an image with an exported FSQ codec and back.")
    parser.add_argument("art", help="artifact directory written by `fsqdeploy export`")
    parser.add_argument("image", nargs="?", help="any image Pillow reads (default: a gradient)")
    parser.add_argument("--out", default="example.fsq", help="where to store the bitstream")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt, torch, ...")
    args = parser.parse_args(argv)
    try:
        with Codec.load(args.art, backend=args.backend) as codec:  # hashes verified, graphs loaded
            image = read_image(args.image) if args.image else gradient()  # uint8 [H, W, 3]

            data = codec.compress(image)  # tile, encode, pack: the .fsq file's bytes
            write_bytes_atomic(args.out, data)  # store (all or nothing)

            # later, elsewhere: check the file (CRCs, model), decode, stitch: uint8 [H, W, 3]
            restored = codec.decompress(Path(args.out).read_bytes())
    except (FSQDeployError, OSError) as e:  # OSError: --out cannot be written
        print(e, file=sys.stderr)
        return 2

    mse = float(np.mean((image.astype(np.float64) - restored) ** 2))
    psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
    height, width = image.shape[:2]
    nbytes = Path(args.out).stat().st_size
    print(
        f"{args.out}: {height}x{width} image in {nbytes} bytes ({8 * nbytes / (height * width):.3f} bits/pixel) "
        f"via {codec.backend}, PSNR {psnr:.2f} dB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
