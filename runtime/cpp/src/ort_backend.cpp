// ONNX Runtime backend (CPU): one Ort::Session per graph, inputs and outputs bound by the
// manifest's names, outputs written straight into the caller's buffers.
//
// Compiled only when CMake finds the ONNX Runtime C/C++ SDK (ONNXRUNTIME_ROOT); written against
// onnxruntime_cxx_api.h (ORT >= 1.14: GetInputNameAllocated). Not compiled on the CI machines,
// which have no SDK; see runtime/cpp/README.md.
#include <onnxruntime_cxx_api.h>

#include <string>
#include <vector>

#include "backends.hpp"
#include "fsq/error.hpp"

namespace fsq::detail {
namespace {

// ONNX Runtime wants one Env per process, created before and destroyed after every session.
Ort::Env& shared_env() {
    static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "fsqdeploy");
    return env;
}

std::size_t element_count(const std::vector<std::int64_t>& shape) {
    std::size_t n = 1;
    for (std::int64_t d : shape) n *= static_cast<std::size_t>(d);
    return n;
}

class OrtGraph {
public:
    OrtGraph(const Manifest& manifest, const std::string& file, const GraphIo& io, int threads)
        : file_(file), input_(io.inputs.at(0).name), output_(io.outputs.at(0).name) {
        const std::filesystem::path path = manifest.file(file);
        try {
            Ort::SessionOptions options;
            if (threads > 0) options.SetIntraOpNumThreads(threads);
            session_ = Ort::Session(shared_env(), path.c_str(), options);
            Ort::AllocatorWithDefaultOptions allocator;
            const bool one_each = session_.GetInputCount() == 1 && session_.GetOutputCount() == 1;
            if (!one_each || input_ != session_.GetInputNameAllocated(0, allocator).get() ||
                output_ != session_.GetOutputNameAllocated(0, allocator).get()) {
                throw Error("onnxruntime: '" + file + "' does not have the manifest's input '" + input_ +
                            "' and output '" + output_ + "'. Note: export again");
            }
        } catch (const Ort::Exception& e) {
            throw Error("onnxruntime: cannot load '" + path.string() + "': " + e.what() +
                        ". Note: the graphs need ONNX Runtime >= 1.18, as the Python runtime does (opset " +
                        std::to_string(manifest.opset) + ", local functions)");
        }
    }

    template <typename In, typename Out>
    void run(const In* input, std::vector<std::int64_t> in_shape, Out* output, std::vector<std::int64_t> out_shape) {
        try {
            const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
            // CreateTensor takes a non-const pointer; ONNX Runtime does not write to inputs.
            Ort::Value x = Ort::Value::CreateTensor<In>(memory, const_cast<In*>(input), element_count(in_shape),
                                                        in_shape.data(), in_shape.size());
            Ort::Value y = Ort::Value::CreateTensor<Out>(memory, output, element_count(out_shape), out_shape.data(),
                                                         out_shape.size());
            const char* in_names[] = {input_.c_str()};
            const char* out_names[] = {output_.c_str()};
            session_.Run(Ort::RunOptions{nullptr}, in_names, &x, 1, out_names, &y, 1);
        } catch (const Ort::Exception& e) {
            throw Error("onnxruntime: running '" + file_ + "' failed: " + e.what());
        }
    }

private:
    std::string file_, input_, output_;
    Ort::Session session_{nullptr};
};

class OrtBackend final : public Backend {
public:
    OrtBackend(const Manifest& manifest, const BackendOptions& options)
        : size_(manifest.image_size),
          width_(manifest.code_width),
          f_(manifest.downsample),
          encoder_(manifest, graph_file(manifest, "encoder", options.encoder_file, false, options.precision),
                   manifest.graph_io("encoder"), options.threads),
          decoder_(manifest, graph_file(manifest, "decoder", options.decoder_file, false, options.precision),
                   manifest.graph_io("decoder"), options.threads) {}

    std::string name() const override { return "onnxruntime"; }
    // Bounds the activations' memory; the Python Codec runs ONNX Runtime in chunks of 1024 too.
    std::size_t max_batch() const override { return 1024; }

    void encode(const float* images, std::size_t n, std::int32_t* indices) override {
        const auto batch = static_cast<std::int64_t>(n);
        encoder_.run(images, {batch, 3, size_, size_}, indices, {batch, width_});
    }

    void decode(const std::int32_t* indices, std::size_t n, float* images) override {
        const auto batch = static_cast<std::int64_t>(n);
        decoder_.run(indices, {batch, width_}, images, {batch, 3, size_, size_});
    }

    // The conv graphs take any height and width (multiples of f): the shapes are per call.
    void encode_grid(const float* image, std::int64_t height, std::int64_t width, std::int32_t* grid) override {
        encoder_.run(image, {1, 3, height, width}, grid, {1, width_, height / f_, width / f_});
    }

    void decode_grid(const std::int32_t* grid, std::int64_t rows, std::int64_t cols, float* image) override {
        decoder_.run(grid, {1, width_, rows, cols}, image, {1, 3, rows * f_, cols * f_});
    }

private:
    std::int64_t size_, width_, f_;
    OrtGraph encoder_, decoder_;
};

}  // namespace

std::unique_ptr<Backend> open_onnxruntime(const Manifest& manifest, const BackendOptions& options) {
    return std::make_unique<OrtBackend>(manifest, options);
}

}  // namespace fsq::detail
