// Shared by the tests: temporary directories, the golden vector, and artifact directories made on
// the spot (dummy graph files with their real sha256 in a manifest shaped like export/pipeline.py's).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "fsq/fsq.hpp"

namespace fsq::test {

namespace fs = std::filesystem;

// docs/bitstream.md's version 1 golden file: a 5x7 image, 4-pixel patches, levels [3, 5, 7], hash 00..1f.
inline const char* const kGoldenHex =
    "4653514201005200000102030405060708090a0b0c0d0e0f101112131415"
    "161718191a1b1c1d1e1f0500000007000000040002000000020000000300"
    "0300050007000700000004000000000000007d0737be0034ad0950e85360";
// docs/bitstream.md's version 2 golden files: the same image, levels, hash and indices as a latent
// grid (layout 1, f = 4) and as patches (layout 0, P = 4); they differ in the layout byte and CRC.
inline const char* const kGoldenV2GridHex =
    "46535142020074000001020304050607"
    "08090a0b0c0d0e0f1011121314151617"
    "18191a1b1c1d1e1f0500000007000000"
    "01000400020000000200000003000300"
    "05000700070000000400000000000000"
    "00000000000000000000000000000000"
    "00000000000000000000000000000000"
    "49c5ace90034ad0950e85360";
inline const char* const kGoldenV2PatchesHex =
    "46535142020074000001020304050607"
    "08090a0b0c0d0e0f1011121314151617"
    "18191a1b1c1d1e1f0500000007000000"
    "00000400020000000200000003000300"
    "05000700070000000400000000000000"
    "00000000000000000000000000000000"
    "00000000000000000000000000000000"
    "dce899660034ad0950e85360";
// docs/bitstream.md's coding-1 golden file: the v2 grid golden, rANS-coded with its documented prior.
inline const char* const kGoldenRansHex =
    "46535142020074000001020304050607"
    "08090a0b0c0d0e0f1011121314151617"
    "18191a1b1c1d1e1f0500000007000000"
    "01010400020000000200000003000300"
    "05000700070000000c00000000000000"
    "1b8a26fe2f899439e9efd51432a60200"
    "ce541d9f1e99c53161126442375ea29d"
    "d0f429240164dd0140ffd7ffa581fc00"
    "f72a56e1";
inline const Levels kGoldenLevels = {3, 5, 7};
inline const std::vector<std::int32_t> kGoldenIndices = {0, 0, 0, 2, 4, 6, 1, 2, 3, 2, 0, 5};

inline std::vector<std::uint8_t> from_hex(const std::string& hex) {
    std::vector<std::uint8_t> out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<std::uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    return out;
}

inline std::string to_hex_bytes(const std::vector<std::uint8_t>& bytes) { return to_hex(bytes.data(), bytes.size()); }

// docs/bitstream.md's coding-1 golden prior (levels [3, 5, 7]); the fuzz target reads with it too.
inline Prior golden_prior() {
    return Prior(kGoldenLevels, {{32768, 16384, 16384}, {30000, 20000, 10000, 5000, 536}, {1, 2, 3, 65524, 2, 2, 2}});
}

// docs/bitstream.md's coding-2 golden: levels [3, 2], a 2 x 3 grid of a 6 x 10 image (f = 4), coded
// with golden_context_prior(); the fuzz target reads coding-2 files with that prior.
inline const char* const kGoldenContextHex =
    "46535142020072000001020304050607"
    "08090a0b0c0d0e0f1011121314151617"
    "18191a1b1c1d1e1f060000000a000000"
    "01020400020000000300000002000300"
    "0200030000000d0000000000000054e3"
    "398a1c71a90646e757502ddbe637b4c0"
    "b3e6f5e0f467f4ba1e2a6376529b45b1"
    "4d4c3b008c2acf18df2082281afd98d1"
    "7690b8";
inline const Levels kGoldenContextLevels = {3, 2};
inline const std::vector<std::int32_t> kGoldenContextIndices = {0, 1, 2, 0, 1, 1, 2, 1, 0, 0, 1, 0};

// Table ctx of a column of L symbols: quantize_counts of (s + 1)^2, plus 1000 for s = ctx % L.
inline Prior golden_context_prior(std::uint64_t symbols_per_lane = 2048) {
    const std::vector<std::vector<std::uint32_t>> three = {{64694, 259, 583}, {65, 64888, 583}, {66, 259, 65211}};
    const std::vector<std::vector<std::uint32_t>> two = {{65274, 262}, {66, 65470}};
    std::vector<std::vector<std::vector<std::uint32_t>>> contexts(2);
    for (std::size_t ctx = 0; ctx < 9; ++ctx) contexts[0].push_back(three[ctx % 3]);
    for (std::size_t ctx = 0; ctx < 4; ++ctx) contexts[1].push_back(two[ctx % 2]);
    return Prior(kGoldenContextLevels, {{21846, 21845, 21845}, {32768, 32768}}, contexts, symbols_per_lane);
}

inline ModelHash golden_hash() {
    ModelHash h{};
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(i);
    return h;
}

/// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        std::random_device entropy;
        path_ = fs::temp_directory_path() / ("fsq-test-" + std::to_string(entropy()) + std::to_string(entropy()));
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }

private:
    fs::path path_;
};

inline void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& data) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

inline void write_text(const fs::path& path, const std::string& text) {
    write_bytes(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

/// fsqdeploy.artifact.io_contract: patch models [batch, 3, S, S] <-> [batch, W]; spatial (conv)
/// models [batch, 3, height, width] <-> [batch, W, grid_height, grid_width].
inline nlohmann::json io_contract(int image_size, int code_width, bool spatial = false) {
    const nlohmann::json image_shape =
        spatial ? nlohmann::json{"batch", 3, "height", "width"} : nlohmann::json{"batch", 3, image_size, image_size};
    const nlohmann::json index_shape = spatial ? nlohmann::json{"batch", code_width, "grid_height", "grid_width"}
                                               : nlohmann::json{"batch", code_width};
    const nlohmann::json images = {{"name", "images"}, {"dtype", "float32"}, {"shape", image_shape}};
    const nlohmann::json indices = {{"name", "indices"}, {"dtype", "int32"}, {"shape", index_shape}};
    return {{"encoder", {{"inputs", {images}}, {"outputs", {indices}}}},
            {"decoder", {{"inputs", {indices}}, {"outputs", {images}}}}};
}

/// An artifact directory with dummy graphs (and any extra files) and a manifest listing their real
/// sha256 and size, shaped like export/pipeline.py's build_manifest. Returns the manifest JSON.
/// arch "conv" makes a spatial artifact (downsample 8); "" leaves arch and downsample out, as
/// manifests written before the conv codec do.
inline nlohmann::json make_art(const fs::path& dir, const Levels& levels = {8, 5, 5, 5}, int image_size = 32,
                               int stages = 1, const std::vector<std::string>& extra_files = {},
                               const std::string& arch = "paper") {
    std::vector<std::string> names = {"encoder.onnx", "decoder.onnx", "checkpoint/model.safetensors"};
    names.insert(names.end(), extra_files.begin(), extra_files.end());
    nlohmann::json files = nlohmann::json::object();
    for (const std::string& name : names) {
        const std::string content = "dummy bytes of " + name;
        write_text(dir / name, content);
        files[name] = {{"sha256", sha256_hex(content.data(), content.size())}, {"size", content.size()}};
    }
    const int width = static_cast<int>(levels.size());
    nlohmann::json m = {
        {"format", "fsqdeploy-artifact"},
        {"format_version", 1},
        {"model_id", sha256_hex("model", 5)},
        {"levels", levels},
        {"latent_dim", width / stages},
        {"code_width", width},
        {"image_size", image_size},
        {"stages", stages},
        {"temperature", 0.1},
        {"opset", 18},
        {"inline", false},
        {"io", io_contract(image_size, width, arch == "conv")},
        {"files", files},
        {"parity", {{"passed", true}}},
    };
    if (!arch.empty()) {
        m["arch"] = arch;
        m["downsample"] = arch == "conv" ? 8 : 16;
    }
    write_text(dir / "manifest.json", m.dump(2));
    return m;
}

/// EXPECT that `statement` throws fsq::Error whose message contains `needle`.
#define EXPECT_FSQ_ERROR(statement, needle)                                               \
    do {                                                                                  \
        try {                                                                             \
            statement;                                                                    \
            ADD_FAILURE() << "expected fsq::Error containing: " << (needle);              \
        } catch (const fsq::Error& e) {                                                   \
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what(); \
        }                                                                                 \
    } while (0)

}  // namespace fsq::test
