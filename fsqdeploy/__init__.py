"""fsqdeploy: train, export and verify FSQ-VAE image codecs."""

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import FSQ, ResidualFSQ
from fsqdeploy.model import FSQVAE

__version__ = "0.1.0"
__all__ = ["FSQ", "FSQVAE", "FSQDeployError", "ResidualFSQ", "__version__"]
