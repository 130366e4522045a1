"""``fsqdeploy bench``: run every backend with warm-up and timing, then compare it against PyTorch.

Running and comparing stay apart (as in Polygraphy): ``timing.measure_latency`` times a codec's
runners on batches of the bench images; ``fidelity.measure_fidelity`` runs the same codec once over
the whole fidelity set and compares it with the PyTorch FP32 reference (``fsqdeploy.compare``).
``run.run_bench`` does both for every requested backend and precision and returns the report that
docs/bench.md describes field by field; ``report`` renders it as tables and a plot. One concern a
module:

- ``settings``: what to run (``BackendSpec``, ``BenchSettings``, ``Gates``) and the CLI parsers;
- ``machine``: the CPU, the GPU PyTorch sees, library versions;
- ``timing``: clocks (CUDA events only on a GPU row where PyTorch has CUDA), ``measure``, latency rows;
- ``fidelity``: the reference's outputs, the fidelity row, its gate;
- ``baselines``: JPEG and WebP, one class each; ``ratedistortion``: the codec's rows beside them;
- ``photos``: whole photos through compress/decompress vs the baselines at the file's bytes, the sweep;
- ``run``: the manifest read once, every backend (or its skipped row), the report; ``report``: tables, plot;
  ``rdplot``: the rate-distortion plot of one or more reports.
"""

from fsqdeploy.runtime.bench.fidelity import Reference, check_gate, measure_fidelity, reference_outputs
from fsqdeploy.runtime.bench.run import report_set, run_bench, run_benches
from fsqdeploy.runtime.bench.settings import (
    BackendSpec,
    BenchSettings,
    Gates,
    default_backends,
    parse_backends,
    parse_batch_sizes,
    parse_photo_size,
)
from fsqdeploy.runtime.bench.timing import STAGES, measure_latency

__all__ = [
    "STAGES",
    "BackendSpec",
    "BenchSettings",
    "Gates",
    "Reference",
    "check_gate",
    "default_backends",
    "measure_fidelity",
    "measure_latency",
    "parse_backends",
    "parse_batch_sizes",
    "parse_photo_size",
    "reference_outputs",
    "report_set",
    "run_bench",
    "run_benches",
]
