"""The artifact contract: what ART holds, under which names, for which model, and how it was proven.

This is the Python twin of runtime/cpp/include/fsq/manifest.hpp and the one home of:
- the layout: every file name an artifact can hold (``graph_file``, ``engine_file``, sidecars,
  ``config.json``, ``checkpoint/``), per graph, precision and target runtime;
- the I/O contract (``IMAGES``, ``INDICES``, ``io_contract``);
- ``Manifest``: ART/manifest.json read, checked and typed once, with hash verification that says
  one thing (``"<component>: 'ART' failed verification: ... Note: export again"``) and the
  evaluation data the export proved itself on (``default_data``).

Later stages (FP16/INT8 graphs, TensorRT engines) add their files with ``add_files``; ``model_id``
(the checkpoint's model.safetensors sha256) never changes, so bitstreams stay tied to the model.
docs/artifacts.md lists every field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsqdeploy.config import ARCHS, CONFIG_FILE  # noqa: F401 - ART/checkpoint/config.json is a run's config.json
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import read_format_json, sha256_file, write_json_atomic

MANIFEST_FILE = "manifest.json"
# The PyTorch reference travels with the graphs: ART/checkpoint/{config.json, model.safetensors}.
CHECKPOINT_DIR = "checkpoint"
ARTIFACT_FORMAT = "fsqdeploy-artifact"
ARTIFACT_VERSION = 1
REQUIRED_FIELDS = ("model_id", "levels", "latent_dim", "code_width", "image_size", "stages",
                   "temperature", "opset", "io", "files")
# How many test-split images the export's parity gate runs unless told otherwise; check, bench and
# calibrate evaluate on as many by default.
DEFAULT_EVAL_IMAGES = 512

# -- the layout ------------------------------------------------------------------------------------

GRAPHS = ("encoder", "decoder")
# Every precision any file or backend speaks of; each backend declares the subset it runs.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Precisions that have graph files of their own (bf16 is a runtime setting over the fp32 graphs).
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
# TensorRT's timing cache, kept in ART by export --trt unless --timing-cache points elsewhere.
TIMING_CACHE_FILE = "timing.cache"
# The codec's I/O contract: tensor names, and the one symbolic dimension.
IMAGES, INDICES = "images", "indices"
BATCH = "batch"
HEIGHT, WIDTH = "height", "width"  # a spatial model's symbolic image dims
GRID_HEIGHT, GRID_WIDTH = "grid_height", "grid_width"  # and its latent grid's


def graph_file(graph: str, precision: str = "fp32", target: str = "onnxruntime") -> str:
    """The ONNX file of ``graph`` ('encoder' | 'decoder') at ``precision``:

    - fp32: encoder.onnx; fp16: encoder.fp16.onnx (export --precision fp16);
    - int8: encoder.int8.onnx, the QDQ graphs shaped for ONNX Runtime's CPU kernels, or with
      ``target="tensorrt"`` encoder.int8.trt.onnx, TensorRT's symmetric Q/DQ graphs (both written
      by fsqdeploy calibrate)."""
    if graph not in GRAPHS:
        raise ValueError(graph)
    if precision == "fp32":
        return f"{graph}.onnx"
    if precision == "int8" and target == "tensorrt":
        return f"{graph}.int8.trt.onnx"
    return f"{graph}.{precision}.onnx"


def engine_file(graph: str, precision: str) -> str:
    return f"{graph}.{precision}.plan"


def engine_source(graph: str, precision: str) -> str:
    """The ONNX file an engine of ``precision`` is built from: the exported graphs for fp32 and fp16,
    and for int8 the TensorRT QDQ graphs of fsqdeploy calibrate (symmetric INT8, nothing rewritten;
    calibration/tensorrt_graphs.py), not the ONNX Runtime ones."""
    return graph_file(graph, precision, target="tensorrt")


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def layers_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".layers.json")


def how_to_make(name: str) -> str:
    """What the user runs to get file ``name`` into an artifact (the Note of a 'has no' error)."""
    if name.endswith(".plan"):
        return "build it on this GPU with fsqdeploy export ART --trt --precision " + name.split(".")[1]
    if ".int8." in name:
        return "calibrate it with fsqdeploy calibrate"
    if ".fp16." in name:
        return "export it with --precision fp16"
    return "export it first"


def io_contract(image_size: int, code_width: int, spatial: bool = False
                ) -> dict[str, dict[str, list[dict[str, object]]]]:
    """The manifest's ``io``: names, dtypes and shapes. Patch models: "batch" is the only symbolic
    dim. Spatial models: images [batch, 3, height, width] (multiples of the downsampling factor f)
    and indices channels-first [batch, D, grid_height, grid_width] = height/f x width/f."""
    if spatial:
        images = {"name": IMAGES, "dtype": "float32", "shape": [BATCH, 3, HEIGHT, WIDTH]}
        indices = {"name": INDICES, "dtype": "int32", "shape": [BATCH, code_width, GRID_HEIGHT, GRID_WIDTH]}
    else:
        images = {"name": IMAGES, "dtype": "float32", "shape": [BATCH, 3, image_size, image_size]}
        indices = {"name": INDICES, "dtype": "int32", "shape": [BATCH, code_width]}
    return {"encoder": {"inputs": [images], "outputs": [indices]},
            "decoder": {"inputs": [indices], "outputs": [images]}}


# -- the manifest ----------------------------------------------------------------------------------


@dataclass
class Manifest:
    """ART/manifest.json, typed. ``sections`` holds the optional records later stages add
    (``parity``, ``fp16``, ``int8``, ``tensorrt``, ``producer``, ...) as written."""

    art: Path
    model_id: str
    levels: list[int]
    latent_dim: int
    code_width: int
    image_size: int
    stages: int
    temperature: float
    opset: int
    io: dict[str, Any]
    files: dict[str, dict[str, Any]]
    sections: dict[str, Any] = field(default_factory=dict)
    arch: str = "paper"  # absent in manifests written before the conv codec: those are paper models
    downsample: int = 16  # f: pixels per latent position along each axis (spatial models)

    @property
    def spatial(self) -> bool:
        """Indices are a grid [N, D, H/f, W/f] and images any H, W multiple of f (``arch`` conv)."""
        return self.arch == "conv"

    @classmethod
    def load(cls, art: str | Path, *, verify: bool = False, component: str = "artifact") -> Manifest:
        """Read and check ART/manifest.json; with ``verify`` also every listed file's size and sha256."""
        manifest = cls.from_dict(Path(art), read_manifest(art))
        if verify:
            manifest.verify(component)
        return manifest

    @classmethod
    def from_dict(cls, art: Path, d: Mapping[str, Any]) -> Manifest:
        d = dict(d)
        try:
            return cls(
                art=Path(art), model_id=str(d.pop("model_id")), levels=[int(v) for v in d.pop("levels")],
                latent_dim=int(d.pop("latent_dim")), code_width=int(d.pop("code_width")),
                image_size=int(d.pop("image_size")), stages=int(d.pop("stages")),
                temperature=float(d.pop("temperature")), opset=int(d.pop("opset")), io=dict(d.pop("io")),
                files={str(k): dict(v) for k, v in d.pop("files").items()},
                arch=str(d.pop("arch", "paper")), downsample=int(d.pop("downsample", 16)), sections=d,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FSQDeployError(f"artifact: '{Path(art) / MANIFEST_FILE}' has a malformed field ({e}). "
                                 "Note: export again") from None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:  # as the C++ manifest reader refuses it: never guess a layout
            raise FSQDeployError(f"artifact: '{self.art / MANIFEST_FILE}' names architecture {self.arch!r}, which "
                                 f"this fsqdeploy does not know ({', '.join(ARCHS)}). Note: use the fsqdeploy "
                                 "version that exported it")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, fields in the order docs/artifacts.md lists them."""
        head = {k: self.sections[k] for k in ("format", "format_version") if k in self.sections}
        core = {"model_id": self.model_id, "arch": self.arch, "downsample": self.downsample,
                "levels": list(self.levels), "latent_dim": self.latent_dim,
                "code_width": self.code_width, "image_size": self.image_size, "stages": self.stages,
                "temperature": self.temperature, "opset": self.opset, "io": self.io, "files": self.files}
        rest = {k: v for k, v in self.sections.items() if k not in head}
        return {**head, **core, **rest}

    # -- files -----------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.files

    def path(self, name: str) -> Path:
        return self.art / name

    def sha256(self, name: str) -> str:
        return str(self.files[name]["sha256"])

    def require(self, name: str, component: str) -> Path:
        """ART/name for a file the manifest lists; else one line that says how to make it."""
        if name not in self.files:
            raise FSQDeployError(f"{component}: '{self.art}' has no {name}. Note: {how_to_make(name)}")
        return self.art / name

    @property
    def checkpoint_dir(self) -> Path:
        return self.art / CHECKPOINT_DIR

    def problems(self, names: Iterable[str] | None = None) -> list[str]:
        """One line per listed file (of ``names``, default all) that is missing, resized or re-hashed."""
        wanted = None if names is None else set(names)
        return [p for p in verify_files(self, self.art)
                if wanted is None or p.split(":")[0] in wanted]

    def verify(self, component: str, names: Iterable[str] | None = None, again: str = "export again") -> None:
        """Raise the one verification error for the first file that does not match the manifest."""
        problems = self.problems(names)
        if problems:
            raise FSQDeployError(f"{component}: '{self.art}' failed verification: {problems[0]}. Note: {again}")

    # -- sections --------------------------------------------------------------------------------
    def section(self, key: str) -> dict[str, Any]:
        """An optional record (``parity``, ``fp16``, ``int8``, ``tensorrt``), {} when absent."""
        value = self.sections.get(key)
        return value if isinstance(value, dict) else {}

    def default_data(self) -> str | None:
        """The data spec the export's parity gate ran on (what check, bench and calibrate default to)."""
        spec = self.section("parity").get("data")
        return spec if isinstance(spec, str) and spec else None

    def default_images(self) -> int:
        return int(self.section("parity").get("images", DEFAULT_EVAL_IMAGES))


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def read_manifest(art_dir: str | Path) -> dict[str, Any]:
    """Read and sanity-check ART/manifest.json; every problem is one FSQDeployError line."""
    art = Path(art_dir)
    if not art.is_dir():
        raise FSQDeployError(f"artifact: directory '{art}' does not exist. Note: create it with fsqdeploy export")
    path = art / MANIFEST_FILE
    manifest = read_format_json(path, component="artifact", fmt=ARTIFACT_FORMAT, version=ARTIFACT_VERSION,
                                describes="an fsqdeploy artifact manifest",
                                missing_note=f"is '{art}' an fsqdeploy export directory?",
                                invalid_note=". Note: export again")
    missing = [k for k in REQUIRED_FIELDS if k not in manifest]
    files = manifest.get("files")
    if missing or not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
        for v in files.values()
    ):
        what = f"lacks {missing}" if missing else "has a malformed 'files' table"
        raise FSQDeployError(f"artifact: '{path}' {what}. Note: export again")
    return manifest


def verify_files(manifest: Mapping[str, Any] | Manifest, art_dir: str | Path) -> list[str]:
    """One problem string per listed file that is missing, resized or re-hashed; [] when all match."""
    art, problems = Path(art_dir), []
    files = manifest.files if isinstance(manifest, Manifest) else manifest["files"]
    for name, entry in files.items():
        path = art / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{name}: size {size} != {entry['size']} in the manifest")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def write_manifest(art_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    write_json_atomic(Path(art_dir) / MANIFEST_FILE, dict(manifest))


def add_files(art_dir: str | Path, names: Iterable[str], updates: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """Hash ``names`` (paths relative to ART) into the manifest's ``files`` and merge ``updates``
    (e.g. {"fp16": {...}}) at the top level; the manifest is replaced atomically.

    ``model_id`` and ``format`` cannot be changed this way: they identify the model.
    """
    art = Path(art_dir)
    manifest = read_manifest(art)
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST_FILE:
            raise FSQDeployError(f"artifact: '{name}' must be a file inside '{art}', not the manifest")
        path = art / name
        if not path.is_file():
            raise FSQDeployError(f"artifact: cannot add '{path}' to the manifest: it does not exist")
        manifest["files"][Path(name).as_posix()] = file_entry(path)
    frozen = {"model_id", "format", "format_version", "files"} & set(updates or {})
    if frozen:
        raise FSQDeployError(f"artifact: {sorted(frozen)} cannot be changed by adding files")
    manifest.update(updates or {})
    write_manifest(art, manifest)
    return manifest
