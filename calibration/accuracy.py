"""How close an INT8 codec is to the FP32 one: index agreement and decoded PSNR, and the targets.

- Index agreement: the fraction of equal entries of the INT8 and FP32 encoders' indices for the
  same images (all N x W entries), as in the export's parity gate. Target: at least 0.99.
- Decoded PSNR: the mean over images of the per-image PSNR of a round trip against its input
  (``fsqdeploy.metrics.psnr``, what training and ``fsqdeploy eval`` report). "Within 0.5 dB" means
  ``PSNR(decode_int8(encode_int8(x)), x) >= PSNR(decode_fp32(encode_fp32(x)), x) - 0.5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

TARGET_AGREEMENT = 0.99
TARGET_PSNR_DROP = 0.5  # dB
EVAL_BATCH = 256


def session(model: onnx.ModelProto | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session: the targets are defined on the CPU kernels bench measures."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # it warns about every initializer the QDQ fusions leave unused
    if threads:
        options.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(sess: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """The session's only output for its only input, in batches."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def index_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def psnr_per_image(decoded: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of float decoded images against the float originals."""
    import torch

    from fsqdeploy.metrics import psnr

    return psnr(torch.from_numpy(decoded), torch.from_numpy(images)).double().numpy()


def mean_psnr(decoded: np.ndarray, images: np.ndarray) -> float:
    return float(psnr_per_image(decoded, images).mean())


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
    index_agreement: float
    psnr_fp32: float
    psnr_int8: float

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
    idx32, idx8 = run(fp32[0], images), run(int8[0], images)
    return Accuracy(index_agreement(idx8, idx32), mean_psnr(run(fp32[1], idx32), images),
                    mean_psnr(run(int8[1], idx8), images))
