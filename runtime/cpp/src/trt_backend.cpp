// TensorRT backend: engines from `fsqdeploy export --trt`, checked against their sidecar before
// deserializing, run with enqueueV3 on a CUDA stream from device buffers sized for the
// optimization profile's maximum batch (Codec splits larger batches).
//
// Compiled only when CMake finds TensorRT (NvInfer.h, libnvinfer) and the CUDA toolkit; written
// against the TensorRT 10 and 11 C++ API (named I/O tensors, setInputShape / setTensorAddress /
// enqueueV3, objects released with delete). Not compiled on the CI machines, which have no GPU;
// see runtime/cpp/README.md.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "backends.hpp"
#include "fsq/error.hpp"
#include "half.hpp"

namespace fsq::detail {
namespace {

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) {
        throw Error(std::string("tensorrt: CUDA ") + what + " failed: " + cudaGetErrorString(status));
    }
}

class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "tensorrt: %s\n", msg);
    }
};

// TensorRT's version as Python's tensorrt.__version__ spells it ("10.13.0.35"), the form the
// sidecar records. getInferLib{Major,Minor,Patch,Build}Version exist since TensorRT 10
// (NvInferRuntime.h); before, getInferLibVersion() is major*1000 + minor*100 + patch, no build.
std::string tensorrt_version() {
#if NV_TENSORRT_MAJOR >= 10
    return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
           std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
#else
    const std::int32_t v = getInferLibVersion();
    return std::to_string(v / 1000) + "." + std::to_string((v / 100) % 10) + "." + std::to_string(v % 100);
#endif
}

DeviceFacts device_facts(int device) {
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return {tensorrt_version(), prop.name, std::to_string(prop.major) + "." + std::to_string(prop.minor)};
}

std::size_t element_size(nvinfer1::DataType type) {
    return type == nvinfer1::DataType::kHALF ? 2 : 4;
}

struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(std::size_t bytes) { cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// One engine with one input and one output: the input's shape per batch item, the output's values
// per item, and whether the images are the input (encoder) or the output (decoder).
class TrtEngine {
public:
    TrtEngine(const Manifest& manifest, const std::string& file, const GraphIo& io, nvinfer1::IRuntime& runtime,
              const DeviceFacts& facts, const std::string& precision, bool images_in,
              std::vector<std::int64_t> item_in_shape, std::size_t item_out)
        : file_(file),
          input_(io.inputs.at(0).name),
          output_(io.outputs.at(0).name),
          item_in_shape_(std::move(item_in_shape)),
          item_out_(item_out) {
        const std::filesystem::path path = manifest.file(file);
        const EngineSidecar sidecar = check_engine(path, facts, precision);  // as TensorRTRunner does
        if (!sidecar.onnx_sha256.empty()) {
            bool known = false;
            for (const auto& entry : manifest.files) known = known || entry.second.sha256 == sidecar.onnx_sha256;
            if (!known) {
                throw Error("tensorrt: '" + file +
                            "' was built from a graph that is not in this artifact. "
                            "Note: rebuild with fsqdeploy export --trt");
            }
        }
        std::ifstream in(path, std::ios::binary);
        const std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // A version-compatible plan carries its own lean runtime, host code TensorRT refuses to run
        // unless allowed (the default is false: IRuntime::setEngineHostCodeAllowed, NvInferRuntime.h;
        // "Version Compatibility" in TensorRT's developer guide). The runtime is shared by both
        // engines, so the flag is set for each one, as Python's runner does on its own runtime.
        runtime.setEngineHostCodeAllowed(sidecar.version_compatible);
        engine_.reset(runtime.deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_) {
            throw Error("tensorrt: could not load '" + path.string() +
                        "'. Note: rebuild it with fsqdeploy export RUN --out ART --trt on this machine");
        }
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error("tensorrt: could not create an execution context for '" + file + "'");

        const bool named = engine_->getNbIOTensors() == 2 &&
                           engine_->getTensorIOMode(input_.c_str()) == nvinfer1::TensorIOMode::kINPUT &&
                           engine_->getTensorIOMode(output_.c_str()) == nvinfer1::TensorIOMode::kOUTPUT;
        if (!named) {
            throw Error("tensorrt: '" + file + "' does not have the manifest's input '" + input_ + "' and output '" +
                        output_ + "'. Note: rebuild with fsqdeploy export --trt");
        }
        in_type_ = engine_->getTensorDataType(input_.c_str());
        out_type_ = engine_->getTensorDataType(output_.c_str());
        // Images are float32 (or float16, converted here), indices int32, as in the manifest's io.
        auto is_float = [](nvinfer1::DataType t) {
            return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF;
        };
        const nvinfer1::DataType indices_type = images_in ? out_type_ : in_type_;
        if (!is_float(images_in ? in_type_ : out_type_) || indices_type != nvinfer1::DataType::kINT32) {
            throw Error("tensorrt: '" + file +
                        "' does not take and return the manifest's types (float32 or "
                        "float16 images, int32 indices). Note: rebuild with fsqdeploy export --trt");
        }
        const nvinfer1::Dims lo = engine_->getProfileShape(input_.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
        const nvinfer1::Dims hi = engine_->getProfileShape(input_.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        if (lo.nbDims < 1 || hi.nbDims < 1 || lo.d[0] < 1 || hi.d[0] < lo.d[0]) {
            throw Error("tensorrt: '" + file + "' has no usable optimization profile for '" + input_ + "'");
        }
        min_batch_ = static_cast<std::size_t>(lo.d[0]);
        max_batch_ = static_cast<std::size_t>(hi.d[0]);

        std::size_t item_in = 1;
        for (std::int64_t d : item_in_shape_) item_in *= static_cast<std::size_t>(d);
        item_in_ = item_in;
        device_in_ = std::make_unique<DeviceBuffer>(max_batch_ * item_in_ * element_size(in_type_));
        device_out_ = std::make_unique<DeviceBuffer>(max_batch_ * item_out_ * element_size(out_type_));
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }

    ~TrtEngine() {
        if (stream_) cudaStreamDestroy(stream_);
    }
    TrtEngine(const TrtEngine&) = delete;
    TrtEngine& operator=(const TrtEngine&) = delete;

    std::size_t min_batch() const { return min_batch_; }
    std::size_t max_batch() const { return max_batch_; }

    // host_in: n items of float32 or int32 (4 bytes each); host_out likewise. n <= max_batch.
    void run(const void* host_in, std::size_t n, void* host_out) {
        nvinfer1::Dims dims{};
        dims.nbDims = static_cast<std::int32_t>(1 + item_in_shape_.size());
        dims.d[0] = static_cast<std::int32_t>(n);
        for (std::size_t i = 0; i < item_in_shape_.size(); ++i) dims.d[i + 1] = item_in_shape_[i];
        if (!context_->setInputShape(input_.c_str(), dims)) {
            throw Error("tensorrt: '" + file_ + "' refused batch " + std::to_string(n));
        }
        const void* upload = host_in;
        const std::size_t in_values = n * item_in_, out_values = n * item_out_;
        if (in_type_ == nvinfer1::DataType::kHALF) {
            staging_.resize(in_values);
            const auto* src = static_cast<const float*>(host_in);
            for (std::size_t i = 0; i < in_values; ++i) staging_[i] = float_to_half(src[i]);
            upload = staging_.data();
        }
        cuda_check(cudaMemcpyAsync(device_in_->ptr, upload, in_values * element_size(in_type_), cudaMemcpyHostToDevice,
                                   stream_),
                   "cudaMemcpyAsync (to device)");
        if (!context_->setTensorAddress(input_.c_str(), device_in_->ptr) ||
            !context_->setTensorAddress(output_.c_str(), device_out_->ptr) || !context_->enqueueV3(stream_)) {
            throw Error("tensorrt: running '" + file_ + "' failed (see TensorRT's message above)");
        }
        void* download = host_out;
        if (out_type_ == nvinfer1::DataType::kHALF) {
            staging_.resize(out_values);
            download = staging_.data();
        }
        cuda_check(cudaMemcpyAsync(download, device_out_->ptr, out_values * element_size(out_type_),
                                   cudaMemcpyDeviceToHost, stream_),
                   "cudaMemcpyAsync (to host)");
        cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        if (out_type_ == nvinfer1::DataType::kHALF) {
            auto* dst = static_cast<float*>(host_out);
            for (std::size_t i = 0; i < out_values; ++i) dst[i] = half_to_float(staging_[i]);
        }
    }

private:
    std::string file_, input_, output_;
    std::vector<std::int64_t> item_in_shape_;
    std::size_t item_in_ = 0, item_out_ = 0;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;  // declared after engine_: destroyed first
    nvinfer1::DataType in_type_{}, out_type_{};
    std::size_t min_batch_ = 1, max_batch_ = 1;
    std::unique_ptr<DeviceBuffer> device_in_, device_out_;
    std::vector<std::uint16_t> staging_;
    cudaStream_t stream_ = nullptr;
};

class TrtBackend final : public Backend {
public:
    TrtBackend(const Manifest& manifest, const BackendOptions& options) {
        cuda_check(cudaSetDevice(options.device), "cudaSetDevice");
        const DeviceFacts facts = device_facts(options.device);
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw Error("tensorrt: could not create a TensorRT runtime");
        const std::int64_t s = manifest.image_size, w = manifest.code_width;
        const auto images = static_cast<std::size_t>(3 * s * s), indices = static_cast<std::size_t>(w);
        encoder_ = std::make_unique<TrtEngine>(
            manifest, graph_file(manifest, "encoder", options.encoder_file, true, options.precision),
            manifest.graph_io("encoder"), *runtime_, facts, options.precision, true,
            std::vector<std::int64_t>{3, s, s}, indices);
        decoder_ = std::make_unique<TrtEngine>(
            manifest, graph_file(manifest, "decoder", options.decoder_file, true, options.precision),
            manifest.graph_io("decoder"), *runtime_, facts, options.precision, false, std::vector<std::int64_t>{w},
            images);
    }

    std::string name() const override { return "tensorrt"; }
    // Codec chunks one batch size for both graphs: the tighter of the two profiles.
    std::size_t max_batch() const override { return std::min(encoder_->max_batch(), decoder_->max_batch()); }
    std::size_t min_batch() const override { return std::max(encoder_->min_batch(), decoder_->min_batch()); }

    void encode(const float* images, std::size_t n, std::int32_t* indices) override {
        encoder_->run(images, n, indices);
    }
    void decode(const std::int32_t* indices, std::size_t n, float* images) override {
        decoder_->run(indices, n, images);
    }

private:
    Logger logger_;  // must outlive the runtime and the engines
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<TrtEngine> encoder_, decoder_;  // declared after runtime_: destroyed first
};

}  // namespace

std::unique_ptr<Backend> open_tensorrt(const Manifest& manifest, const BackendOptions& options) {
    return std::make_unique<TrtBackend>(manifest, options);
}

}  // namespace fsq::detail
