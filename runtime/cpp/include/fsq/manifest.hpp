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

/// One graph input or output of the manifest's "io": a symbolic dimension ("batch", "height") is
/// -1 in shape, with its name in symbols ("" for a fixed dimension).
struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::string> symbols;
};

/// The architectures this reader knows: "paper" (one index vector per S x S image, the seed's
/// model) and "conv" (fully convolutional: a latent grid [N, D, H/f, W/f] over any H, W multiple of f).
inline constexpr const char* kArchPaper = "paper";
inline constexpr const char* kArchConv = "conv";

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
    int image_size = 0;  // S: paper images are [N, 3, S, S], the bitstream's patch size; conv: the training crop
    int stages = 0;      // K
    std::string arch = kArchPaper;  // absent in manifests written before the conv codec: those are paper models
    int downsample = 16;            // f: pixels per latent position along each axis (conv), the bitstream's cell_size
    // conv: the tiling halos (runtime/tiles.py), from the manifest's "tiling" record, else
    // fsqdeploy.config.tile_halos' 3f pixels and 4 cells, as the Python Codec falls back
    int encoder_halo = 48;  // pixels
    int decoder_halo = 4;   // latent cells
    double temperature = 0;
    int opset = 0;
    std::map<std::string, FileEntry> files;  // relative path -> sha256, size
    std::map<std::string, GraphIo> io;       // "encoder", "decoder"

    /// Read and check ART/manifest.json, then verify every listed file's size and sha256;
    /// throws Error ("artifact: ...") on the first problem.
    static Manifest load(const std::filesystem::path& art_dir);
    /// Read and check the manifest's fields only (no hashing), like fsqdeploy.artifact.Manifest.load.
    static Manifest read(const std::filesystem::path& art_dir);

    /// Indices are a grid [N, D, H/f, W/f] and images any H, W multiple of f (arch "conv").
    bool spatial() const { return arch == kArchConv; }

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
    std::string tensorrt_version;              // TensorRT's __version__ where it was built, e.g. "10.7.0.23"
    std::string cuda_version;                  // e.g. "12.6"
    std::string gpu_name;                      // e.g. "NVIDIA L4"
    std::string compute_capability;            // e.g. "8.9"
    std::string precision;                     // fp32, fp16, int8
    std::string onnx_sha256;                   // the graph it was built from ("" when not recorded)
    std::optional<std::string> engine_sha256;  // the engine's own sha256, when recorded
    bool version_compatible = false;   // --version-compatible: this or a later TensorRT (version_compatible_runs)
    bool hardware_compatible = false;  // --hardware-compatible: any GPU of compute capability 8.0 or newer

    /// Read `<engine>.json`; refuses a missing or malformed file, or one that lacks a key the
    /// check needs (tensorrt_version, gpu_name, compute_capability, precision, profile).
    static EngineSidecar load(const std::filesystem::path& engine_path);
};

/// What an engine must match here: TensorRT's version and the GPU's compute capability.
struct DeviceFacts {
    std::string tensorrt_version;  // "major.minor.patch.build", as Python's tensorrt.__version__
    std::string gpu_name;
    std::string compute_capability;  // "major.minor"
};

/// Numeric parts of a version, "10.13.0.35" -> {10, 13, 0, 35}; a part that is not a number ends
/// it (fsqdeploy.backends.tensorrt_env.version_tuple).
std::vector<long long> version_tuple(const std::string& version);

/// Whether a version-compatible engine built with TensorRT `built` loads on TensorRT `here`, as
/// TensorRT documents it (fsqdeploy/backends/tensorrt.py's version_compatible_runs; sources in
/// manifest.cpp): both 8.6 or later, and either the same major with `here >= built` part by part,
/// or a documented later major (8 -> 9 or 10, 10 -> 11).
bool version_compatible_runs(const std::vector<long long>& built, const std::vector<long long>& here);

/// Refuse an engine built for another TensorRT version or GPU, or of another precision than the
/// one asked for (when `precision` is not empty), with fsqdeploy/backends/tensorrt.py's messages,
/// which say to rebuild, instead of TensorRT's deserialization error.
void check_sidecar(const std::string& engine_name, const EngineSidecar& sidecar, const DeviceFacts& here,
                   const std::string& precision = "");

/// The whole check of fsqdeploy/backends/tensorrt.py's check_sidecar, in its order: the engine and
/// its sidecar exist, the sidecar is valid and complete, its engine_sha256 (when recorded) is the
/// engine file's, then check_sidecar. Returns the sidecar.
EngineSidecar check_engine(const std::filesystem::path& engine_path, const DeviceFacts& here,
                           const std::string& precision = "");

/// Lower-case hex sha256 of a file's bytes (OpenSSL EVP); throws Error if it cannot be read.
std::string sha256_file(const std::filesystem::path& path);
std::string sha256_hex(const void* data, std::size_t size);

}  // namespace fsq
