"""A strict stand-in for the ``tensorrt`` module (and for the bits of ``torch.cuda`` the runner
touches), for the tests on machines without TensorRT or a GPU.

Strict: every class, method, attribute, enum member and argument type it accepts comes from
tests/trt_api.json, the table of the API the project uses as tensorrt-stubs declare it
(tests/trt_api.py makes it; tests/test_trt_standin.py checks it against the stubs wherever they are
installed). Anything else fails the way pybind11 fails: an unknown attribute or enum member with
AttributeError, a call that matches no overload (arity, an unknown keyword, an argument of another
type) with TypeError, a write to a read-only attribute with AttributeError; a subclass of
``ILogger`` must call ``ILogger.__init__``. Enum members compare only with their own enum, as
pybind11's scoped enums do, and have the stubs' values. What the stand-in returns is checked
against the declared return types too (None only where the C++ returns a pointer). With
``version="11.x"`` the TensorRT 11 differences the project can meet apply (``TRT11`` below).

Modelled, from TensorRT's headers, bindings and docs (cited where used):
- parse: one layer per ONNX node, typed as ONNX infers (strongly typed); a parser error;
- build: the config's flags as TensorRT's bitmask (TF32 on by default), one optimization profile
  checked against the inputs, a null engine (``build_serialized_network`` -> None, error logged),
  the timing cache: None from ``create_timing_cache`` for a blob it cannot read, False from
  ``set_timing_cache`` for a cache from another device unless ``ignore_mismatch``;
- load: a plan from another TensorRT version is refused (None) unless version-compatible, and a
  version-compatible plan needs ``engine_host_code_allowed``; a corrupt plan gives None;
- run: execution contexts check input shapes against the profile, need every tensor's address
  before ``execute_async_v3`` and "compute" by reading the input through its address and writing
  ``expected_output`` of it to the output's address (host memory: the tests bind CPU tensors);
  ``FakeCuda`` gives streams and CUDA graphs that record launches and replay them;
- inspect: TensorRT 10's (``Format/Datatype``, ``Bindings``) or 11's (``Format`` + ``DataType``,
  ``I/O Tensors``) layer JSON, optionally with Myelin ``{ForeignNode[...]}`` layers that list only
  the tensors crossing their boundary.

It proves fsqdeploy's side of each call (names, arities, types, enum values, the order of calls,
what is done with each result, failure branches), never a TensorRT behaviour beyond the rules
above: no kernels, precision, tactics, memory or timing, nor what Myelin really fuses.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import importlib.machinery
import itertools
import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

API: dict[str, Any] = json.loads(Path(__file__).with_name("trt_api.json").read_text())
FAKE_FACTS = {"tensorrt_version": API["module"]["__version__"], "cuda_version": "12.6", "gpu_name": "NVIDIA L4",
              "compute_capability": "8.9"}

# TensorRT 11 (no 11.x tensorrt-stubs exist), for the names the project uses. From NVIDIA/TensorRT
# v11.1: python/src/infer/pyCore.cpp (py::enum_ members) with include/NvInfer.h (enum values), and
# python/src/infer/pyGraph.cpp (ITensor.dtype is def_property_readonly).
TRT11 = {
    "enums": {
        "BuilderFlag": {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                        "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12,
                        "EXCLUDE_LEAN_RUNTIME": 13, "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17,
                        "STRIP_PLAN": 18, "REFIT_IDENTICAL": 19, "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22,
                        "STRICT_NANS": 23, "MONITOR_MEMORY": 24, "EDITABLE_TIMING_CACHE": 26,
                        "DISTRIBUTIVE_INDEPENDENCE": 27},
        # kSTRONGLY_TYPED: "Deprecated in TensorRT 11.0. Strongly typed mode is always enabled. This
        # flag is retained for API compatibility but is ignored." (NvInfer.h)
        "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                                          "PREFER_AOT_PYTHON_PLUGINS": 2},
    },
    "read_only": [("ITensor", "dtype")],
}

_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
          "BOOL": np.bool_, "UINT8": np.uint8}
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 6: "INT32", 7: "INT64", 9: "BOOL", 3: "INT8", 2: "UINT8"}
# Inspector type names, shaped after TensorRT's (10: one "Format/Datatype" string; 11: "DataType"
# plus a "Format", as in the 11.0 migration guide's I/O Tensors example).
_TRT10_FORMAT = {"FLOAT": "Row major linear FP32", "HALF": "Row major linear FP16 format",
                 "BF16": "Row major linear BF16", "INT32": "Row major linear Int32", "INT64": "Row major linear Int64",
                 "BOOL": "Row major linear Bool",
                 "INT8": "Row major linear Int8", "UINT8": "Row major linear UInt8"}
_TRT11_DATATYPE = {"FLOAT": "Float", "HALF": "Half", "BF16": "BFloat16", "INT32": "Int32", "INT64": "Int64",
                   "BOOL": "Bool", "INT8": "Int8", "UINT8": "UInt8"}
_TRT11_FORMAT = {"FLOAT": "Row major linear FP32 format (kLINEAR)", "HALF": "Row major linear FP16 format (kLINEAR)",
                 "BF16": "Row major linear BF16 format (kLINEAR)"}
QUANTIZER_PREFIX = "fsq_quantizer/"  # fsqdeploy.export.tensorrt.network names the quantizer's nodes so
PLAN_FORMAT = "tensorrt-standin-plan"
# setTensorAddress: "The pointer must have at least 256-byte alignment" (NvInferRuntime.h). CPU
# tensors are 64-byte aligned, so that is what is checked here (the CUDA caching allocator gives 512).
ADDRESS_ALIGNMENT = 64


def version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def api_for(version: str) -> dict[str, Any]:
    """The table for a TensorRT version: the stubs' (10.13), with TensorRT 11's differences from 11 on."""
    api = copy.deepcopy(API)
    api["module"]["__version__"] = version
    if version_tuple(version)[:1] >= (11,):
        for name, members in TRT11["enums"].items():
            api["enums"][name]["members"] = dict(members)
        for cls, attr in TRT11["read_only"]:
            api["classes"][cls]["attributes"][attr]["writable"] = False
    return api


# -- strictness -------------------------------------------------------------------------------------


class Enum:
    """A pybind11 scoped enum member: equal only to a member of the same enum with the same value;
    ``<`` and friends only for enums bound ``py::arithmetic()`` (the stubs show ``__lt__``), and only
    within the enum (pybind11: "Expected an enumeration of matching type!")."""

    _enum: ClassVar[str]
    _orders: ClassVar[bool]

    def __init__(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{self._enum}.__init__(): incompatible constructor arguments; got {value!r}")
        self._value, self._name = value, next(
            (k for k, v in type(self).__members__.items() if int(v) == value), "???")

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> int:
        return self._value

    def __int__(self) -> int:
        return self._value

    __index__ = __int__

    def __hash__(self) -> int:
        return hash(self._value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value == self._value  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def _ordered(self, other: object) -> int:
        if not self._orders:
            return NotImplemented  # type: ignore[return-value]
        if type(other) is not type(self):
            raise TypeError("Expected an enumeration of matching type!")
        return other._value  # type: ignore[attr-defined]

    def __lt__(self, other: object) -> bool:
        o = self._ordered(other)
        return NotImplemented if o is NotImplemented else self._value < o

    def __le__(self, other: object) -> bool:
        o = self._ordered(other)
        return NotImplemented if o is NotImplemented else self._value <= o

    def __gt__(self, other: object) -> bool:
        o = self._ordered(other)
        return NotImplemented if o is NotImplemented else self._value > o

    def __ge__(self, other: object) -> bool:
        o = self._ordered(other)
        return NotImplemented if o is NotImplemented else self._value >= o

    def __repr__(self) -> str:
        return f"<{self._enum.split('.')[-1]}.{self._name}: {self._value}>"

    def __str__(self) -> str:
        return f"{self._enum.split('.')[-1]}.{self._name}"


def _make_enum(name: str, spec: dict[str, Any]) -> type[Enum]:
    cls = type(name.split(".")[-1], (Enum,), {"_enum": name, "_orders": spec["orders"], "__members__": {}})
    for member, value in spec["members"].items():
        obj = object.__new__(cls)
        obj._value, obj._name = value, member
        cls.__members__[member] = obj  # type: ignore[attr-defined]
        setattr(cls, member, obj)
    return cls


_SIMPLE = {"int": int, "float": (int, float), "str": str, "bool": bool, "tuple": tuple, "list": list, "dict": dict,
           "slice": slice}


def _accepts(ann: str, value: Any, s: StandIn) -> bool:
    """Whether pybind11 (as the stubs declare it, i.e. as mypy reads it) takes ``value`` for ``ann``."""
    if ann in ("typing.Any", "typing_extensions.Any"):
        return True
    if ann == "None":
        return value is None
    if ann in _SIMPLE:
        if isinstance(value, Enum):
            return False
        if ann == "int" and isinstance(value, float):
            return False
        return isinstance(value, _SIMPLE[ann])
    container = re.fullmatch(r"(list|tuple)\[(.+)\]", ann)
    if container:
        return isinstance(value, _SIMPLE[container.group(1)]) and all(
            _accepts(container.group(2), v, s) for v in value)
    if ann.endswith("Buffer"):
        try:
            memoryview(value)
        except TypeError:
            return False
        return True
    if ann in s.enums:
        return isinstance(value, s.enums[ann])
    if ann in s.api["classes"]:
        return isinstance(value, Strict) and value._s is s and ann in value._api_names()
    return False  # a class the project never gets from the stand-in (IRuntimeConfig, IStreamReader, ...)


def _returns(ann: str, value: Any, s: StandIn) -> bool:
    if value is None and (ann in s.api["classes"] or ann == "str"):
        return True  # a C++ pointer return (an object or a char const*): nullptr is None
    return _accepts(ann, value, s)


def _bind(params: list[list[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    if len(args) > len(params):
        return None
    bound = {p[0]: a for p, a in zip(params, args)}
    names = [p[0] for p in params]
    for k, v in kwargs.items():
        if k in bound or k not in names:
            return None
        bound[k] = v
    if any(p[0] not in bound and p[2] is None for p in params):
        return None
    return bound


def _check_call(s: StandIn, api: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    overloads = s.api["classes"][api]["methods"][method]
    for o in overloads:
        bound = _bind(o["params"], args, kwargs)
        if bound is not None and all(_accepts(ann, bound[n], s) or (default == "None" and bound[n] is None)
                                     for n, ann, default in o["params"] if n in bound):
            return
    supported = "; ".join(f"({', '.join(f'{n}: {a}' for n, a, _ in o['params'])})" for o in overloads)
    given = ", ".join([*(type(a).__name__ for a in args), *(f"{k}={type(v).__name__}" for k, v in kwargs.items())])
    raise TypeError(f"{method}(): incompatible function arguments. The following argument types are supported: "
                    f"{supported}. Invoked with: ({given})")


def _checked(api: str, method: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: Strict, *args: Any, **kwargs: Any) -> Any:
        s = self._s
        _check_call(s, api, method, args, kwargs)
        result = fn(self, *args, **kwargs)
        if method == "__init__":
            object.__setattr__(self, "_initialized", True)
            return None
        returns = [o["returns"] for o in s.api["classes"][api]["methods"][method]]
        if not any(_returns(r, result, s) for r in returns):
            raise AssertionError(f"stand-in bug: {api}.{method} returned {result!r}, the stubs say {returns}")
        return result

    call.__name__ = method
    return call


class _Meta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        api = cls._api_names()  # type: ignore[attr-defined]
        if not any("__init__" in cls._s.api["classes"][a]["methods"] for a in api):  # type: ignore[attr-defined]
            raise TypeError(f"tensorrt.{api[0]}: No constructor defined!")
        obj = cls.__new__(cls)
        obj.__init__(*args, **kwargs)
        if not obj.__dict__.get("_initialized"):
            raise TypeError(f"tensorrt.{api[0]}.__init__() must be called when overriding __init__")
        return obj


class Strict(metaclass=_Meta):
    """Base of the stand-in's classes: members, calls and writes are checked against the table.

    A stand-in class names its stubs class in ``_api``; every public name it defines must be a
    member the table lists (checked when the class is created). Instances made by the stand-in use
    ``_make``; user code constructs only what the stubs give a constructor. Names with a leading
    underscore are the stand-in's own state. A user's subclass (a logger) may add attributes."""

    _api: ClassVar[str]
    _s: ClassVar[StandIn]
    _DUNDER_API = ("__init__", "__len__", "__getitem__")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_api" not in cls.__dict__:
            return  # the per-module binding, or a user's subclass
        entry = API["classes"][cls._api]
        for name, value in list(vars(cls).items()):
            if name.startswith("_") and name not in cls._DUNDER_API:
                continue
            if name in entry["methods"]:
                setattr(cls, name, _checked(cls._api, name, value))
            elif name in entry["attributes"] and isinstance(value, property):
                if (value.fset is not None) != entry["attributes"][name]["writable"]:
                    raise TypeError(f"stand-in bug: {cls._api}.{name} writability differs from the stubs")
            else:
                raise TypeError(f"stand-in bug: {cls._api} defines {name}, which tensorrt-stubs do not declare")

    @classmethod
    def _api_names(cls) -> list[str]:
        return [k.__dict__["_api"] for k in cls.__mro__ if "_api" in k.__dict__]

    @classmethod
    def _make(cls, s: StandIn, **state: Any) -> Any:
        obj = object.__new__(s.classes[cls._api])
        for k, v in state.items():
            object.__setattr__(obj, k, v)
        return obj

    def _attribute(self, name: str) -> dict[str, Any] | None:
        for api in self._api_names():
            spec = self._s.api["classes"][api]["attributes"].get(name)
            if spec is not None:
                return spec
        return None

    def _init(self, name: str, value: Any) -> None:
        """The stand-in sets an attribute's initial value (type-checked, writable or not)."""
        spec = self._attribute(name)
        assert spec is not None and _accepts(spec["type"], value, self._s), f"stand-in bug: {name}={value!r}"
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"'tensorrt.{self._api_names()[0]}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        spec = self._attribute(name)
        user_class = not type(self).__dict__.get("_standin_class")
        if spec is None:
            if user_class:
                object.__setattr__(self, name, value)
                return
            raise AttributeError(f"'tensorrt.{self._api_names()[0]}' object has no attribute '{name}'")
        if not spec["writable"]:
            raise AttributeError(f"can't set attribute '{name}' (read-only in tensorrt.{self._api_names()[0]})")
        if not _accepts(spec["type"], value, self._s):
            raise TypeError(f"(): incompatible function arguments. The following argument types are supported: "
                            f"(self, arg0: {spec['type']}). Invoked with: {type(value).__name__}")
        descriptor = getattr(type(self), name, None)
        if isinstance(descriptor, property):
            descriptor.__set__(self, value)
        else:
            object.__setattr__(self, name, value)


def _log(s: StandIn, logger: Any, severity: str, msg: str) -> None:
    s.log.append((severity, msg))
    logger.log(getattr(s.enums["ILogger.Severity"], severity), msg)


# -- the API ----------------------------------------------------------------------------------------


class ILogger(Strict):
    _api = "ILogger"

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')


class Logger(ILogger):
    _api = "Logger"

    def __init__(self, min_severity: Any = None) -> None:
        self._min = min_severity if min_severity is not None else self._s.enums["ILogger.Severity"].WARNING
        self._messages: list[tuple[Any, str]] = []

    def log(self, severity: Any, msg: str) -> None:
        self._messages.append((severity, msg))


class Dims(Strict):
    _api = "Dims"

    def __init__(self, shape: list[int] | None = None) -> None:
        self._d = list(shape or [])

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._d[index])
        if not -len(self._d) <= index < len(self._d):
            raise IndexError("Out of bounds")
        return self._d[index]

    def __repr__(self) -> str:
        return f"Dims({self._d})"


class ITensor(Strict):
    _api = "ITensor"


class ILayer(Strict):
    _api = "ILayer"

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> Any:
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


class INetworkDefinition(Strict):
    _api = "INetworkDefinition"

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_flag(self, flag: Any) -> bool:
        s = self._s
        if s.major >= 11 and flag == s.enums["NetworkDefinitionCreationFlag"].STRONGLY_TYPED:
            # Ignored in 11 (NvInfer.h); whether getFlag echoes it is not in the open sources, so the
            # stand-in takes the case that breaks code relying on it.
            return s.behaviour["strongly_typed_flag"]
        return bool(self._flags & (1 << int(flag)))

    def get_layer(self, index: int) -> Any:
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def get_input(self, index: int) -> Any:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None


class ParserError(Strict):
    _api = "ParserError"

    def desc(self) -> str:
        return self._desc

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._node_operator


class OnnxParser(Strict):
    _api = "OnnxParser"

    def __init__(self, network: Any, logger: Any) -> None:
        self._network, self._logger, self._errors = network, logger, []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> Any:
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def parse_from_file(self, model: str) -> bool:
        import onnx
        from onnx import shape_inference

        from fsqdeploy.onnxgraph.graph import tensor_types

        s = self._s
        try:
            proto = onnx.load(model)
        except Exception:  # what onnx raises for a missing or unreadable file
            self._errors.append(ParserError._make(s, _desc=f"Failed to parse ONNX model from file: {model}",
                                                  _node_name="", _node_operator=""))
            return False
        if s.behaviour["parse_error"]:
            self._errors.append(ParserError._make(s, _desc="Assertion failed: unsupported", _node_name="node_conv2d",
                                                  _node_operator="Conv"))
            return False
        typed = {k: _ONNX_TO_TRT[v] for k, v in tensor_types(proto).items() if v in _ONNX_TO_TRT}
        try:
            inferred = shape_inference.infer_shapes(proto)
            dims = {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
        except Exception:  # noqa: BLE001 - dimensions are for the inspector's text only
            dims = {}
        dt = s.enums["DataType"]
        network = self._network
        for node in proto.graph.node:
            out_types = [typed.get(o, "FLOAT") for o in node.output]
            if s.behaviour["fp16_quantizer_layer"] and node.name.startswith(QUANTIZER_PREFIX):
                out_types = ["HALF" if t == "FLOAT" else t for t in out_types]
            outputs = []
            for o, t in zip(node.output, out_types):
                tensor = ITensor._make(s)
                tensor._init("name", o)
                tensor._init("shape", _dims(s, dims.get(o, [])))
                tensor._init("dtype", getattr(dt, t))
                outputs.append(tensor)
            layer = ILayer._make(s, _outputs=outputs, _onnx=node, _op=node.op_type)
            layer._init("name", node.name)
            layer._init("metadata", f"[ONNX Layer: {node.name}]")
            network._layers.append(layer)
        initializers = {i.name for i in proto.graph.initializer}
        for v in proto.graph.input:
            if v.name in initializers:
                continue
            tensor = ITensor._make(s)
            tensor._init("name", v.name)
            tensor._init("shape", _dims(s, [d.dim_value if d.HasField("dim_value") else -1
                                            for d in v.type.tensor_type.shape.dim]))
            tensor._init("dtype", getattr(dt, typed[v.name]))
            network._inputs.append(tensor)
        network._outputs = [o.name for o in proto.graph.output]
        network._dims = dims
        return True


def _dims(s: StandIn, shape: list[int]) -> Any:
    return Dims._make(s, _d=list(shape))


class IOptimizationProfile(Strict):
    _api = "IOptimizationProfile"

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - the stubs' names
        lo, mid, hi = list(min._d), list(opt._d), list(max._d)
        if not (len(lo) == len(mid) == len(hi)) or any(not 0 <= a <= b <= c for a, b, c in zip(lo, mid, hi)):
            self._valid = False  # IOptimizationProfile::setDimensions returns false; the profile is invalid
        self._shapes[input] = (lo, mid, hi)


class IHostMemory(bytes, Strict):
    _api = "IHostMemory"

    @property
    def nbytes(self) -> int:
        return len(self)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name != "nbytes":
            raise AttributeError(f"'tensorrt.IHostMemory' object has no attribute '{name}'")
        return super().__getattribute__(name)

    @classmethod
    def _make(cls, s: StandIn, **state: Any) -> Any:
        obj = bytes.__new__(s.classes["IHostMemory"], state.pop("data"))
        return obj


class ITimingCache(Strict):
    _api = "ITimingCache"

    def serialize(self) -> Any:
        return IHostMemory._make(self._s, data=self._data)


CACHE_MEASUREMENT = b"+"  # what one build adds to the stand-in's timing cache


class IBuilderConfig(Strict):
    _api = "IBuilderConfig"

    def _setup(self, builder: Builder) -> None:
        s = self._s
        self._builder, self._set, self._cleared, self._pools, self._profiles = builder, set(), set(), {}, []
        self._cache, self._cache_ignore_mismatch = None, None
        # "TF32 ... Enabled by default" (the stubs' BuilderFlag doc)
        self._init("flags", 1 << int(s.enums["BuilderFlag"].TF32))
        self._init("builder_optimization_level", 3)
        self._init("profiling_verbosity", s.enums["ProfilingVerbosity"].LAYER_NAMES_ONLY)
        self._init("hardware_compatibility_level", s.enums["HardwareCompatibilityLevel"].NONE)

    def set_flag(self, flag: Any) -> None:
        self._set.add(int(flag))
        self.flags = self.flags | (1 << int(flag))

    def clear_flag(self, flag: Any) -> None:
        self._cleared.add(int(flag))
        self.flags = self.flags & ~(1 << int(flag))

    def get_flag(self, flag: Any) -> bool:
        return bool(self.flags & (1 << int(flag)))

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self._pools[int(pool)] = pool_size

    def add_optimization_profile(self, profile: Any) -> int:
        if not profile._valid or not profile._shapes:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
        """None for a blob TensorRT cannot read: the header returns a pointer that can be null, and
        Polygraphy (backend/trt/config.py) checks ``create_timing_cache``'s result for None."""
        s = self._s
        data = bytes(memoryview(serialized_timing_cache))
        if data and (s.behaviour["cache"] == "corrupt" or data.strip(CACHE_MEASUREMENT)):
            _log(s, self._builder._logger, "ERROR", "Error Code 1: Serialization (the timing cache is corrupt or "
                                                    "not a TensorRT timing cache)")
            return None
        return ITimingCache._make(s, _data=data, _foreign=bool(data) and s.behaviour["cache"] == "mismatch")

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        """False for a cache from another device unless ``ignore_mismatch`` (NvInfer.h, setTimingCache:
        "A failure will be reported if the CUDA device property in the provided cache is different")."""
        if cache._foreign and not ignore_mismatch:
            _log(self._s, self._builder._logger, "WARNING",
                 "The timing cache's device properties differ from this device's; it is not used")
            return False
        self._cache, self._cache_ignore_mismatch = cache, ignore_mismatch
        return True


class Builder(Strict):
    _api = "Builder"

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def create_network(self, flags: int = 0) -> Any:
        return INetworkDefinition._make(self._s, _flags=flags, _layers=[], _inputs=[], _outputs=[], _dims={})

    def create_builder_config(self) -> Any:
        config = IBuilderConfig._make(self._s)
        config._setup(self)
        self._s.configs.append(config)
        return config

    def create_optimization_profile(self) -> Any:
        return IOptimizationProfile._make(self._s, _shapes={}, _valid=True)

    def build_serialized_network(self, network: Any, config: Any) -> Any:
        s = self._s
        error = self._build_problem(network, config)
        if error:
            _log(s, self._logger, "ERROR", error)
            return None
        if config._cache is not None:
            config._cache._data += CACHE_MEASUREMENT  # one timing measurement more per build
        profile = config._profiles[0]._shapes if config._profiles else {}
        bf = s.enums["BuilderFlag"]
        plan = {
            "format": PLAN_FORMAT, "tensorrt_version": s.version,
            "version_compatible": bool(config.flags & (1 << int(bf.VERSION_COMPATIBLE))),
            "hardware_compatible": int(config.hardware_compatibility_level) != 0,
            "profiling_verbosity": int(config.profiling_verbosity),
            "io": [[t.name, "INPUT", t.dtype.name, list(t.shape._d)] for t in network._inputs]
            + [[o, "OUTPUT", _output_type(network, o), network._dims.get(o, [])] for o in network._outputs],
            "profile": {name: list(shapes) for name, shapes in profile.items()},
            "layers": _engine_layers(s, network),
            "device_memory": 1 << 20,
        }
        return IHostMemory._make(s, data=json.dumps(plan).encode())

    def _build_problem(self, network: Any, config: Any) -> str | None:
        if self._s.behaviour["build_fails"]:
            return "Error Code 2: Internal Error (out of memory)"
        dynamic = [t for t in network._inputs if -1 in t.shape._d]
        if dynamic and not config._profiles:
            return ("Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no optimization profile "
                    "has been defined.)")
        for t in dynamic:
            shapes = config._profiles[0]._shapes.get(t.name)
            if shapes is None:
                return f"Error Code 4: API Usage Error (optimization profile is missing values for input {t.name})"
            for dims in shapes:
                if len(dims) != len(t.shape._d) or any(d != n for d, n in zip(dims, t.shape._d) if n != -1):
                    return f"Error Code 4: API Usage Error (profile dimensions {dims} do not fit input {t.name})"
        return None


def _output_type(network: Any, name: str) -> str:
    for layer in network._layers:
        for t in layer._outputs:
            if t.name == name:
                return t.dtype.name
    raise AssertionError(f"stand-in bug: no layer writes {name}")


def _engine_layers(s: StandIn, network: Any) -> list[dict[str, Any]]:
    """The built engine's layers, TensorRT-version neutral (the inspector renders them): one per
    network layer, each tensor with the type its producer writes; with ``inspector="foreign"`` the
    run from the layer before the first quantizer layer to the last one becomes one Myelin layer."""
    types_of = {t.name: t.dtype.name for t in network._inputs}
    for layer in network._layers:
        for t in layer._outputs:
            types_of[t.name] = "HALF" if s.behaviour["fp16_latent"] and t.name == "latent" else t.dtype.name
    dims = network._dims
    layers = []
    for layer in network._layers:
        node = layer._onnx
        layers.append({"name": layer.name, "type": layer._op, "onnx": [layer.name],
                       "inputs": [[i, types_of[i], dims.get(i, [])] for i in node.input if i in types_of],
                       "outputs": [[o, types_of[o], dims.get(o, [])] for o in node.output]})
    if s.inspector == "foreign":
        quantizer = [i for i, layer in enumerate(layers) if layer["name"].startswith(QUANTIZER_PREFIX)]
        if quantizer:
            first, last = max(quantizer[0] - 1, 0), quantizer[-1]
            fused = layers[first : last + 1]
            made = {t[0] for layer in fused for t in layer["outputs"]}
            used_after = {t[0] for layer in layers[last + 1 :] for t in layer["inputs"]} | set(network._outputs)
            crossing_in = {t[0]: t for layer in fused for t in layer["inputs"] if t[0] not in made}
            crossing_out = {t[0]: t for layer in fused for t in layer["outputs"] if t[0] in used_after}
            myelin = {"name": f"{{ForeignNode[{fused[0]['name']}...{fused[-1]['name']}]}}", "type": "Myelin",
                      "onnx": [n for layer in fused for n in layer["onnx"]],
                      "inputs": list(crossing_in.values()), "outputs": list(crossing_out.values())}
            layers = [*layers[:first], myelin, *layers[last + 1 :]]
    return layers


def _inspector_json(s: StandIn, plan: dict[str, Any]) -> str:
    schema = "trt11" if s.inspector == "trt11" or (s.inspector == "foreign" and s.major >= 11) else "trt10"
    verbosity = plan["profiling_verbosity"]
    pv = s.enums["ProfilingVerbosity"]
    names = [name for name, _, _, _ in plan["io"]]
    if schema == "trt11":
        io = {"I/O Tensors": [{"Name": n, "IOMode": mode.title(), "DataType": _TRT11_DATATYPE[t], "Dimensions": d,
                               "Location": "Device", "IsShapeInferenceIO": False} for n, mode, t, d in plan["io"]]}
    else:
        io = {"Bindings": names}
    if verbosity == int(pv.NONE):
        return json.dumps({"Layers": [], **io})
    if verbosity == int(pv.LAYER_NAMES_ONLY):
        return json.dumps({"Layers": [layer["name"] for layer in plan["layers"]], **io})

    def tensor(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
        if schema == "trt11":
            return {"Name": name, "Location": "Device", "Dimensions": dims,
                    "Format": _TRT11_FORMAT.get(dtype, "Row major linear (kLINEAR)"),
                    "DataType": _TRT11_DATATYPE[dtype]}
        return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": _TRT10_FORMAT[dtype]}

    layers = [{"Name": layer["name"], "LayerType": layer["type"],
               "Inputs": [tensor(*t) for t in layer["inputs"]], "Outputs": [tensor(*t) for t in layer["outputs"]],
               **({"TacticName": "__myelin_builtin"} if layer["type"] == "Myelin" else {"TacticValue": "0x0"}),
               "StreamId": 0, "Metadata": "\x1f".join(f"[ONNX Layer: {n}]" for n in layer["onnx"])}
              for layer in plan["layers"]]
    return json.dumps({"Layers": layers, **io})


class EngineInspector(Strict):
    _api = "EngineInspector"

    def get_engine_information(self, format: Any) -> str:  # noqa: A002 - the stubs' name
        if format == self._s.enums["LayerInformationFormat"].JSON:
            return _inspector_json(self._s, self._plan)
        return "\n".join(layer["name"] for layer in self._plan["layers"])


class Runtime(Strict):
    _api = "Runtime"

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._init("engine_host_code_allowed", False)  # "(Default: False)", the stubs' Runtime doc

    def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
        s = self._s
        problem, plan = None, None
        try:
            plan = json.loads(bytes(memoryview(serialized_engine)))
            assert isinstance(plan, dict) and plan.get("format") == PLAN_FORMAT
        except (ValueError, AssertionError):
            problem = ("Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed. "
                       "Magic tag does not match)")
        if plan is not None and problem is None:
            problem = self._load_problem(plan)
        if problem:
            _log(s, self._logger, "ERROR", problem)
            return None
        return ICudaEngine._make(s, _plan=plan, _runtime=self)

    def _load_problem(self, plan: dict[str, Any]) -> str | None:
        """A plan loads on the TensorRT that built it; a version-compatible one on that or any later
        version ("engines built with TensorRT 10 work with TensorRT 11": the 11.1 Engine
        Compatibility page), and only where the runtime may run the lean runtime it carries
        (``runtime.engine_host_code_allowed = True``, the same page)."""
        s, built = self._s, str(plan["tensorrt_version"])
        if s.behaviour["deserialize_fails"]:
            return "Error Code 1: Serialization (deserialization failed)"
        if not plan["version_compatible"]:
            if built != s.version:
                return (f"Error Code 6: API Usage Error (The engine plan file is not compatible with this version of "
                        f"TensorRT, expecting library version {s.version} got {built}, please rebuild.)")
            return None
        if version_tuple(s.version) < version_tuple(built):
            return (f"Error Code 6: API Usage Error (the version-compatible plan was built by TensorRT {built}, "
                    f"newer than this {s.version})")
        if not self.engine_host_code_allowed:
            return ("Error Code 1: Serialization (the plan carries host code (a version-compatible lean runtime) "
                    "and engine_host_code_allowed is False)")
        return None


class ICudaEngine(Strict):
    _api = "ICudaEngine"

    def _io(self, name: str) -> list[Any] | None:
        return next((t for t in self._plan["io"] if t[0] == name), None)

    @property
    def num_io_tensors(self) -> int:
        return len(self._plan["io"])

    def get_tensor_name(self, index: int) -> Any:
        io = self._plan["io"]
        return io[index][0] if 0 <= index < len(io) else None

    def get_tensor_mode(self, name: str) -> Any:
        t = self._io(name)
        return getattr(self._s.enums["TensorIOMode"], t[1] if t else "NONE")

    def get_tensor_dtype(self, name: str) -> Any:
        t = self._io(name)
        return getattr(self._s.enums["DataType"], t[2] if t else "FLOAT")

    def get_tensor_shape(self, name: str) -> Any:
        t = self._io(name)
        return _dims(self._s, t[3] if t else [])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Any]:
        shapes = self._plan["profile"].get(name)
        if shapes is None or profile_index != 0:
            _log(self._s, self._runtime._logger, "ERROR", f"Error Code 3: API Usage Error (no profile {profile_index} "
                                                          f"shapes for '{name}')")
            return []
        return [_dims(self._s, d) for d in shapes]

    def create_engine_inspector(self) -> Any:
        return EngineInspector._make(self._s, _plan=self._plan)

    def create_execution_context(self, strategy: Any = None, runtime_config: Any = None) -> Any:
        context = IExecutionContext._make(self._s, _engine=self, _shapes={}, _addresses={}, _warm=False, _runs=0,
                                          _strategy=strategy)
        self._s.contexts.append(context)
        return context

    def get_device_memory_size_for_profile_v2(self, profile_index: int) -> int:
        return int(self._plan["device_memory"]) if profile_index == 0 else 0


class IExecutionContext(Strict):
    _api = "IExecutionContext"

    def _error(self, msg: str) -> bool:
        _log(self._s, self._engine._runtime._logger, "ERROR", msg)
        return False

    def set_input_shape(self, name: str, shape: Any) -> bool:
        """False for a name that is no input or a shape outside the profile: "Each dimension must
        agree with the network dimension unless the latter was -1" (NvInferRuntime.h)."""
        engine = self._engine
        t = engine._io(name)
        dims = list(shape._d) if isinstance(shape, Strict) else list(shape)
        if t is None or t[1] != "INPUT":
            return self._error(f"Error Code 3: API Usage Error (setInputShape: '{name}' is not an input tensor)")
        lo, _, hi = engine._plan["profile"][name]
        if len(dims) != len(t[3]) or any(d != n for d, n in zip(dims, t[3]) if n != -1) or any(
                not a <= d <= b for d, a, b in zip(dims, lo, hi)):
            return self._error(f"Error Code 3: API Usage Error (setInputShape: {dims} is outside the profile "
                               f"{lo}..{hi} of '{name}')")
        if self._shapes.get(name) != dims:
            self._warm = False  # a new shape: TensorRT's next enqueue does shape-dependent setup work
        self._shapes[name] = dims
        return True

    def _shape(self, name: str) -> list[int]:
        t = self._engine._io(name)
        if t[1] == "INPUT":
            return self._shapes.get(name, t[3])
        inputs = [n for n, mode, _, _ in self._engine._plan["io"] if mode == "INPUT"]
        if any(n not in self._shapes for n in inputs):
            return t[3]
        return [self._shapes[inputs[0]][0], *t[3][1:]]

    def get_tensor_shape(self, name: str) -> Any:
        return _dims(self._s, self._shape(name) if self._engine._io(name) else [])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self._engine._io(name) is None:
            return self._error(f"Error Code 3: API Usage Error (setTensorAddress: '{name}' is not an I/O tensor)")
        if memory % ADDRESS_ALIGNMENT:
            return self._error(f"Error Code 3: API Usage Error (setTensorAddress: {memory:#x} for '{name}' is "
                               "misaligned)")
        self._addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        s, plan = self._s, self._engine._plan
        missing = [n for n, mode, _, _ in plan["io"] if n not in self._addresses or (
            mode == "INPUT" and n not in self._shapes)]
        if missing:
            return self._error(f"Error Code 3: API Usage Error (enqueueV3: shape or address of {missing} not set)")
        if s.behaviour["execute_fails"]:
            return self._error("Error Code 1: Cuda Runtime (an illegal memory access was encountered)")
        io = [(n, mode, t, list(self._shape(n)), self._addresses[n]) for n, mode, t, _ in plan["io"]]
        (_, _, in_type, in_shape, in_addr), = [x for x in io if x[1] == "INPUT"]
        (_, _, out_type, out_shape, out_addr), = [x for x in io if x[1] == "OUTPUT"]

        def run() -> None:
            x = read_memory(in_addr, in_shape, _NUMPY[in_type])
            write_memory(out_addr, expected_output(x, out_shape[1:], _NUMPY[out_type]))

        launched = s.launch(stream_handle, run, warm=self._warm, context=self, batch=in_shape[0])
        if launched:
            self._warm = True
        return launched


# -- memory, streams and graphs ---------------------------------------------------------------------


def read_memory(address: int, shape: list[int], dtype: Any) -> np.ndarray:
    count = int(np.prod(shape))
    if count == 0:
        return np.empty(shape, dtype)
    raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def write_memory(address: int, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    ctypes.memmove(address, array.ctypes.data, array.nbytes)


def expected_output(x: np.ndarray, out_rest: list[int] | tuple[int, ...], out_dtype: Any) -> np.ndarray:
    """What a stand-in engine computes: row by row, output element j is 3 * (input element j modulo
    the row's size) + 1, in the output's type. Rows are independent, as the codec's are."""
    rows = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    width = int(np.prod(out_rest))
    out = rows[:, np.arange(width) % rows.shape[1]] * 3 + 1 if rows.shape[1] else np.zeros((len(x), width))
    return out.astype(out_dtype).reshape((len(x), *out_rest))


class FakeCuda:
    """The part of ``torch.cuda`` TensorRTRunner uses, over CPU tensors: ``Stream()`` (a handle,
    ``wait_stream``), ``current_stream()``, ``stream(s)``, ``CUDAGraph()`` and ``graph(g, stream=s)``.
    Work launched on a capturing stream is recorded, not run, and runs at each ``replay()`` with the
    shapes and addresses it was captured with, as in CUDA. Capture is refused on the default stream,
    and an enqueue of a context that has not run since its last shape change invalidates the
    capture: trtexec "executes the enqueue function at least once before starting CUDA graph
    capture" to keep TensorRT's initialization out of the graph (samples/common/sampleInference.cpp).
    ``events`` logs waits, launches, captures and replays in order."""

    def __init__(self, capture_fails: bool = False) -> None:
        self.capture_fails = capture_fails
        self.events: list[tuple[Any, ...]] = []
        self._handles = itertools.count(0x7000, 0x10)
        self.streams: dict[int, _Stream] = {}
        self.default = self._new(0)
        self.current = self.default

    def _new(self, handle: int) -> _Stream:
        stream = _Stream(self, handle)
        self.streams[handle] = stream
        return stream

    # torch.cuda's names, as the runner calls them
    def Stream(self) -> _Stream:  # noqa: N802
        return self._new(next(self._handles))

    def current_stream(self) -> _Stream:
        return self.current

    @contextlib.contextmanager
    def stream(self, stream: _Stream) -> Iterator[None]:
        if not isinstance(stream, _Stream):
            raise TypeError(f"stream(): expected a torch.cuda.Stream, got {type(stream).__name__}")
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before

    def CUDAGraph(self) -> _Graph:  # noqa: N802
        return _Graph(self)

    @contextlib.contextmanager
    def graph(self, cuda_graph: _Graph, *, stream: _Stream) -> Iterator[None]:
        if not isinstance(cuda_graph, _Graph) or not isinstance(stream, _Stream):
            raise TypeError("graph(): expected a torch.cuda.CUDAGraph and stream=torch.cuda.Stream")
        if stream.handle == 0:
            raise RuntimeError("CUDA error: operation not permitted on the legacy default stream during capture")
        before, self.current, stream.capturing = self.current, stream, cuda_graph
        self.events.append(("capture", stream.handle))
        try:
            yield
        finally:
            self.current, stream.capturing = before, None
        if cuda_graph.error or self.capture_fails:
            raise RuntimeError(f"CUDA error: operation failed due to a previous error during capture "
                               f"({cuda_graph.error or 'capture_fails'})")
        cuda_graph.captured = True

    def launch(self, handle: int, work: Callable[[], None], warm: bool, label: tuple[Any, ...]) -> bool:
        stream = self.streams.get(handle)
        if stream is None:
            return False
        if stream.capturing is not None:
            if not warm:
                stream.capturing.error = "an enqueue that had not run since its shape changed"
                return False
            stream.capturing.works.append((work, label))
            self.events.append(("captured", handle, *label))
            return True
        work()
        self.events.append(("launch", handle, *label))
        return True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
        import torch

        for name in ("Stream", "current_stream", "stream", "CUDAGraph", "graph"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self


class _Stream:
    def __init__(self, cuda: FakeCuda, handle: int) -> None:
        self._cuda, self.handle, self.capturing = cuda, handle, None

    @property
    def cuda_stream(self) -> int:
        return self.handle

    def wait_stream(self, stream: _Stream) -> None:
        if not isinstance(stream, _Stream):
            raise TypeError("wait_stream(): expected a torch.cuda.Stream")
        self._cuda.events.append(("wait", self.handle, stream.handle))


class _Graph:
    def __init__(self, cuda: FakeCuda) -> None:
        self._cuda, self.works, self.error, self.captured = cuda, [], None, False

    def replay(self) -> None:
        if not self.captured:
            raise RuntimeError("CUDAGraph.replay: the graph was not captured")
        for work, label in self.works:
            work()
            self._cuda.events.append(("replay", self._cuda.current.handle, *label))


# -- the module -------------------------------------------------------------------------------------


_CLASSES = (ILogger, Logger, Dims, ITensor, ILayer, INetworkDefinition, ParserError, OnnxParser,
            IOptimizationProfile, IHostMemory, ITimingCache, IBuilderConfig, Builder, EngineInspector, Runtime,
            ICudaEngine, IExecutionContext)
assert {c._api for c in _CLASSES} == set(API["classes"]), "the stand-in must implement every class of trt_api.json"

INSPECTORS = ("trt10", "trt11", "foreign")
CACHES = ("ok", "corrupt", "mismatch")


@dataclass
class StandIn:
    """One stand-in ``tensorrt`` module and what happened to it: ``configs`` (every builder
    config), ``contexts`` (every execution context), ``launches`` ((context, stream handle, batch)
    of every run), ``log`` (every message logged through a TensorRT logger)."""

    version: str
    behaviour: dict[str, Any]
    inspector: str
    api: dict[str, Any] = field(init=False)
    module: types.ModuleType = field(init=False)
    enums: dict[str, type[Enum]] = field(default_factory=dict)
    classes: dict[str, type[Strict]] = field(default_factory=dict)
    configs: list[Any] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    launches: list[tuple[Any, int, int]] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    cuda: FakeCuda | None = None

    def __post_init__(self) -> None:
        self.api = api_for(self.version)
        self.enums = {name: _make_enum(name, spec) for name, spec in self.api["enums"].items()}
        bound: dict[type, type] = {}
        for base in _CLASSES:
            parents = tuple(bound.get(b, b) for b in base.__bases__ if b is not Strict and b is not bytes)
            bases = (*parents, base) if parents else (base,)
            cls = type(base.__name__, bases, {"_s": self, "_standin_class": True,
                                              "__module__": "tensorrt", "__qualname__": base.__name__})
            bound[base] = cls
            self.classes[base._api] = cls
            for name, spec in self.api["classes"][base._api]["constants"].items():
                setattr(cls, name, getattr(self.enums[spec["type"]], _member(self.api, spec)))
        self.classes["ILogger"].Severity = self.enums["ILogger.Severity"]  # type: ignore[attr-defined]
        self.classes["Logger"].Severity = self.enums["ILogger.Severity"]  # type: ignore[attr-defined]

        module = types.ModuleType("tensorrt", "A strict stand-in for TensorRT (tests/trt_standin.py)")
        # torch._dynamo, imported by the first torch.export of the process, calls find_spec("tensorrt"),
        # which raises for a module in sys.modules without a spec.
        module.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        module.__version__ = self.version  # type: ignore[attr-defined]
        for name, cls in self.classes.items():
            setattr(module, name, cls)
        for name, enum in self.enums.items():
            if "." not in name:
                setattr(module, name, enum)
        for name, spec in self.api["module"].items():
            if name != "__version__":
                setattr(module, name, getattr(self.enums[spec["type"]], _member(self.api, spec)))
        self.module = module

    @property
    def major(self) -> int:
        return version_tuple(self.version)[0]

    @property
    def facts(self) -> dict[str, str]:
        return {**FAKE_FACTS, "tensorrt_version": self.version}

    def launch(self, handle: int, work: Callable[[], None], *, warm: bool, context: Any, batch: int) -> bool:
        label = (self.contexts.index(context), batch)
        if self.cuda is None:
            work()
            ran = True
        else:
            ran = self.cuda.launch(handle, work, warm, label)
        if ran:
            self.launches.append((context, handle, batch))
        return ran

    def plan(self, inputs: dict[str, tuple[str, list[int]]], outputs: dict[str, tuple[str, list[int]]],
             profile: tuple[int, int, int], *, version_compatible: bool = False, device_memory: int = 1 << 20
             ) -> bytes:
        """A serialized engine for the runner tests (what build_serialized_network would make of a
        network with these I/O tensors and a batch profile min/opt/max)."""
        io = [[n, "INPUT", t, d] for n, (t, d) in inputs.items()]
        io += [[n, "OUTPUT", t, d] for n, (t, d) in outputs.items()]
        plan = {"format": PLAN_FORMAT, "tensorrt_version": self.version, "version_compatible": version_compatible,
                "hardware_compatible": False, "profiling_verbosity": int(self.enums["ProfilingVerbosity"].DETAILED),
                "io": io, "profile": {n: [[b, *d[1:]] for b in profile] for n, (_, d) in inputs.items()},
                "layers": [], "device_memory": device_memory}
        return json.dumps(plan).encode()


def _member(api: dict[str, Any], spec: dict[str, Any]) -> str:
    members = api["enums"][spec["type"]]["members"]
    return next(k for k, v in members.items() if v == spec["value"])


def make_fake_trt(*, version: str = FAKE_FACTS["tensorrt_version"], build_fails: bool = False,
                  parse_error: bool = False, fp16_quantizer_layer: bool = False, fp16_latent: bool = False,
                  cache: str = "ok", inspector: str | None = None, deserialize_fails: bool = False,
                  execute_fails: bool = False, strongly_typed_flag: bool = False) -> StandIn:
    """A stand-in ``tensorrt`` (its module is ``.module``). Behaviours:

    - ``version``: ``__version__``; from "11" on, TensorRT 11's enums and read-only attributes;
    - ``build_fails``: ``build_serialized_network`` returns None after logging an error;
    - ``parse_error``: the ONNX parser reports one error at node_conv2d (Conv);
    - ``fp16_quantizer_layer``: the parsed network types the quantizer layers' float outputs FP16;
    - ``fp16_latent``: the built engine computes 'latent' in FP16 (what the inspector reports);
    - ``cache``: "ok"; "corrupt" (``create_timing_cache`` returns None for any non-empty blob);
      "mismatch" (a non-empty cache is from another device: ``set_timing_cache`` returns False
      unless ``ignore_mismatch``). A blob that is not the stand-in's is corrupt in every mode;
    - ``inspector``: "trt10" or "trt11" JSON (default: the version's), or "foreign" (the version's,
      with the quantizer fused into a Myelin ``{ForeignNode[...]}`` layer);
    - ``deserialize_fails``: ``deserialize_cuda_engine`` returns None after logging an error;
    - ``execute_fails``: ``execute_async_v3`` returns False after logging an error;
    - ``strongly_typed_flag``: what TensorRT 11's ``get_flag(STRONGLY_TYPED)`` answers (ignored flag).
    """
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}")
    inspector = inspector or ("trt11" if version_tuple(version)[:1] >= (11,) else "trt10")
    if inspector not in INSPECTORS:
        raise ValueError(f"inspector must be one of {INSPECTORS}")
    behaviour = {"build_fails": build_fails, "parse_error": parse_error, "fp16_quantizer_layer": fp16_quantizer_layer,
                 "fp16_latent": fp16_latent, "cache": cache, "deserialize_fails": deserialize_fails,
                 "execute_fails": execute_fails, "strongly_typed_flag": strongly_typed_flag}
    return StandIn(version, behaviour, inspector)


def write_engine(path: Path, plan: bytes, facts: dict[str, str], precision: str = "fp32", **sidecar: Any) -> Path:
    """An engine file and the sidecar ``fsqdeploy export --trt`` writes beside it."""
    path.write_bytes(plan)
    data = json.loads(plan)
    name = next(n for n, mode, _, _ in data["io"] if mode == "INPUT")
    lo, opt, hi = (d[0] for d in data["profile"][name])
    record = {"format": "fsqdeploy-tensorrt-engine", **facts, "precision": precision, "graph": "encoder",
              "profile": {"min": lo, "opt": opt, "max": hi}, "onnx_file": "encoder.onnx", "onnx_sha256": "0" * 64,
              "engine_sha256": hashlib.sha256(plan).hexdigest(), "version_compatible": data["version_compatible"],
              "hardware_compatible": False, "strongly_typed": True, "tf32": False, **sidecar}
    path.with_name(path.name + ".json").write_text(json.dumps(record))
    return path


# -- fixtures (registered for every test folder by tests/conftest.py) ---------------------------------


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StandIn]:
    """``fake_trt(**behaviour)`` installs a stand-in tensorrt (``make_fake_trt``) on a machine that
    pretends to have a GPU with the stand-in's facts, and returns it; calling it again replaces it."""
    import fsqdeploy.backends.tensorrt as runner
    import fsqdeploy.backends.tensorrt_env as env
    import fsqdeploy.export.tensorrt.build as build

    installed: list[StandIn] = []
    monkeypatch.setattr(env, "cuda_unavailable_reason", lambda: None)  # what require_tensorrt_and_gpu asks
    for module in (env, build, runner):
        if hasattr(module, "current_device_facts"):
            monkeypatch.setattr(module, "current_device_facts",
                                lambda: dict(installed[-1].facts if installed else FAKE_FACTS))

    def install(**behaviour: Any) -> StandIn:
        standin = make_fake_trt(**behaviour)
        standin.cuda = installed[-1].cuda if installed else None  # a FakeCuda given to the one before
        installed.append(standin)
        monkeypatch.setitem(sys.modules, "tensorrt", standin.module)
        return standin

    return install


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeCuda]:
    """``fake_cuda(**options)`` replaces what TensorRTRunner uses of torch.cuda (``FakeCuda``) and makes
    the runner keep its buffers on the CPU; pass the result to the stand-in as ``standin.cuda``."""
    from fsqdeploy.backends.tensorrt import TensorRTRunner

    def install(**options: Any) -> FakeCuda:
        monkeypatch.setattr(TensorRTRunner, "device", "cpu")
        return FakeCuda(**options).install(monkeypatch)

    return install
