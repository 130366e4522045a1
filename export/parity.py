"""The export-time parity gate: ONNX Runtime (CPU, default optimizations) against PyTorch.

Running and comparing are separate steps: each check runs both sides on the same inputs, then
counts disagreements (the image check through ``fsqdeploy.compare``, the one comparator; the
boundary checks feed the quantizer latents no image would reach). Three checks:

1. Images (the run's test split, plus random images in the tests) through both encoders at batch
   sizes 1, 7 and 256: indices must agree exactly; the decoders, fed PyTorch's indices, must agree
   within 1e-5. Batch 1 uses the first 64 images only, to keep the export fast. Spatial (conv)
   models, whose graphs take any height and width: the test photos whole (edge-padded to multiples
   of f) at batch 1, and crops of 1x1, 4x4, 3x8 and 8x3 latent cells at batch 1 and 7.
2. Boundaries, at the quantizer itself: latents placed exactly on every float32 decision
   threshold and one float32 ulp either side, fed to each stage's FSQQuantize (a subgraph cut from
   the exported encoder) and to ``FSQ.indices_from_latent``; and latents at the first stage's
   boundaries, near the later stages' boundaries and at random, fed to the whole quantizer chain
   and to ``ResidualFSQ.indices``. Agreement must be exact.
3. All-zeros and all-ones images through both whole encoders and decoders.

Spatial graphs quantize a grid [N, D, h, w]; the boundary latents are fed to them as 1x1 grids.

The PyTorch side is the model as trained (BatchNorm not folded, oneDNN kernels); ONNX Runtime runs
folded convolutions on MLAS, so the latent itself differs by ~1e-8..1e-6. An image whose latent
lies that close to a threshold can flip an index; trained models keep latents near level centres,
so it is rare. The report says how close the flipped ones were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

from fsqdeploy.artifact import INDICES
from fsqdeploy.backends.onnxruntime import ort_session
from fsqdeploy.compare import SessionCodec, compare, run
from fsqdeploy.fsq import ResidualFSQ
from fsqdeploy.images import images_to_float, pad_to_multiple
from fsqdeploy.model import FSQVAE, to_grid, to_vectors
from fsqdeploy.onnxgraph.graph import find_quantizer_stages, validate

if TYPE_CHECKING:  # imported by ort_session when the gate runs: a missing ONNX Runtime is one line
    import onnxruntime as ort

BATCH_SIZES = (1, 7, 256)
BATCH1_IMAGES = 64
IMAGE_TOLERANCE = 1e-5
RANDOM_LATENTS = 256


def stage_inputs(quantizer: ResidualFSQ, z: torch.Tensor) -> list[torch.Tensor]:
    """Each stage's input u_k, computed as ResidualFSQ.indices computes it."""
    u, out = z, []
    for k, stage in enumerate(quantizer.stages):
        out.append(u)
        if k + 1 < len(quantizer.stages):
            u = (u - stage.centres(stage.indices_from_latent(u))) * quantizer.residual_gain(k)
    return out


def threshold_distance(u: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """|u - t| for the nearest finite threshold t of each dimension; [N, D]."""
    gaps = np.abs(u[..., None].astype(np.float64) - thresholds[None].astype(np.float64))
    return np.where(np.isfinite(thresholds)[None], gaps, np.inf).min(-1)


# -- images ----------------------------------------------------------------------------------------


class PyTorchReference:
    """The model as trained (BatchNorm unfolded, oneDNN) as a codec for ``fsqdeploy.compare.run``.
    Each encode also keeps its latents' distance to the nearest threshold of their stage ([n, W]:
    the stage inputs side by side, as the indices are), so a report can say how close flips were."""

    def __init__(self, model: FSQVAE):
        self.model = model
        self.thresholds = [s.tables(torch.device("cpu"))[0].numpy() for s in model.quantizer.stages]
        self.distances: list[np.ndarray] = []

    def encode(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = self.model.encoder(torch.from_numpy(images))
            vectors = to_vectors(z) if z.dim() == 4 else z  # spatial: FSQ per grid position
            indices = self.model.quantizer.indices(vectors)
            us = [u.numpy() for u in stage_inputs(self.model.quantizer, vectors)]
        distances = np.concatenate([threshold_distance(u, t) for u, t in zip(us, self.thresholds)], axis=1)
        if z.dim() == 4:  # back to the grid [n, W, h, w] the indices come in
            indices = to_grid(indices, z)
            distances = to_grid(torch.from_numpy(distances), z).numpy()
        self.distances.append(distances)
        return indices.numpy()

    def decode(self, indices: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.decode(torch.from_numpy(indices)).numpy()


@dataclass
class ImageParity:
    """The image check over every batch size: sums of ``Fidelity`` counts, the worst decoder error."""

    images: int = 0
    index_values: int = 0  # index comparisons over all batch sizes
    flipped_indices: int = 0
    flipped_images: int = 0
    flipped_distances: list[float] = field(default_factory=list)  # latent to nearest threshold
    max_abs_error: float = 0.0  # ONNX Runtime's decoder on PyTorch's indices vs PyTorch's
    min_threshold_distance: float = float("inf")  # over every latent the gate saw

    @property
    def index_agreement(self) -> float:
        return 1.0 - self.flipped_indices / self.index_values if self.index_values else 1.0

    def add(self, other: ImageParity) -> ImageParity:
        """This check and ``other`` (another image set) as one record."""
        return ImageParity(
            images=self.images + other.images, index_values=self.index_values + other.index_values,
            flipped_indices=self.flipped_indices + other.flipped_indices,
            flipped_images=self.flipped_images + other.flipped_images,
            flipped_distances=self.flipped_distances + other.flipped_distances,
            max_abs_error=max(self.max_abs_error, other.max_abs_error),
            min_threshold_distance=min(self.min_threshold_distance, other.min_threshold_distance),
        )


def compare_images(model: FSQVAE, encoder: ort.InferenceSession, decoder: ort.InferenceSession,
                   images: np.ndarray, batch_sizes: Sequence[int] = BATCH_SIZES) -> ImageParity:
    """Float images [N, 3, H, W] in [0, 1] (one size) through both sides at each batch size."""
    result = ImageParity(images=len(images))
    onnxruntime = SessionCodec(encoder, decoder)
    for b in batch_sizes:
        subset = images[:BATCH1_IMAGES] if b == 1 else images
        pytorch = PyTorchReference(model)
        ref = run(pytorch, subset, b)
        got = run(onnxruntime, subset, b, reference_indices=ref.indices)
        fidelity = compare(ref, got)
        dist = np.concatenate(pytorch.distances)
        result.index_values += ref.indices.size
        result.flipped_indices += fidelity.flipped_indices
        result.flipped_images += fidelity.flipped_images
        result.flipped_distances += [float(v) for v in dist[got.indices != ref.indices]]
        result.min_threshold_distance = min(result.min_threshold_distance, float(dist.min()))
        result.max_abs_error = max(result.max_abs_error, float(fidelity.max_abs_error))
    return result


# -- boundaries ------------------------------------------------------------------------------------


def boundary_rows(thresholds: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows [3 * T, D]: row (j, s) puts each dimension on its j-th threshold moved s in {-1, 0, +1}
    float32 ulps. Dimensions with fewer thresholds reuse their last one. Returns (rows, #placements)."""
    d, t = thresholds.shape
    finite = np.isfinite(thresholds)
    last = finite.sum(1) - 1  # index of each row's last finite threshold
    rows, placements = [], 0
    for j in range(t):
        base = thresholds[np.arange(d), np.minimum(j, last)]
        placements += 3 * int(finite[:, j].sum())
        rows += [np.nextafter(base, np.float32(-np.inf)), base, np.nextafter(base, np.float32(np.inf))]
    return np.stack(rows).astype(np.float32), placements


def residual_boundary_latents(quantizer: ResidualFSQ) -> np.ndarray:
    """Latents z whose later-stage inputs land within a few ulps of those stages' thresholds.

    Back-solves u_i = centre_i + u_{i+1} / L_i from each target, assuming every earlier stage picks
    its middle level, then takes z and its float32 neighbours. (Exact hits are generally impossible:
    one ulp of z moves u_k by about prod(L) ulps; the per-stage check covers exact placements.)
    """
    cpu = torch.device("cpu")
    out = []
    for k in range(1, len(quantizer.stages)):
        targets, _ = boundary_rows(quantizer.stages[k].tables(cpu)[0].numpy())
        z = targets.astype(np.float64)
        for i in reversed(range(k)):
            stage = quantizer.stages[i]
            levels = np.array(stage.level_list())
            centres = stage.tables(cpu)[1].numpy().astype(np.float64)
            middle = centres[np.arange(len(levels)), levels // 2]
            z = middle + z / levels
        z32 = z.astype(np.float32)
        out += [np.nextafter(z32, np.float32(-np.inf)), z32, np.nextafter(z32, np.float32(np.inf))]
    return np.concatenate(out) if out else np.zeros((0, quantizer.latent_dim), np.float32)


def extract(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """The subgraph from ``inputs`` to ``outputs``, with the local functions it calls."""
    return onnx.utils.Extractor(validate(model, "parity")).extract_model(inputs, outputs)


@dataclass
class BoundaryParity:
    inputs: int = 0  # boundary latent vectors fed (exact placements and crafted residual ones)
    placements: int = 0  # values placed exactly on or one ulp beside a threshold
    random: int = 0  # random latents fed to the chain as well
    mismatches: int = 0  # index values that differ


def compare_boundaries(model: FSQVAE, encoder: onnx.ModelProto, seed: int = 0) -> BoundaryParity:
    """The quantizer's subgraphs against PyTorch at and around every decision threshold."""
    q, cpu = model.quantizer, torch.device("cpu")
    stages = find_quantizer_stages(encoder)
    if len(stages) != len(q.stages):
        raise RuntimeError(f"found {len(stages)} quantizer stages in the encoder, expected {len(q.stages)}")
    result = BoundaryParity()

    spatial = model.config.spatial

    def run(sub: onnx.ModelProto, inp: str, rows: np.ndarray, ref: torch.Tensor) -> None:
        # A spatial graph's quantizer reads a grid [N, D, h, w]: each row is one 1x1 grid.
        feed = rows.reshape(*rows.shape, 1, 1) if spatial else rows
        got = ort_session(sub).run(None, {inp: feed})[0].reshape(len(rows), -1)
        result.inputs += len(rows)
        result.mismatches += int((got != ref.numpy()).sum())

    # Each stage alone: exact placements on its own thresholds.
    for stage, where in zip(q.stages, stages):
        rows, placements = boundary_rows(stage.tables(cpu)[0].numpy())
        result.placements += placements
        sub = extract(encoder, [where.latent], [where.indices])
        run(sub, where.latent, rows, stage.indices_from_latent(torch.from_numpy(rows)))

    # The whole chain latent -> indices, residual arithmetic included.
    first, _ = boundary_rows(q.stages[0].tables(cpu)[0].numpy())
    rng = np.random.default_rng(seed)
    scale = float(np.abs(first).max())
    random = rng.uniform(-1.5 * scale, 1.5 * scale, (RANDOM_LATENTS, q.latent_dim)).astype(np.float32)
    rows = np.concatenate([first, residual_boundary_latents(q), random])
    chain = extract(encoder, [stages[0].latent], [INDICES])
    with torch.no_grad():
        run(chain, stages[0].latent, rows, q.indices(torch.from_numpy(rows)))
    result.inputs -= len(random)
    result.random = len(random)
    return result


# -- the gate --------------------------------------------------------------------------------------


# -- the image sets --------------------------------------------------------------------------------

# A set of same-size float images [N, 3, H, W] and the batch sizes the gate runs it at.
ImageSet = tuple[np.ndarray, tuple[int, ...]]

# Spatial models: crop sizes in latent cells (rows, cols): the smallest grid, a square one, and
# wide and tall non-square ones, so no axis is only ever seen equal to the other.
CROP_CELLS = ((1, 1), (4, 4), (3, 8), (8, 3))
CROPS_PER_SIZE = 7


def patch_image_sets(images: np.ndarray) -> list[ImageSet]:
    """Patch models: the test images at every batch size of the gate."""
    return [(images, BATCH_SIZES)]


def spatial_image_sets(photos: Sequence[np.ndarray], f: int, seed: int = 0) -> list[ImageSet]:
    """Spatial models, from whole uint8 photos [H, W, 3]: each photo whole (edge-padded to multiples
    of f, as compress pads it) at batch 1, then ``CROPS_PER_SIZE`` crops of every ``CROP_CELLS``
    size, taken across the photos at seeded positions, at batch 1 and all at once."""
    rng = np.random.default_rng(seed)
    sets: list[ImageSet] = []
    for photo in photos:
        padded = pad_to_multiple(np.asarray(photo), f)
        sets.append((images_to_float(padded.transpose(2, 0, 1)[None].copy()), (1,)))
    for rows, cols in CROP_CELLS:
        h, w = rows * f, cols * f
        fits = [p for p in photos if p.shape[0] >= h and p.shape[1] >= w]
        if not fits:
            continue
        crops = []
        for i in range(CROPS_PER_SIZE):
            p = fits[i % len(fits)]
            y, x = int(rng.integers(0, p.shape[0] - h + 1)), int(rng.integers(0, p.shape[1] - w + 1))
            crops.append(p[y : y + h, x : x + w].transpose(2, 0, 1))
        sets.append((images_to_float(np.stack(crops)), (1, CROPS_PER_SIZE)))
    return sets


def constant_images(model: FSQVAE) -> np.ndarray:
    """All-zeros and all-ones images at the patch size, or (spatial) 4f x 6f."""
    cfg = model.config
    h, w = (4 * cfg.downsample, 6 * cfg.downsample) if cfg.spatial else (cfg.image_size, cfg.image_size)
    return np.stack([np.zeros((3, h, w), np.float32), np.ones((3, h, w), np.float32)])


# -- the gate --------------------------------------------------------------------------------------


@dataclass
class ParityReport:
    data: str
    images: ImageParity
    constant_images: ImageParity
    boundaries: BoundaryParity
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    image_sizes: list[tuple[int, int]] | None = None  # spatial models: every (H, W) the gate ran
    tolerance: float = IMAGE_TOLERANCE

    @property
    def max_abs_error(self) -> float:
        return max(self.images.max_abs_error, self.constant_images.max_abs_error)

    @property
    def adversarial_mismatches(self) -> int:
        return self.boundaries.mismatches + self.constant_images.flipped_indices

    @property
    def passed(self) -> bool:
        return (self.images.flipped_indices == 0 and self.adversarial_mismatches == 0
                and self.max_abs_error <= self.tolerance)

    def to_manifest(self) -> dict[str, Any]:
        record = {
            "data": self.data,
            "images": self.images.images,
            "batch_sizes": list(self.batch_sizes),
            "batch1_images": min(BATCH1_IMAGES, self.images.images),
            "index_agreement": self.images.index_agreement,
            "max_abs_error": self.max_abs_error,
            "image_tolerance": self.tolerance,
            "min_threshold_distance": self.images.min_threshold_distance,
            "adversarial_cases": self.boundaries.inputs + self.constant_images.images,
            "adversarial_placements": self.boundaries.placements,
            "adversarial_mismatches": self.adversarial_mismatches,
            "passed": self.passed,
        }
        if self.image_sizes is not None:
            record["image_sizes"] = [list(hw) for hw in self.image_sizes]
            record["batch1_images"] = self.images.images  # every set runs at batch 1 too
        return record

    def failure(self) -> str:
        """One line: what disagreed, by how much, and how close to a threshold the flips were."""
        im, parts = self.images, []
        if im.flipped_indices:
            near = sorted(im.flipped_distances)[:5]
            parts.append(
                f"{im.flipped_indices} of {im.index_values} indices in {im.flipped_images} image(s) "
                f"differ (latent distance to the nearest threshold: {', '.join(f'{d:.2g}' for d in near)})"
            )
        if self.adversarial_mismatches:
            parts.append(f"{self.adversarial_mismatches} indices differ on the {self.boundaries.inputs} boundary "
                         "latents and the all-zeros/all-ones images")
        if self.max_abs_error > self.tolerance:
            parts.append(f"max abs error {self.max_abs_error:.3g} > {self.tolerance:g}")
        sizes = "" if self.image_sizes is None else f", sizes {' '.join(f'{h}x{w}' for h, w in self.image_sizes)}"
        return ("parity: ONNX Runtime and PyTorch disagree: " + "; ".join(parts)
                + f" (data {self.data}, {im.images} images, batch sizes {list(self.batch_sizes)}{sizes}). "
                "Note: nothing was written; indices flip only for latents within float32 noise of a threshold")


def run_parity(model: FSQVAE, encoder_path: Path, decoder_path: Path, image_sets: Sequence[ImageSet], data: str
               ) -> ParityReport:
    """Every check of the gate, on the files as written: ``image_sets`` from patch_image_sets or
    spatial_image_sets."""
    encoder, decoder = ort_session(encoder_path), ort_session(decoder_path)
    images = ImageParity()
    for batch, sizes in image_sets:
        images = images.add(compare_images(model, encoder, decoder, batch, batch_sizes=sizes))
    spatial = model.config.spatial
    return ParityReport(
        data=data,
        images=images,
        constant_images=compare_images(model, encoder, decoder, constant_images(model), batch_sizes=(2,)),
        boundaries=compare_boundaries(model, onnx.load(str(encoder_path))),
        batch_sizes=tuple(sorted({b for _, sizes in image_sets for b in sizes})),
        image_sizes=[(int(b.shape[2]), int(b.shape[3])) for b, _ in image_sets] if spatial else None,
    )
