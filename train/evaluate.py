"""``fsqdeploy eval``: a run's metrics on a dataset, with FID when local Inception weights are given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fsqdeploy.config import TrainConfig, read_config
from fsqdeploy.data import load_images
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import images_to_float
from fsqdeploy.model import FSQVAE
from fsqdeploy.train.loop import evaluate, pick_device
from fsqdeploy.train.stats import code_stats, frechet_distance, inception_features, load_feature_extractor


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
        if inception_weights is not None:
            raise FSQDeployError("eval: FID is for patch models (--arch paper); conv runs report PSNR and SSIM")
        stats = code_stats(list(model.quantizer.stages))
        chosen = {"selection": selection, "warning": warning} if split == "test" else {}
        return {"data": photos.source, "images": len(photos.test), **chosen, **evaluate_photos(model, photos),
                "bits_per_cell": stats.fixed_bits, "entropy_bits_per_cell": stats.entropy_bits,
                "codebook_usage": stats.usage, "perplexity": stats.perplexity}
    splits = load_images(spec, model.config.image_size)
    images = splits.test if split == "test" else splits.train
    metrics: dict[str, Any] = {"data": splits.source, "images": int(len(images))}
    metrics.update(evaluate(model, images, cfg, device))
    stats = code_stats(list(model.quantizer.stages))
    metrics.update(
        bits_per_image=stats.fixed_bits,
        bits_per_pixel=stats.fixed_bits / model.config.image_size**2,
        entropy_bits_per_image=stats.entropy_bits,
        codebook_usage=stats.usage,
        perplexity=stats.perplexity,
        temperature=model.quantizer.temperature,
    )
    if inception_weights is not None:
        extractor = load_feature_extractor(inception_weights)
        x = torch.from_numpy(images_to_float(images))
        recon = torch.cat([model.decode(model.encode(x[i : i + 256].to(device))).cpu() for i in range(0, len(x), 256)])
        metrics["fid"] = frechet_distance(inception_features(extractor, x), inception_features(extractor, recon))
    return metrics
