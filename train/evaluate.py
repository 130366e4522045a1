"""``fsqdeploy eval``: a run's metrics on a dataset, with FID when local Inception weights are given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsqdeploy.config import TrainConfig, read_config
from fsqdeploy.data import load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import images_to_float
from fsqdeploy.metrics import fixed_bits
from fsqdeploy.model import FSQVAE
from fsqdeploy.train.loop import evaluate, pick_device
from fsqdeploy.train.stats import frechet_distance, inception_features, index_stats, load_feature_extractor


def evaluate_run(
    run: Path, data: str | None, split: str, inception_weights: Path | None, device_name: str = "auto"
) -> dict[str, Any]:
    raw = read_config(run)
    training = raw.get("training", {})
    known = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in training.items() if k in known})
    device = pick_device(device_name)
    model = FSQVAE.load(run, device)
    spec = data or cfg.data
    if model.config.spatial:  # whole photos, coded as fsqdeploy compress codes them
        from fsqdeploy.data import PhotoSplits, load_photos, unseen_photos
        from fsqdeploy.train.conv_loop import evaluate_photos

        if split == "train":
            photos = load_photos(spec, model.config.downsample)
            names = tuple(f"train-{i}" for i in range(len(photos.train)))
            photos = PhotoSplits(photos.train, photos.train, names, photos.source)
        else:  # photos the run never trained on: a folder it never saw counts whole
            unseen = unseen_photos(spec, cfg.data, component="eval")
            photos = PhotoSplits((), unseen.images, unseen.names, unseen.source)
            selection, warning = unseen.selection, unseen.warning
        chosen = {"selection": selection, "warning": warning} if split == "test" else {}
        cells: list[np.ndarray] = []
        features: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])  # rFID: the photos', their reconstructions'
        extractor = None
        if inception_weights is not None:
            if len(photos.test) < 2:
                raise FSQDeployError(f"eval: FID needs at least 2 images, and {photos.source} gives "
                                     f"{len(photos.test)}. Note: evaluate a folder of photos (--data folder:DIR)")
            extractor = load_feature_extractor(inception_weights)

        def add_features(photo: np.ndarray, recon: np.ndarray) -> None:  # each whole photo at its own size
            for into, image in zip(features, (photo, recon)):
                chw = torch.from_numpy(images_to_float(np.ascontiguousarray(image.transpose(2, 0, 1))[None]))
                into.append(inception_features(extractor, chw))

        quality = evaluate_photos(model, photos, cells, add_features if extractor is not None else None)
        code = index_stats(np.concatenate(cells), model.levels)  # one encode per photo serves every metric
        fid = {"fid": frechet_distance(*(np.concatenate(f) for f in features))} if extractor is not None else {}
        return {"data": photos.source, "images": len(photos.test), **chosen, **quality, **fid,
                "bits_per_cell": fixed_bits(model.levels), **_per("cell", code)}
    splits = load_images(spec, model.config.image_size)
    images = splits.test if split == "test" else splits.train
    metrics: dict[str, Any] = {"data": splits.source, "images": int(len(images))}
    metrics.update(evaluate(model, images, cfg, device))
    bits = fixed_bits(model.levels)
    metrics.update(bits_per_image=bits, bits_per_pixel=bits / model.config.image_size**2,
                   **_per("image", index_stats(_image_indices(model, images, device), model.levels)),
                   temperature=model.quantizer.temperature)
    if inception_weights is not None:
        extractor = load_feature_extractor(inception_weights)
        x = torch.from_numpy(images_to_float(images))
        recon = torch.cat([model.decode(model.encode(x[i : i + 256].to(device))).cpu() for i in range(0, len(x), 256)])
        metrics["fid"] = frechet_distance(inception_features(extractor, x), inception_features(extractor, recon))
    return metrics


def _per(unit: str, code: dict[str, Any]) -> dict[str, Any]:
    """index_stats of the evaluated images under eval's names: the entropy per cell (conv) or image (paper)."""
    return {f"entropy_bits_per_{unit}" if k == "entropy_bits" else k: v for k, v in code.items()}


@torch.no_grad()
def _image_indices(model: FSQVAE, images: np.ndarray, device: torch.device) -> np.ndarray:
    """The indices [N, W] of uint8 images [N, 3, S, S] (a patch model's), in batches."""
    return np.concatenate([model.encode(torch.from_numpy(images_to_float(images[i : i + 256])).to(device)).cpu().numpy()
                           for i in range(0, len(images), 256)])
