"""INT8 for the exported codec: calibration data, QDQ quantization, sensitivity (``fsqdeploy calibrate``).

``calibrate_artifact(ART, data=..., method=...)`` (pipeline.py) writes ``ART/encoder.int8.onnx``,
``ART/decoder.int8.onnx`` and ``ART/calibration.json`` and adds them to the manifest;
``Codec.load(ART, "onnxruntime", precision="int8")`` runs them. docs/calibration.md has the details:
data.py reads images through training's data sources, rewrites.py holds the exact graph rewrites
that let ONNX Runtime use its INT8 kernels, quantize.py the ranges and the QDQ graphs with the FSQ
quantizer kept in float, accuracy.py the targets, sensitivity.py the per-layer pass and record.py
the reuse rules.
"""
