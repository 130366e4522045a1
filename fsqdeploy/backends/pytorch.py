"""The PyTorch reference backend: the checkpoint that travels in ART/checkpoint, run eagerly, on the
CPU or (``device="cuda"``) on the GPU."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fsqdeploy.artifact import CHECKPOINT_DIR, CONFIG_FILE
from fsqdeploy.backends.base import Backend, Runner
from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    from fsqdeploy.artifact import Manifest


class TorchRunner(Runner):
    """Runs the checkpoint's encoder (images -> indices) or decoder (indices -> images) in PyTorch."""

    name = "torch"

    def __init__(self, checkpoint_dir: str | Path, graph: str, device: str = "cpu", threads: int | None = None):
        super().__init__()
        if graph not in ("encoder", "decoder"):
            raise ValueError(graph)
        self.checkpoint_dir, self.graph, self.device, self.threads = Path(checkpoint_dir), graph, device, threads
        self.model: Any = None

    def _activate(self) -> None:
        import torch

        from fsqdeploy.model import FSQVAE

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise FSQDeployError(f"torch: device {self.device!r} is not available (PyTorch sees no CUDA GPU). "
                                 "Note: use device='cpu'")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = FSQVAE.load(self.checkpoint_dir, self.device)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            if self.model.config.spatial:  # FSQ over the channel axis of a latent grid: FSQVAE's own path
                return self._infer_spatial(feed)
            if self.graph == "encoder":
                x = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(self.device)
                idx = self.model.quantizer.indices(self.model.encoder(x))
                return {"indices": idx.to(torch.int32).cpu().numpy()}
            idx = torch.from_numpy(np.ascontiguousarray(feed["indices"])).to(self.device)
            mixed = self.model.quantizer.indices_to_decoder_input(idx.long())
            return {"images": torch.sigmoid(self.model.decoder(mixed)).float().cpu().numpy()}

    def _infer_spatial(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """images [N, 3, H, W] -> indices int32 [N, D, H/f, W/f], or back (the model checks both)."""
        import torch

        if self.graph == "encoder":
            x = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(self.device)
            return {"indices": self.model.encode(x).to(torch.int32).cpu().numpy()}
        idx = torch.from_numpy(np.ascontiguousarray(feed["indices"])).to(self.device)
        return {"images": self.model.decode(idx).float().cpu().numpy()}

    def _deactivate(self) -> None:
        self.model = None


class TorchBackend(Backend):
    def unavailable_reason(self) -> str | None:
        # find_spec, not import: importing torch takes seconds, and "auto" asks every backend.
        return None if importlib.util.find_spec("torch") else "PyTorch is not installed (pip install torch)"

    def artifact_problem(self, manifest: Manifest, precision: str) -> str | None:
        problem = self.precision_problem(precision)
        if problem is None and not manifest.has(f"{CHECKPOINT_DIR}/{CONFIG_FILE}"):
            problem = (f"'{manifest.art}' holds no checkpoint for the PyTorch reference. "
                       "Note: export it again (ART/checkpoint travels with the graphs)")
        return problem

    def open(self, manifest: Manifest, precision: str, *, threads: int | None = None, device: str = "cpu"
             ) -> tuple[Runner, Runner]:
        ckpt = manifest.checkpoint_dir
        return TorchRunner(ckpt, "encoder", device, threads), TorchRunner(ckpt, "decoder", device, threads)


# The reference every other backend is compared with; last in "auto", the slowest.
TORCH = TorchBackend("torch", ("fp32",), auto_rank=60)
