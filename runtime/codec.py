"""``Codec``: the exported FSQ codec on any backend, in three lines::

    from fsqdeploy.runtime import Codec
    codec = Codec.load("art", backend="auto")      # says which backend it picked: codec.backend
    images = codec.decode(codec.encode(images))     # float [N,3,S,S] -> int32 [N,W] -> float

    data = codec.compress(photo)                    # uint8 [H,W,3], any size -> the .fsq bytes
    photo = codec.decompress(data)                  # -> uint8 [H,W,3]; another model's file is refused

The manifest's hashes are verified before anything is loaded. Backends come from the registry
(fsqdeploy/backends): Codec knows none by name. Inputs are validated at the boundary (shape, dtype,
[0, 1] range, NaN, index range) with the same messages as ``FSQVAE``. Nothing here imports torch,
so an app that embeds the ONNX Runtime codec needs no PyTorch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy import backends
from fsqdeploy.artifact import Manifest
from fsqdeploy.backends import REGISTRY, Backend, Runner, get_backend
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import from_patches, to_patches
from fsqdeploy.runtime.bitstream import FsqHeader, check_model, read_fsq, write_fsq
from fsqdeploy.validation import check_images, check_indices

log = logging.getLogger("fsqdeploy")


class Codec:
    def __init__(self, manifest: Manifest, backend: Backend, encoder: Runner, decoder: Runner, precision: str):
        self.manifest, self.art = manifest, manifest.art
        self.backend: str = backend.name
        self.encoder, self.decoder = encoder, decoder
        self.precision = precision
        self.levels: list[int] = list(manifest.levels)
        self.image_size: int = manifest.image_size  # the patch size: images of any size are tiled
        self.model_id: str = manifest.model_id
        # With backend="auto": the faster backends passed over, each with the reason.
        self.auto_skipped: list[tuple[str, str]] = []

    @property
    def code_width(self) -> int:
        return len(self.levels)

    @classmethod
    def load(
        cls,
        art: str | Path | Manifest,
        backend: str = "auto",
        *,
        precision: str = "fp32",
        threads: int | None = None,
        verify: bool = True,
        device: str = "cpu",
    ) -> Codec:
        """The artifact ``art`` on ``backend`` (a registry name, or "auto": the fastest backend that
        can run here and finds what it needs in ``art``), activated and ready. ``art`` may be a loaded
        Manifest (bench opens many codecs on one): it is then used as it is, ``verify`` ignored."""
        manifest = art if isinstance(art, Manifest) else Manifest.load(art, verify=verify, component="codec")
        if backend == "auto":
            return cls._auto(manifest, precision, threads, device)
        if backend not in REGISTRY:
            raise FSQDeployError(f"codec: unknown backend {backend!r}. Note: use auto or one of {', '.join(REGISTRY)}")
        chosen = get_backend(backend)
        problem = chosen.precision_problem(precision)
        if problem is None and (reason := chosen.unavailable_reason()):
            raise FSQDeployError(f"codec: backend {backend} cannot run here: {reason}")
        problem = problem or chosen.artifact_problem(manifest, precision)
        if problem:
            raise FSQDeployError(f"codec: {problem}")
        return cls._open(manifest, chosen, precision, threads, device)

    @classmethod
    def _auto(cls, manifest: Manifest, precision: str, threads: int | None, device: str) -> Codec:
        skipped: list[tuple[str, str]] = []
        for name in backends.AUTO_ORDER:  # read at call time: register() may have added one
            candidate = REGISTRY[name]
            why = candidate.unavailable_reason() or candidate.artifact_problem(manifest, precision)
            if why is None:
                try:
                    codec = cls._open(manifest, candidate, precision, threads, device)
                except FSQDeployError as e:  # e.g. a provider that is listed but does not load
                    why = str(e)
                else:
                    codec.auto_skipped = skipped
                    passed = "".join(f"; skipped {n}: {r}" for n, r in skipped)
                    log.info("codec: backend auto -> %s%s", name, passed)
                    return codec
            skipped.append((name, why))
        tried = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise FSQDeployError(f"codec: no backend can run '{manifest.art}' at {precision} here ({tried}). "
                             "Note: each reason says what that backend needs")

    @classmethod
    def _open(cls, manifest: Manifest, backend: Backend, precision: str, threads: int | None, device: str) -> Codec:
        encoder, decoder = backend.open(manifest, precision, threads=threads, device=device)
        codec = cls(manifest, backend, encoder, decoder, precision)
        try:
            encoder.activate()
            decoder.activate()
        except FSQDeployError:
            codec.close()
            raise
        return codec

    # -- patches <-> indices -----------------------------------------------------------------------
    def encode(self, images: Any) -> Any:
        """Float images [N, 3, S, S] in [0, 1] -> int32 indices [N, W] (a torch tensor for a tensor)."""
        check_images(images, self.image_size, "encode")
        as_torch = type(images).__module__.startswith("torch")
        x = images.detach().cpu().numpy() if as_torch else np.asarray(images)
        out = self._chunked(self.encoder, "images", x.astype(np.float32, copy=False), "indices")
        return _like(out, images) if as_torch else out

    def decode(self, indices: Any) -> Any:
        """Integer indices [N, W] -> float32 images [N, 3, S, S] in [0, 1]."""
        check_indices(indices, self.levels, "decode")
        as_torch = type(indices).__module__.startswith("torch")
        idx = indices.detach().cpu().numpy() if as_torch else np.asarray(indices)
        out = self._chunked(self.decoder, "indices", idx.astype(np.int32, copy=False), "images")
        return _like(out, indices) if as_torch else out

    def _chunked(self, runner: Runner, name: str, x: np.ndarray, out_name: str, chunk: int = 1024) -> np.ndarray:
        if len(x) <= chunk:
            return runner.infer({name: np.ascontiguousarray(x)})[out_name]
        parts = [runner.infer({name: np.ascontiguousarray(x[i : i + chunk])})[out_name]
                 for i in range(0, len(x), chunk)]
        return np.concatenate(parts)

    # -- images of any size <-> .fsq bitstreams (the C++ fsq::Codec's compress/decompress) ----------
    def encode_image(self, image: np.ndarray) -> tuple[FsqHeader, np.ndarray]:
        """uint8 [H, W, 3] -> the .fsq header and int32 indices [patches, W]: the image padded with its
        edge pixels to whole patches, tiled row by row, encoded."""
        patches, _, _ = to_patches(image, self.image_size)
        header = FsqHeader.for_image(self.model_id, image.shape[0], image.shape[1], self.image_size, self.levels)
        return header, self.encode(patches)

    def decode_image(self, header: FsqHeader, indices: np.ndarray) -> np.ndarray:
        """A header and indices this model wrote -> uint8 [H, W, 3]; another model's are refused."""
        check_model(header, self.model_id, self.levels)
        if header.patch_size != self.image_size:
            raise FSQDeployError(
                f"decompress: the file has {header.patch_size}-pixel patches, the model {self.image_size}")
        patches = self.decode(indices)
        return from_patches(patches, header.grid_rows, header.grid_cols, header.image_height, header.image_width)

    def compress(self, image: np.ndarray) -> bytes:
        """uint8 [H, W, 3] -> the whole .fsq file (docs/bitstream.md)."""
        return write_fsq(*self.encode_image(image))

    def decompress(self, data: bytes) -> np.ndarray:
        """The bytes of an .fsq file this model wrote -> uint8 [H, W, 3]."""
        return self.decode_image(*read_fsq(data))

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        self.encoder.deactivate()
        self.decoder.deactivate()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Codec({str(self.art)!r}, backend={self.backend!r}, precision={self.precision!r})"


def _like(array: np.ndarray, reference: Any) -> Any:
    import torch

    return torch.from_numpy(array).to(reference.device)
