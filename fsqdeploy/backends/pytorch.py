"""The PyTorch reference backend: the checkpoint that travels in ART/checkpoint, run eagerly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.backends.base import Runner


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

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = FSQVAE.load(self.checkpoint_dir, self.device)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            if self.graph == "encoder":
                x = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(self.device)
                idx = self.model.quantizer.indices(self.model.encoder(x))
                return {"indices": idx.to(torch.int32).cpu().numpy()}
            idx = torch.from_numpy(np.ascontiguousarray(feed["indices"])).to(self.device)
            mixed = self.model.quantizer.indices_to_decoder_input(idx.long())
            return {"images": torch.sigmoid(self.model.decoder(mixed)).float().cpu().numpy()}

    def _deactivate(self) -> None:
        self.model = None
