// ART/manifest.json: what an artifact directory holds, for which model, with every file's sha256.
//
// docs/artifacts.md lists the fields; fsqdeploy/artifact.py (its Python twin, Manifest) writes
// them. Manifest::load refuses a directory whose files do not match their recorded size and
// sha256, before anything is loaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fsq/bitstream.hpp"

namespace fsq {

inline constexpr const char* kManifestFile = "manifest.json";

struct FileEntry {
    std::string sha256;  // lower-case hex
    std::uint64_t size = 0;
};

/// One graph input or output of the manifest's "io": a symbolic dimension ("batch") is -1.
struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
};

struct GraphIo {
    std::vector<TensorInfo> inputs, outputs;
};

struct Manifest {
    std::filesystem::path dir;
    std::string model_id;  // hex sha256 of the model; .fsq files carry it as model_hash
    ModelHash model_hash{};
    Levels levels;       // one per index column
    int latent_dim = 0;  // D
    int code_width = 0;  // W = len(levels) = stages * D
    int image_size = 0;  // S: images are [N, 3, S, S], the bitstream's patch_size
    int stages = 0;      // K
    double temperature = 0;
    int opset = 0;
    std::map<std::string, FileEntry> files;  // relative path -> sha256, size
    std::map<std::string, GraphIo> io;       // "encoder", "decoder"

    /// Read and check ART/manifest.json, then verify every listed file's size and sha256;
    /// throws Error ("artifact: ...") on the first problem.
    static Manifest load(const std::filesystem::path& art_dir);
    /// Read and check the manifest's fields only (no hashing), like fsqdeploy.artifact.Manifest.load.
    static Manifest read(const std::filesystem::path& art_dir);

    /// One line per listed file that is missing, resized or re-hashed; empty when all match.
    std::vector<std::string> verify_files() const;

    /// dir / name for a file the manifest lists; throws Error for any other name.
    std::filesystem::path file(const std::string& name) const;
    /// The graph's I/O; throws Error when the manifest has no such graph.
    const GraphIo& graph_io(const std::string& graph) const;
    /// Listed files whose name ends in .plan or .engine (TensorRT engines), sorted.
    std::vector<std::string> engine_files() const;
};

/// An engine's sidecar, `<engine>.json`, written beside it by `fsqdeploy export --trt`.
struct EngineSidecar {
    std::string tensorrt_version;      // e.g. "10.7.0"
    std::string cuda_version;          // e.g. "12.6"
    std::string gpu_name;              // e.g. "NVIDIA L4"
    std::string compute_capability;    // e.g. "8.9"
    std::string precision;             // fp32, fp16, int8
    std::string onnx_sha256;           // the graph it was built from ("" when not recorded)
    bool version_compatible = false;   // built with --version-compatible: any TensorRT of the same major
    bool hardware_compatible = false;  // built with --hardware-compatible: any Ampere+ GPU

    static EngineSidecar load(const std::filesystem::path& engine_path);
};

/// What an engine must match here: TensorRT's version and the GPU's compute capability.
struct DeviceFacts {
    std::string tensorrt_version;  // "major.minor.patch"
    std::string gpu_name;
    std::string compute_capability;  // "major.minor"
};

/// Refuse an engine built for another TensorRT version or GPU, as fsqdeploy/backends/tensorrt.py
/// does, with a message that says to rebuild instead of TensorRT's deserialization error.
void check_sidecar(const std::string& engine_name, const EngineSidecar& sidecar, const DeviceFacts& here);

/// Lower-case hex sha256 of a file's bytes (OpenSSL EVP); throws Error if it cannot be read.
std::string sha256_file(const std::filesystem::path& path);
std::string sha256_hex(const void* data, std::size_t size);

}  // namespace fsq
