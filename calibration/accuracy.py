"""How close an INT8 codec is to the FP32 one: index agreement and decoded PSNR, and the targets.

- Index agreement: the fraction of equal entries of the INT8 and FP32 encoders' indices for the
  same images (all N x W entries), as in the export's parity gate. Target: at least 0.99.
- Decoded PSNR: the mean over images of the per-image PSNR of a round trip against its input
  (``fsqdeploy.metrics.psnr``, what training and ``fsqdeploy eval`` report). "Within 0.5 dB" means
  ``PSNR(decode_int8(encode_int8(x)), x) >= PSNR(decode_fp32(encode_fp32(x)), x) - 0.5``.

Both are fields of ``fsqdeploy.compare``'s record (the one comparator, FP32 as the reference):
``index_agreement``, and ``reference_psnr_vs_input`` / ``psnr_vs_input``, which the calibration
record calls ``psnr_fp32`` / ``psnr_int8``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsqdeploy import compare as comparison
from fsqdeploy.compare import Fidelity, SessionCodec, batched

TARGET_AGREEMENT = 0.99
TARGET_PSNR_DROP = 0.5  # dB
EVAL_BATCH = 256


def run(sess: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """One session's only output for its only input, in batches (the sensitivity pass scores one
    graph at a time; whole codecs go through ``fsqdeploy.compare.run``)."""
    name = sess.get_inputs()[0].name
    return batched(lambda b: sess.run(None, {name: b})[0], x, batch)


def psnr_per_image(decoded: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of float decoded images against the float originals."""
    from fsqdeploy.metrics import psnr

    return psnr(decoded, images).double().numpy()


def lower_bound(per_image: np.ndarray) -> float:
    """One-sided 95% lower confidence bound of the mean of per-image values (normal approximation).

    The sensitivity pass requires its targets to hold at this bound, not just at the sample mean,
    so that what holds on a few hundred held-out images holds on the next few hundred too.
    """
    values = np.asarray(per_image, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean())
    return float(values.mean() - 1.645 * values.std(ddof=1) / np.sqrt(len(values)))


@dataclass(frozen=True)
class Accuracy:
    """The targets' view of a comparison of the INT8 codec (candidate) with the FP32 one (reference)."""

    index_agreement: float
    psnr_fp32: float  # the comparison's reference_psnr_vs_input
    psnr_int8: float  # its psnr_vs_input

    @classmethod
    def from_fidelity(cls, fidelity: Fidelity) -> Accuracy:
        if fidelity.psnr_vs_input is None or fidelity.reference_psnr_vs_input is None:
            raise ValueError("accuracy: the comparison was made without the input images")
        return cls(fidelity.index_agreement, fidelity.reference_psnr_vs_input, fidelity.psnr_vs_input)

    @property
    def psnr_delta(self) -> float:
        return self.psnr_int8 - self.psnr_fp32

    @property
    def agreement_met(self) -> bool:
        return self.index_agreement >= TARGET_AGREEMENT

    @property
    def psnr_met(self) -> bool:
        return self.psnr_delta >= -TARGET_PSNR_DROP

    @property
    def targets_met(self) -> bool:
        return self.agreement_met and self.psnr_met

    def to_json(self) -> dict[str, Any]:
        return {"index_agreement": self.index_agreement, "psnr_fp32": self.psnr_fp32, "psnr_int8": self.psnr_int8,
                "psnr_delta": self.psnr_delta, "targets_met": self.targets_met}

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Accuracy:
        """Back from ``to_json`` (a record's ``results``); the derived fields are recomputed."""
        return cls(stored["index_agreement"], stored["psnr_fp32"], stored["psnr_int8"])

    def summary(self) -> str:
        def mark(ok: bool) -> str:
            return "met" if ok else "NOT met"

        return (f"index agreement {100 * self.index_agreement:.2f}% (target >= {100 * TARGET_AGREEMENT:g}%: "
                f"{mark(self.agreement_met)}), decoded PSNR {self.psnr_int8:.2f} dB vs FP32 {self.psnr_fp32:.2f} dB "
                f"({self.psnr_delta:+.2f} dB, target >= -{TARGET_PSNR_DROP:g}: {mark(self.psnr_met)})")


def measure(images: np.ndarray, fp32: tuple[Any, Any], int8: tuple[Any, Any]) -> Accuracy:
    """Both codecs (encoder, decoder sessions) on float images in [0, 1]."""
    reference = comparison.run(SessionCodec(*fp32), images, EVAL_BATCH)
    candidate = comparison.run(SessionCodec(*int8), images, EVAL_BATCH)
    return Accuracy.from_fidelity(comparison.compare(reference, candidate, images))
