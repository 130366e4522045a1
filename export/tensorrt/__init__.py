"""ONNX -> TensorRT engines: strongly typed, one batch profile, a reused timing cache, and proof
that the quantizer runs in FP32.

``fsqdeploy export RUN --out ART --trt [--precision fp16]`` builds ``ART/encoder.<p>.plan`` and
``ART/decoder.<p>.plan`` from ``encoder.<p>.onnx`` / ``decoder.<p>.onnx`` (``encoder.onnx`` for
fp32; for int8 calibrate's ``encoder.int8.trt.onnx``). Precision lives in the graph: the network is
strongly typed, so every layer runs in the type its ONNX tensors have. One module per concern:

- ``options``: ``BuildOptions``, what the command passes (imports nothing heavy, so the CLI can
  take its help defaults from it without loading the builder);
- ``network``: the graph the parser reads (FSQ functions inlined, quantizer nodes named
  ``fsq_quantizer/...``), the strongly typed network, the parse, and the quantizer check on the
  parsed network;
- ``inspect``: the quantizer check on the built engine, from TensorRT's layer information;
- ``build``: the builder config, one engine, and ``build_engines`` (atomic, into ART, with the
  timing cache and the manifest).

Nothing here imports tensorrt until a build starts: the bare ``import tensorrt`` inside the build
functions runs only after ``require_tensorrt_and_gpu`` (fsqdeploy/backends/tensorrt_env.py), and is
there so that mypy checks every call. This package cannot build without an NVIDIA GPU; CI
type-checks it against ``tensorrt-stubs``, the CPU tests drive it with a fake tensorrt module, and
the tests marked ``gpu`` run it.
"""
