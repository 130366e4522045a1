// Which backend runs, and on which of the manifest's files; the backends themselves are in
// ort_backend.cpp and trt_backend.cpp, compiled only when CMake found their runtimes.
#include <string>

#include "backends.hpp"
#include "fsq/error.hpp"

namespace fsq {

void Backend::encode_grid(const float*, std::int64_t, std::int64_t, std::int32_t*) {
    throw Error("codec: the " + name() + " backend runs fixed-shape (paper) graphs only; a conv artifact's "
                "dynamic-shape graphs need the onnxruntime backend. Note: pass --backend onnxruntime");
}

void Backend::decode_grid(const std::int32_t*, std::int64_t, std::int64_t, float*) {
    throw Error("codec: the " + name() + " backend runs fixed-shape (paper) graphs only; a conv artifact's "
                "dynamic-shape graphs need the onnxruntime backend. Note: pass --backend onnxruntime");
}

namespace detail {

std::string graph_file(const Manifest& manifest, const std::string& graph, const std::string& explicit_name,
                       bool engine, const std::string& precision) {
    if (!explicit_name.empty()) {
        manifest.file(explicit_name);  // throws unless listed (and so hashed)
        return explicit_name;
    }
    if (!engine) {  // ONNX: encoder.onnx, or e.g. encoder.int8.onnx (the QDQ graphs of fsqdeploy calibrate)
        const std::string name = graph + (precision.empty() || precision == "fp32" ? "" : "." + precision) + ".onnx";
        manifest.file(name);
        return name;
    }
    std::vector<std::string> candidates;
    for (const std::string& name : manifest.engine_files()) {
        const bool ours = name.compare(0, graph.size(), graph) == 0;
        const bool precise = precision.empty() || name.find("." + precision + ".") != std::string::npos;
        if (ours && precise) candidates.push_back(name);
    }
    if (candidates.size() == 1) return candidates[0];
    const std::string what = precision.empty() ? graph + " engine" : graph + " engine for " + precision;
    if (candidates.empty()) {
        throw Error("tensorrt: '" + manifest.dir.string() + "' lists no " + what +
                    ". Note: build it with fsqdeploy export --trt on this GPU");
    }
    std::string list;
    for (const auto& c : candidates) list += (list.empty() ? "" : ", ") + c;
    throw Error("tensorrt: '" + manifest.dir.string() + "' lists several " + what + "s (" + list +
                "). Note: choose one with BackendOptions::precision or encoder_file/decoder_file");
}

}  // namespace detail

std::vector<std::string> compiled_backends() {
    std::vector<std::string> out;
#ifdef FSQ_WITH_TENSORRT
    out.emplace_back("tensorrt");
#endif
#ifdef FSQ_WITH_ONNXRUNTIME
    out.emplace_back("onnxruntime");
#endif
    return out;
}

std::unique_ptr<Backend> open_backend(const Manifest& manifest, const BackendOptions& options) {
    (void)manifest;  // unused when no backend is compiled in
    using Kind = BackendOptions::Kind;
    Kind kind = options.kind;
    if (kind == Kind::Auto) {
#if defined(FSQ_WITH_TENSORRT)
        if (!manifest.engine_files().empty()) kind = Kind::TensorRT;
#endif
#if defined(FSQ_WITH_ONNXRUNTIME)
        if (kind == Kind::Auto) kind = Kind::OnnxRuntime;
#endif
        if (kind == Kind::Auto) {
            throw Error(
                "codec: this build of the fsqdeploy C++ runtime has no inference backend. Note: rebuild with "
                "ONNXRUNTIME_ROOT=<onnxruntime SDK> and/or TensorRT and CUDA installed (runtime/cpp/README.md); "
                "bitstreams and manifests work without one");
        }
    }
    if (kind == Kind::TensorRT) {
#ifdef FSQ_WITH_TENSORRT
        return detail::open_tensorrt(manifest, options);
#else
        throw Error(
            "codec: this build has no TensorRT backend. Note: rebuild where CMake finds TensorRT and CUDA "
            "(-DFSQ_WITH_TENSORRT=ON -DTENSORRT_ROOT=...)");
#endif
    }
#ifdef FSQ_WITH_ONNXRUNTIME
    return detail::open_onnxruntime(manifest, options);
#else
    throw Error(
        "codec: this build has no ONNX Runtime backend. Note: rebuild with -DONNXRUNTIME_ROOT=<the "
        "onnxruntime C/C++ SDK>");
#endif
}

}  // namespace fsq
