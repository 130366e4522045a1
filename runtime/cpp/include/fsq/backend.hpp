// The inference backends behind Codec: one small interface, one class per runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fsq/manifest.hpp"

namespace fsq {

/// Runs the exported encoder and decoder on host buffers. Codec validates inputs before calling
/// and checks outputs after, splits batches to [min_batch(), max_batch()], and never calls one
/// backend from two threads at once.
class Backend {
public:
    virtual ~Backend() = default;

    /// "tensorrt", "onnxruntime", ...
    virtual std::string name() const = 0;
    /// The largest batch one call accepts (a TensorRT profile's max); 0 means any.
    virtual std::size_t max_batch() const { return 0; }
    /// The smallest batch one call accepts (a TensorRT profile's min); Codec pads up to it.
    virtual std::size_t min_batch() const { return 1; }

    /// images: float32 [n, 3, S, S] in [0, 1] -> indices: int32 [n, W], both row-major, n >= 1.
    virtual void encode(const float* images, std::size_t n, std::int32_t* indices) = 0;
    /// indices: int32 [n, W] with index c in [0, levels[c]) -> images: float32 [n, 3, S, S].
    virtual void decode(const std::int32_t* indices, std::size_t n, float* images) = 0;

    /// Spatial (conv) graphs, one image at a time with any height and width, multiples of f:
    /// image float32 [1, 3, H, W] in [0, 1] -> grid int32 [1, W_code, H/f, W/f], channels first.
    /// A backend without dynamic shapes keeps this default, which refuses in one line.
    virtual void encode_grid(const float* image, std::int64_t height, std::int64_t width, std::int32_t* grid);
    /// grid int32 [1, W_code, rows, cols] -> image float32 [1, 3, rows * f, cols * f].
    virtual void decode_grid(const std::int32_t* grid, std::int64_t rows, std::int64_t cols, float* image);
};

struct BackendOptions {
    enum class Kind { Auto, TensorRT, OnnxRuntime };
    Kind kind = Kind::Auto;    // Auto: TensorRT when compiled in and the manifest lists engines, else ONNX Runtime
    std::string encoder_file;  // default: encoder.onnx, or the encoder engine (see precision)
    std::string decoder_file;  // default: decoder.onnx, or the decoder engine
    std::string precision;     // TensorRT: encoder.<precision>.plan among several; ONNX: encoder.<precision>.onnx
    int device = 0;            // CUDA device (TensorRT)
    int threads = 0;           // intra-op threads (ONNX Runtime); 0 = its default
};

/// The backends compiled into this build, e.g. {"onnxruntime"}; empty when built without any.
std::vector<std::string> compiled_backends();

/// The backend `options` asks for, opened on the manifest's files. Throws Error when it was not
/// compiled in, its files are missing, or an engine does not match this GPU or TensorRT.
std::unique_ptr<Backend> open_backend(const Manifest& manifest, const BackendOptions& options = {});

}  // namespace fsq
