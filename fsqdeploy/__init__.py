"""fsqdeploy: train, export and verify FSQ-VAE image codecs.

``FSQ``, ``ResidualFSQ`` and ``FSQVAE`` are imported on first use (PEP 562), because they import
torch: an app that embeds the ONNX Runtime codec (``from fsqdeploy.runtime import Codec``) needs none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fsqdeploy.errors import FSQDeployError

if TYPE_CHECKING:
    from fsqdeploy.fsq import FSQ, ResidualFSQ
    from fsqdeploy.model import FSQVAE

__version__ = "0.1.0"
__all__ = ["FSQ", "FSQVAE", "FSQDeployError", "ResidualFSQ", "__version__"]

_LAZY = {"FSQ": "fsqdeploy.fsq", "ResidualFSQ": "fsqdeploy.fsq", "FSQVAE": "fsqdeploy.model"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fsqdeploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
