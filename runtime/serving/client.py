"""``TritonCodec``: the Codec interface over a Triton Inference Server that serves a repository
written by ``fsqdeploy triton`` (runtime/serving/triton.py). An app switches by one line::

    codec = Codec.load("art")                                   # local
    codec = TritonCodec("localhost:8000", "fsq")                # served (HTTP; gRPC: port 8001, protocol="grpc")
    indices = codec.encode(images); images = codec.decode(indices)
    data = codec.compress(photo); photo = codec.decompress(data)

It is a ``Codec`` whose two runners send requests instead of running graphs, so validation,
chunking, tiling and the .fsq bitstream are the local Codec's own code. ``model`` names the
ensemble; its steps name the encoder and decoder models, and every one of the three must carry the
same FSQ contract (``parameters``: model_id, levels, ...). With ``model_id``/``levels`` it also
checks the served model is that one; with ``art`` (a local copy of the artifact: its manifest and,
for entropy-coded files, its prior; the graphs are not read) the codec's contract and prior come
from ``art`` and the served contract must match it. Without ``art``, ``compress`` writes fixed-rate
files (coding 0): the entropy coder's prior is not served.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.artifact import IMAGES, INDICES, Manifest
from fsqdeploy.backends.base import Backend, Runner
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.runtime.codec import Codec
from fsqdeploy.runtime.serving.triton import CONTRACT_PREFIX, DEFAULT_NAME, RECONSTRUCTION, manifest_from_contract
from fsqdeploy.validation import check_images

PROTOCOLS = ("http", "grpc")
INSTALL = "Note: pip install 'fsqdeploy[serve]'"
START = "Note: start the server as docs/serving.md says, or check the URL and port (HTTP 8000, gRPC 8001)"
# The contract fields whose difference means another model (the rest follow from them).
IDENTITY = ("model_id", "levels")


def _client_module(protocol: str) -> Any:
    if protocol not in PROTOCOLS:
        raise FSQDeployError(f"triton: unknown protocol {protocol!r}. Note: use http or grpc")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError:
        raise FSQDeployError(f"triton: the {protocol} client needs tritonclient. {INSTALL}") from None
    return module


def _server_error(e: Exception) -> str:
    """The first line of what tritonclient (or the socket under it) said, for a one-line error."""
    message = getattr(e, "message", None)  # InferenceServerException keeps the server's words there
    lines = str(message() if callable(message) else e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class _Connection:
    """One tritonclient client of either protocol, with the calls TritonCodec makes."""

    def __init__(self, url: str, protocol: str, timeout_s: float):
        self.module, self.url, self.protocol = _client_module(protocol), url, protocol
        try:
            if protocol == "http":
                self.client = self.module.InferenceServerClient(url, connection_timeout=timeout_s,
                                                                network_timeout=timeout_s)
            else:
                self.client = self.module.InferenceServerClient(url)
        except Exception as e:  # tritonclient raises bare exceptions for a malformed URL
            raise FSQDeployError(f"triton: cannot make a {protocol} client for {url!r} ({_server_error(e)}). "
                                 "Note: pass HOST:PORT, e.g. localhost:8000") from None
        self.timeout_s = timeout_s

    def config(self, model: str) -> dict[str, Any]:
        """The model's config as JSON (both protocols give the protobuf's field names)."""
        try:
            if self.protocol == "http":
                return dict(self.client.get_model_config(model))
            return dict(self.client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)["config"])
        except Exception as e:
            raise FSQDeployError(f"triton: cannot read model '{model}' from {self.url} ({_server_error(e)}). "
                                 f"{START}") from None

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        requests = []
        for name, array in inputs.items():
            request = self.module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            request.set_data_from_numpy(array)
            requests.append(request)
        wanted = [self.module.InferRequestedOutput(name) for name in outputs]
        extra = {} if self.protocol == "http" else {"client_timeout": self.timeout_s}
        try:
            result = self.client.infer(model, requests, outputs=wanted, **extra)
        except Exception as e:
            raise FSQDeployError(f"triton: model '{model}' at {self.url} failed: {_server_error(e)}") from None
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        self.client.close()


def _parameters(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in dict(config.get("parameters") or {}).items()}


def _numpy_dtype(config: Mapping[str, Any], tensor: str) -> np.dtype:
    from tritonclient.utils import triton_to_np_dtype

    for entry in config.get("input", []):
        if entry["name"] == tensor:
            return np.dtype(triton_to_np_dtype(str(entry["data_type"]).removeprefix("TYPE_")))
    raise FSQDeployError(f"triton: model '{config.get('name')}' has no input {tensor!r}. "
                         "Note: serve a repository written by fsqdeploy triton")


class TritonRunner(Runner):
    """One served model (the encoder or the decoder) as a Runner: batches above the model's
    max_batch_size go as several requests, each at most that large."""

    name = "triton"

    def __init__(self, connection: _Connection, model: str, config: Mapping[str, Any], input_name: str,
                 output_name: str, precision: str):
        super().__init__()
        self.connection, self.model = connection, model
        self.input_name, self.output_name, self.precision = input_name, output_name, precision
        self.max_batch = max(1, int(config.get("max_batch_size", 0)))
        self.input_dtype = _numpy_dtype(config, input_name)

    def _activate(self) -> None:
        try:
            ready = self.connection.client.is_model_ready(self.model)
        except Exception as e:
            raise FSQDeployError(f"triton: cannot reach {self.connection.url} ({_server_error(e)}). {START}") from None
        if not ready:
            raise FSQDeployError(f"triton: model '{self.model}' at {self.connection.url} is not ready. "
                                 "Note: the server's log says why it did not load")

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(feed[self.input_name]).astype(self.input_dtype, copy=False)
        parts = [self.connection.infer(self.model, {self.input_name: np.ascontiguousarray(x[i : i + self.max_batch])},
                                       [self.output_name])[self.output_name]
                 for i in range(0, len(x), self.max_batch)]
        return {self.output_name: parts[0] if len(parts) == 1 else np.concatenate(parts)}


class _Served(Backend):
    """The served codec as Codec sees a backend; its runners are made by TritonCodec, not from ART."""

    def unavailable_reason(self) -> str | None:
        try:
            import tritonclient.http  # noqa: F401
        except ImportError:
            return f"tritonclient is not installed ({INSTALL})"
        return None

    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        raise FSQDeployError("triton: a served codec is opened with TritonCodec(url, model), not Codec.load")


TRITON = _Served("triton", ("fp32", "fp16"))


class TritonCodec(Codec):
    def __init__(self, url: str, model: str = DEFAULT_NAME, protocol: str = "http", *,
                 art: str | Path | None = None, model_id: str | None = None, levels: list[int] | None = None,
                 timeout_s: float = 60.0):
        connection = _Connection(url, protocol, timeout_s)
        try:
            ensemble, encoder_cfg, decoder_cfg = self._configs(connection, model)
            where = f"model '{model}' at {url}"
            served = manifest_from_contract(_parameters(ensemble), where)
            for config in (encoder_cfg, decoder_cfg):
                step = f"model '{config['name']}' at {url}"
                _check_same(served, f"its ensemble {model!r}", manifest_from_contract(_parameters(config), step), step)
            manifest = Manifest.load(art, component="triton") if art is not None else served
            if art is not None:
                _check_same(manifest, f"'{art}'", served, where)
            _check_expected(served, model_id, levels, where)
            precision = _parameters(ensemble).get(CONTRACT_PREFIX + "precision", "fp32")
            encoder = TritonRunner(connection, str(encoder_cfg["name"]), encoder_cfg, IMAGES, INDICES, precision)
            decoder = TritonRunner(connection, str(decoder_cfg["name"]), decoder_cfg, INDICES, IMAGES, precision)
            super().__init__(manifest, TRITON, encoder, decoder, precision)
            encoder.activate()
            decoder.activate()
        except BaseException:
            connection.close()
            raise
        self.connection, self.url, self.model, self.protocol = connection, url, model, protocol
        self.max_batch = int(ensemble.get("max_batch_size", 1))

    @staticmethod
    def _configs(connection: _Connection, model: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The ensemble's config and those of the two models its steps name, encoder first."""
        ensemble = connection.config(model)
        steps = [str(s["model_name"]) for s in (ensemble.get("ensemble_scheduling") or {}).get("step", [])]
        if ensemble.get("platform") != "ensemble" or len(steps) != 2:
            raise FSQDeployError(f"triton: model '{model}' at {connection.url} is not the ensemble of an fsqdeploy "
                                 "repository. Note: pass the codec's name (the folder of REPO without _encoder or "
                                 "_decoder), e.g. fsq")
        return ensemble, connection.config(steps[0]), connection.config(steps[1])

    def roundtrip(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """(indices, reconstruction) of float images [N, 3, H, W], in one request per batch through
        the ensemble (the server keeps the indices between the encoder and the decoder)."""
        if self.spatial:
            check_images(images, None, "encode", multiple_of=self.downsample)
        else:
            check_images(images, self.image_size, "encode")
        x = np.asarray(images, dtype=np.float32)
        indices, reconstructions = [], []
        for i in range(0, len(x), self.max_batch):
            out = self.connection.infer(self.model, {IMAGES: np.ascontiguousarray(x[i : i + self.max_batch])},
                                        [INDICES, RECONSTRUCTION])
            indices.append(out[INDICES])
            reconstructions.append(out[RECONSTRUCTION])
        return np.concatenate(indices), np.concatenate(reconstructions)

    def close(self) -> None:
        super().close()
        self.connection.close()

    def __repr__(self) -> str:
        return f"TritonCodec({self.url!r}, {self.model!r}, protocol={self.protocol!r}, precision={self.precision!r})"


def _check_same(expected: Manifest, label: str, served: Manifest, where: str) -> None:
    for field in IDENTITY:
        want, got = getattr(expected, field), getattr(served, field)
        if want != got:
            raise FSQDeployError(f"triton: {where} serves {field} {got}, {label} has {want}. Note: serve the "
                                 "repository fsqdeploy triton wrote from that artifact, and pass that ART")


def _check_expected(served: Manifest, model_id: str | None, levels: list[int] | None, where: str) -> None:
    if model_id is not None and served.model_id != model_id:
        raise FSQDeployError(f"triton: {where} serves model_id {served.model_id}, {model_id} was expected. "
                             "Note: connect to the server that serves that model")
    if levels is not None and list(served.levels) != [int(v) for v in levels]:
        raise FSQDeployError(f"triton: {where} serves levels {served.levels}, {list(levels)} were expected. "
                             "Note: connect to the server that serves that model")
