// The backends' factories, each compiled only when CMake found its runtime.
#pragma once

#include <memory>

#include "fsq/backend.hpp"

namespace fsq::detail {

#ifdef FSQ_WITH_ONNXRUNTIME
std::unique_ptr<Backend> open_onnxruntime(const Manifest& manifest, const BackendOptions& options);
#endif
#ifdef FSQ_WITH_TENSORRT
std::unique_ptr<Backend> open_tensorrt(const Manifest& manifest, const BackendOptions& options);
#endif

}  // namespace fsq::detail

namespace fsq::detail {

/// The manifest file a backend runs for `graph` ("encoder" or "decoder"): the explicit name when
/// given, else for TensorRT the one listed engine named like "<graph>*.plan|.engine" (narrowed to
/// "<graph>.<precision>." when a precision is given), else "<graph>.onnx" ("<graph>.<precision>.onnx"
/// for a precision other than fp32, e.g. the int8 QDQ graphs).
std::string graph_file(const Manifest& manifest, const std::string& graph, const std::string& explicit_name,
                       bool engine, const std::string& precision);

}  // namespace fsq::detail
