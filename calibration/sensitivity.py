"""``--sensitivity``: find the layers INT8 hurts most and keep them in float until the targets hold.

One layer at a time: for each candidate layer, the graph with only that layer in INT8 (every other
layer float, from the same recorded ranges, so nothing is recalibrated) is scored on the
calibration images: the encoder by index agreement with the FP32 encoder, the decoder by the PSNR
of decoding the FP32 indices. Then, starting from everything in INT8, the worst-scoring layer goes
back to float, then the next, until the target holds on the calibration images (the encoder's
agreement >= 0.99; the round trip through the chosen INT8 encoder and the decoder within 0.5 dB of
FP32). The final numbers are measured afterwards on the test split, which this pass never sees.

Why "only this layer quantized" rather than "only this layer left in float": both cost one graph
per layer, but isolating one layer's error gives a score that does not depend on what the other
layers do, and it is what the issue asks for. Layers interact little here (the encoder's
per-layer losses of agreement add up to within ~0.3% of the all-INT8 loss on the paper shape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import onnx

from fsqdeploy.calibration.quantize import QuantSettings, layer_groups, quantize_graph


@dataclass(frozen=True)
class LayerScore:
    layer: str
    score: float  # encoder: index agreement; decoder: PSNR in dB; with only this layer in INT8

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, "score": self.score}


def candidate_groups(model: onnx.ModelProto, protected: Iterable[str]) -> dict[str, list[str]]:
    """Layer name -> the nodes quantized or kept in float with it (the layer and its Relu)."""
    kept = set(protected)
    return {layer: nodes for layer, nodes in layer_groups(model).items() if layer not in kept}


def keep_worst_in_float(
    model: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    settings: QuantSettings,
    protected: Iterable[str],
    score: Callable[[onnx.ModelProto], float],
    meets: Callable[[onnx.ModelProto], bool],
) -> tuple[list[LayerScore], dict[str, list[str]]]:
    """Scores (worst first) and the layers to keep in float, fewest first, so that ``meets`` holds:
    layer name -> the nodes that go with it (the layer and its Relu).

    ``score(graph)``: higher is better. ``meets(graph)``: the target on the whole INT8 graph.
    """
    protected = set(protected)
    groups = candidate_groups(model, protected)
    every = {n for nodes in groups.values() for n in nodes}

    def graph(float_layers: Iterable[str], quantize_only: str | None = None) -> onnx.ModelProto:
        if quantize_only is not None:
            floats = every - set(groups[quantize_only])
        else:
            floats = {n for layer in float_layers for n in groups[layer]}
        return quantize_graph(model, ranges, settings, protected | floats)

    scores = sorted((LayerScore(layer, score(graph((), layer))) for layer in groups), key=lambda s: s.score)
    kept: list[str] = []
    for candidate in scores:
        if meets(graph(kept)):
            break
        kept.append(candidate.layer)
    return scores, {layer: groups[layer] for layer in kept}
