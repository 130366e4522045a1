"""Writing a run's model files: config.json (how to rebuild the model) and model.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsqdeploy import __version__
from fsqdeploy.config import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CONFIG_FILE, model_config_to_dict
from fsqdeploy.fileio import write_json_atomic, write_with
from fsqdeploy.model import FSQVAE, WEIGHTS_FILE


def checkpoint_config(model: FSQVAE, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json's content: the model fields at the top level, with the current levels and temperature."""
    cfg = model_config_to_dict(model.config)
    cfg["levels"] = model.levels
    cfg["temperature"] = model.quantizer.temperature
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "fsqdeploy_version": __version__,
        **cfg,
        "training": training or {},
    }


def save_model(model: FSQVAE, run_dir: str | Path, training: dict[str, Any] | None = None) -> None:
    """Write RUN/model.safetensors then RUN/config.json, each atomically."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with(run_dir / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    model.config.levels = model.levels
    model.config.temperature = model.quantizer.temperature
    write_json_atomic(run_dir / CONFIG_FILE, checkpoint_config(model, training))
