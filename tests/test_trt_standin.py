"""The strict stand-in tensorrt (tests/trt_standin.py) itself: its table is the stubs', it accepts
nothing else, and it models the branches the project's TensorRT code must handle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from trt_api import TABLE, USED, extract, render, stubs_dir
from trt_standin import ADDRESS_ALIGNMENT, API, FakeCuda, StandIn, make_fake_trt

# -- the table --------------------------------------------------------------------------------------


def test_the_committed_table_is_the_installed_stubs():
    site = stubs_dir()
    if site is None:
        pytest.skip('tensorrt-stubs are not installed (.ci/typecheck.sh installs them: pip install --no-deps '
                    '"tensorrt-stubs>=10.13,<12")')
    assert render(extract(site)) == TABLE.read_text(), "tests/trt_api.json is stale: run python tests/trt_api.py"


def test_the_table_lists_what_the_project_uses():
    assert set(API["classes"]) == set(USED)
    for cls, members in USED.items():
        entry = API["classes"][cls]
        assert set(members) == set(entry["methods"]) | set(entry["attributes"]), cls
    # values as the stubs (10.13) give them
    assert API["enums"]["BuilderFlag"]["members"]["TF32"] == 6
    assert API["enums"]["BuilderFlag"]["members"]["VERSION_COMPATIBLE"] == 13
    assert API["enums"]["NetworkDefinitionCreationFlag"]["members"]["STRONGLY_TYPED"] == 1
    assert API["module"]["float16"] == {"type": "DataType", "value": 1}


# -- a tiny network through every class ---------------------------------------------------------------


def _onnx(path: Path) -> Path:
    """images (N, 4) -> Relu 'latent' -> the quantizer's Round and Cast -> indices (N, 4) int32."""
    nodes = [helper.make_node("Relu", ["images"], ["latent"], name="node_linear"),
             helper.make_node("Round", ["latent"], ["rounded"], name="fsq_quantizer/Round_1"),
             helper.make_node("Cast", ["rounded"], ["indices"], name="fsq_quantizer/Cast_2", to=TensorProto.INT32)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("indices", TensorProto.INT32, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


class Flow:
    """Builder -> network -> parser -> config -> plan -> engine -> context, as build.py does it."""

    def __init__(self, s: StandIn, path: Path, *, detailed: bool = True, version_compatible: bool = False):
        trt = self.trt = s.module
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        self.network = self.builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        self.parser = trt.OnnxParser(self.network, self.logger)
        assert self.parser.parse_from_file(str(path))
        self.config = self.builder.create_builder_config()
        if detailed:
            self.config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if version_compatible:
            self.config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        self.profile = self.builder.create_optimization_profile()
        self.profile.set_shape("images", trt.Dims([1, 4]), trt.Dims([2, 4]), trt.Dims([8, 4]))
        assert self.config.add_optimization_profile(self.profile) == 0
        self.cache = self.config.create_timing_cache(b"")
        assert self.config.set_timing_cache(self.cache, False)
        self.plan = self.builder.build_serialized_network(self.network, self.config)

    def load(self, s: StandIn | None = None, *, host_code: bool = False):
        trt = s.module if s else self.trt
        runtime = trt.Runtime(trt.Logger() if s else self.logger)  # a logger of that module
        runtime.engine_host_code_allowed = host_code
        return runtime.deserialize_cuda_engine(self.plan)


@pytest.fixture
def model(tmp_path) -> Path:
    return _onnx(tmp_path / "tiny.onnx")


def test_every_member_of_the_table_is_there(model):
    s = make_fake_trt()
    flow = Flow(s, model)
    engine = flow.load()
    objects = {"ILogger": flow.logger, "Logger": flow.logger, "Dims": flow.network.get_input(0).shape,
               "Builder": flow.builder, "INetworkDefinition": flow.network, "ILayer": flow.network.get_layer(0),
               "ITensor": flow.network.get_input(0), "OnnxParser": flow.parser, "IBuilderConfig": flow.config,
               "IOptimizationProfile": flow.profile, "ITimingCache": flow.cache, "IHostMemory": flow.plan,
               "Runtime": s.module.Runtime(flow.logger), "ICudaEngine": engine,
               "EngineInspector": engine.create_engine_inspector(),
               "IExecutionContext": engine.create_execution_context()}
    s_parser = make_fake_trt(parse_error=True)
    bad = s_parser.module.OnnxParser(s_parser.module.Builder(s_parser.module.Logger()).create_network(0),
                                     s_parser.module.Logger())
    assert not bad.parse_from_file(str(model))
    objects["ParserError"] = bad.get_error(0)
    for cls, entry in API["classes"].items():
        obj = objects[cls]
        assert cls in type(obj)._api_names()
        for name in entry["methods"]:
            assert callable(getattr(obj, name)), f"{cls}.{name}"
        for name in entry["attributes"]:
            getattr(obj, name)  # raises AttributeError where the stand-in lacks it


# -- nothing else is accepted -------------------------------------------------------------------------


def _strictness_cases():
    def flow(model):
        return Flow(make_fake_trt(), model)

    return [
        ("misspelt method", lambda f: f.builder.create_netwrk(0), AttributeError, "no attribute 'create_netwrk'"),
        ("unknown attribute", lambda f: f.network.num_outputs, AttributeError, "no attribute 'num_outputs'"),
        ("write to an unknown attribute", lambda f: setattr(f.config, "fp16", True), AttributeError, "fp16"),
        ("too many arguments", lambda f: f.config.set_flag(f.trt.BuilderFlag.TF32, True), TypeError,
         "incompatible function arguments"),
        ("too few", lambda f: f.config.set_timing_cache(f.cache), TypeError, "incompatible"),
        ("unknown keyword", lambda f: f.config.set_timing_cache(f.cache, ignore=True), TypeError, "incompatible"),
        ("int for an enum", lambda f: f.config.clear_flag(6), TypeError, r"\(flag: BuilderFlag\)"),
        ("enum for an int", lambda f: f.builder.create_network(f.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),
         TypeError, r"\(flags: int\)"),
        ("str for an int", lambda f: f.config.set_memory_pool_limit(f.trt.MemoryPoolType.WORKSPACE, "1"), TypeError,
         "pool_size: int"),
        ("another enum", lambda f: f.config.set_memory_pool_limit(f.trt.ProfilingVerbosity.DETAILED, 1), TypeError,
         "pool: MemoryPoolType"),
        ("a tuple for Dims", lambda f: f.profile.set_shape("images", (1, 4), (2, 4), (8, 4)), TypeError, "min: Dims"),
        ("None for a reference", lambda f: f.config.set_timing_cache(None, False), TypeError, "cache: ITimingCache"),
        ("str for a buffer", lambda f: f.config.create_timing_cache("cache"), TypeError, "Buffer"),
        ("unknown enum member", lambda f: f.trt.BuilderFlag.FP17, AttributeError, "FP17"),
        ("write to a read-only attribute", lambda f: setattr(f.network, "num_layers", 3), AttributeError, "read-only"),
        ("write of another type", lambda f: setattr(f.config, "builder_optimization_level", "4"), TypeError,
         "arg0: int"),
        ("an enum where another is set", lambda f: setattr(f.config, "profiling_verbosity", 2), TypeError,
         "ProfilingVerbosity"),
        ("no constructor", lambda f: f.trt.ICudaEngine(), TypeError, "No constructor defined"),
        ("a module attribute", lambda f: f.trt.Refitter, AttributeError, "Refitter"),
        ("host memory is not bytes", lambda f: f.plan.decode(), AttributeError, "decode"),
    ], flow


CASES, _FLOW = _strictness_cases()


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_anything_the_stubs_do_not_declare_is_refused(model, call, error, message):
    with pytest.raises(error, match=message):
        call(_FLOW(model))


def test_a_logger_subclass_must_call_the_base_init():
    trt = make_fake_trt().module

    class Forgetful(trt.ILogger):
        def __init__(self):
            self.errors = []

        def log(self, severity, msg):
            pass

    class Careful(Forgetful):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []  # a subclass may add attributes

    with pytest.raises(TypeError, match=r"tensorrt.ILogger.__init__\(\) must be called when overriding __init__"):
        Forgetful()
    assert trt.Builder(Careful()) is not None
    with pytest.raises(RuntimeError, match="pure virtual"):
        trt.ILogger.log(Careful(), trt.ILogger.ERROR, "x")


def test_enums_are_pybind11_scoped_enums():
    trt = make_fake_trt().module
    flag, sev = trt.BuilderFlag.TF32, trt.ILogger.Severity
    assert int(flag) == 6 and flag.name == "TF32" and flag.value == 6 and str(flag) == "BuilderFlag.TF32"
    assert flag != 6 and flag == trt.BuilderFlag(6) and {flag: 1}[trt.BuilderFlag.TF32] == 1
    assert flag != trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED  # another enum, never equal
    assert trt.ILogger.WARNING is sev.WARNING and sev.ERROR <= trt.Logger.ERROR < sev.WARNING
    with pytest.raises(TypeError, match="Expected an enumeration of matching type"):
        assert sev.ERROR < trt.BuilderFlag.TF32
    with pytest.raises(TypeError):
        assert trt.DataType.HALF < trt.DataType.FLOAT  # not an arithmetic enum: no ordering
    assert trt.float16 == trt.DataType.HALF and trt.float32 != trt.float16


def test_tensorrt_11_enums_and_attributes(model):
    """What the stand-in says of TensorRT 11 (NVIDIA/TensorRT v11.1 pyCore.cpp, NvInfer.h, pyGraph.cpp)."""
    s = make_fake_trt(version="11.1.0")
    trt = s.module
    assert trt.__version__ == "11.1.0" and int(trt.BuilderFlag.VERSION_COMPATIBLE) == 12
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0 and int(trt.BuilderFlag.TF32) == 6
    for removed in ("FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS", "WEIGHTLESS"):
        assert not hasattr(trt.BuilderFlag, removed)
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    flow = Flow(s, model)
    tensor = flow.network.get_input(0)
    with pytest.raises(AttributeError, match="read-only"):
        tensor.dtype = trt.float16
    assert tensor.dtype == trt.float32
    # kSTRONGLY_TYPED is ignored in 11; what get_flag answers is a fixture option (default: False)
    assert not flow.network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    s2 = make_fake_trt(version="11.1.0", strongly_typed_flag=True)
    assert Flow(s2, model).network.get_flag(s2.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_the_builder_config_is_tensorrt_s_bitmask(model):
    s = make_fake_trt()
    flow = Flow(s, model, version_compatible=True)
    trt, config = flow.trt, flow.config
    assert config.get_flag(trt.BuilderFlag.TF32)  # on by default
    config.clear_flag(trt.BuilderFlag.TF32)
    assert config.flags == 1 << 13 and not config.get_flag(trt.BuilderFlag.TF32)
    assert config._set == {13} and config._cleared == {6} and s.configs == [config]


# -- failure branches -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, blob, created, accepted", [
    ("ok", b"", True, True),
    ("ok", b"+++", True, True),
    ("ok", b"not a timing cache", False, None),  # corrupt in every mode
    ("corrupt", b"+++", False, None),
    ("corrupt", b"", True, True),  # an empty blob is a new cache
    ("mismatch", b"+++", True, False),
    ("mismatch", b"", True, True),
])
def test_timing_cache_branches(model, mode, blob, created, accepted):
    s = make_fake_trt(cache=mode)
    config = Flow(s, model).config
    cache = config.create_timing_cache(blob)
    assert (cache is not None) == created
    if created:
        assert config.set_timing_cache(cache, False) is accepted
        assert config.set_timing_cache(cache, True) is True
    else:
        assert "timing cache is corrupt" in s.log[-1][1]


def test_builds_add_one_measurement_to_the_attached_cache(model):
    flow = Flow(make_fake_trt(), model)
    assert bytes(flow.cache.serialize()) == b"+" and flow.cache.serialize().nbytes == 1


def test_a_failed_build_is_a_null_engine_with_the_error_logged(model):
    s = make_fake_trt(build_fails=True)
    flow = Flow(s, model)
    assert flow.plan is None and s.log[-1] == ("ERROR", "Error Code 2: Internal Error (out of memory)")


def test_a_build_without_a_profile_fails(model):
    s = make_fake_trt()
    trt = s.module
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(0)
    assert trt.OnnxParser(network, trt.Logger()).parse_from_file(str(model))
    assert builder.build_serialized_network(network, builder.create_builder_config()) is None
    assert "no optimization profile has been defined" in s.log[-1][1]


def test_the_parser_reports_its_errors(model, tmp_path):
    s = make_fake_trt(parse_error=True)
    trt = s.module
    parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
    assert parser.parse_from_file(str(model)) is False and parser.num_errors == 1
    error = parser.get_error(0)
    assert (error.desc(), error.node_name(), error.node_operator()) == ("Assertion failed: unsupported",
                                                                         "node_conv2d", "Conv")
    assert parser.get_error(1) is None
    missing = make_fake_trt().module
    parser = missing.OnnxParser(missing.Builder(missing.Logger()).create_network(0), missing.Logger())
    assert not parser.parse_from_file(str(tmp_path / "nope.onnx")) and "Failed to parse" in parser.get_error(0).desc()


@pytest.mark.parametrize("built, here, version_compatible, host_code, loads", [
    ("10.13.0.35", "10.13.0.35", False, False, True),
    ("10.13.0.35", "10.14.1.48", False, False, False),  # another version: refused
    ("10.13.0.35", "10.14.1.48", True, False, False),  # version-compatible needs host code allowed ...
    ("10.13.0.35", "10.14.1.48", True, True, True),
    ("10.13.0.35", "11.1.0", True, True, True),  # ... and runs on later majors: 10 -> 11
    ("11.1.0", "10.13.0.35", True, True, False),  # never on an older runtime
])
def test_what_a_runtime_deserializes(model, built, here, version_compatible, host_code, loads):
    flow = Flow(make_fake_trt(version=built), model, version_compatible=version_compatible)
    runtime = make_fake_trt(version=here)
    engine = flow.load(runtime, host_code=host_code)
    assert (engine is not None) == loads
    if not loads:
        assert runtime.log[-1][0] == "ERROR"


def test_a_corrupt_plan_or_a_failed_load_is_a_null_engine(model):
    s = make_fake_trt()
    trt = s.module
    assert trt.Runtime(trt.Logger()).deserialize_cuda_engine(b"\x00garbage") is None
    assert "Magic tag does not match" in s.log[-1][1]
    flow = Flow(make_fake_trt(deserialize_fails=True), model)
    assert flow.load() is None


# -- the inspector ----------------------------------------------------------------------------------


def test_inspector_json_in_tensorrt_10_shape(model):
    s = make_fake_trt()
    engine = Flow(s, model).load()
    info = json.loads(engine.create_engine_inspector().get_engine_information(s.module.LayerInformationFormat.JSON))
    assert info["Bindings"] == ["images", "indices"] and "I/O Tensors" not in info
    latent_producer, rnd, cast = info["Layers"]
    assert latent_producer["Metadata"] == "[ONNX Layer: node_linear]"
    assert latent_producer["Outputs"] == [{"Name": "latent", "Location": "Device", "Dimensions": [-1, 4],
                                           "Format/Datatype": "Row major linear FP32"}]
    assert rnd["Inputs"][0]["Name"] == "latent" and cast["Outputs"][0]["Format/Datatype"] == "Row major linear Int32"


def test_inspector_json_in_tensorrt_11_shape(model):
    s = make_fake_trt(version="11.1.0")
    engine = Flow(s, model).load()
    info = json.loads(engine.create_engine_inspector().get_engine_information(s.module.LayerInformationFormat.JSON))
    assert "Bindings" not in info and [t["Name"] for t in info["I/O Tensors"]] == ["images", "indices"]
    assert info["I/O Tensors"][1]["IOMode"] == "Output" and info["I/O Tensors"][1]["DataType"] == "Int32"
    out = info["Layers"][0]["Outputs"][0]
    assert out["DataType"] == "Float" and "(kLINEAR)" in out["Format"] and "Format/Datatype" not in out


@pytest.mark.parametrize("version", ["10.13.0.35", "11.1.0"])
def test_a_foreign_node_hides_the_tensors_it_fuses(model, version):
    s = make_fake_trt(version=version, inspector="foreign", fp16_latent=True)
    engine = Flow(s, model).load()
    info = json.loads(engine.create_engine_inspector().get_engine_information(s.module.LayerInformationFormat.JSON))
    (layer,) = info["Layers"]
    assert layer["Name"] == "{ForeignNode[node_linear...fsq_quantizer/Cast_2]}" and layer["LayerType"] == "Myelin"
    assert layer["Metadata"].split("\x1f") == ["[ONNX Layer: node_linear]", "[ONNX Layer: fsq_quantizer/Round_1]",
                                               "[ONNX Layer: fsq_quantizer/Cast_2]"]
    names = [t["Name"] for t in [*layer["Inputs"], *layer["Outputs"]]]
    assert names == ["images", "indices"]  # the FP16 'latent' is inside, out of the inspector's sight


def test_inspector_below_detailed_verbosity_names_layers_only(model):
    s = make_fake_trt()
    engine = Flow(s, model, detailed=False).load()
    info = json.loads(engine.create_engine_inspector().get_engine_information(s.module.LayerInformationFormat.JSON))
    assert info["Layers"] == ["node_linear", "fsq_quantizer/Round_1", "fsq_quantizer/Cast_2"]


# -- execution contexts -----------------------------------------------------------------------------


def test_contexts_check_shapes_and_addresses_then_compute(model):
    s = make_fake_trt()
    trt = s.module
    context = Flow(s, model).load().create_execution_context()
    assert not context.set_input_shape("images", (9, 4))  # above the profile's 8
    assert not context.set_input_shape("images", [2, 5])  # not the network's 4
    assert not context.set_input_shape("indices", (2, 4))  # an output
    assert not context.execute_async_v3(0)  # nothing bound
    assert context.set_input_shape("images", trt.Dims([2, 4]))
    assert list(context.get_tensor_shape("indices")[0:2]) == [2, 4]
    x, y = torch.rand(2, 4), torch.zeros(2, 4, dtype=torch.int32)
    assert context.set_tensor_address("images", x.data_ptr())
    assert not context.set_tensor_address("images", x.data_ptr() + ADDRESS_ALIGNMENT // 2)
    assert not context.set_tensor_address("latent", y.data_ptr())  # not an I/O tensor
    assert context.set_tensor_address("indices", y.data_ptr())
    assert context.execute_async_v3(0)
    assert np.array_equal(y.numpy(), (x.numpy().astype(np.float64) * 3 + 1).astype(np.int32))


def test_capture_needs_a_warm_context_and_a_side_stream(model):
    s = make_fake_trt()
    s.cuda = cuda = FakeCuda()
    trt = s.module
    context = Flow(s, model).load().create_execution_context()
    x, y = torch.rand(1, 4), torch.zeros(1, 4, dtype=torch.int32)
    context.set_input_shape("images", (1, 4))
    context.set_tensor_address("images", x.data_ptr())
    context.set_tensor_address("indices", y.data_ptr())
    side = cuda.Stream()
    graph = cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="had not run since its shape changed"):
        with cuda.graph(graph, stream=side):
            assert not context.execute_async_v3(side.cuda_stream)
    with pytest.raises(RuntimeError, match="legacy default stream"):
        with cuda.graph(cuda.CUDAGraph(), stream=cuda.default):
            pass
    assert context.execute_async_v3(side.cuda_stream)  # warm-up, runs
    graph = cuda.CUDAGraph()
    with cuda.graph(graph, stream=side):
        assert context.execute_async_v3(side.cuda_stream)  # recorded, not run
    y.zero_()
    graph.replay()
    assert int(y[0, 0]) == int(x[0, 0] * 3 + 1)
    assert not context.execute_async_v3(0x1234)  # not a stream
    assert trt.__version__ == s.version
