// The .fsq file: a small checked header, then every patch's FSQ indices packed bit-tight.
//
// docs/bitstream.md is the specification; this is a byte-for-byte port of
// fsqdeploy.runtime.bitstream (runtime/bitstream.py). Files written by either side read on the
// other with identical indices, and both refuse the same damaged files with the same reasons.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace fsq {

/// The FSQ levels L_0 .. L_{D-1}, one per index position; each in [2, 65535].
using Levels = std::vector<int>;
/// A raw sha256 digest: the manifest's model_id, stored in every .fsq file it wrote.
using ModelHash = std::array<std::uint8_t, 32>;

inline constexpr int kMaxLevel = 0xFFFF;
inline constexpr std::size_t kMaxLevels = 32729;  // so that header_length = 76 + 2*D fits its u16

/// A 64-character hex string (as manifests store model_id) as raw bytes; throws Error otherwise.
ModelHash hash_from_hex(std::string_view hex);
std::string to_hex(const ModelHash& hash);

/// ceil(log2(prod(levels))), exact: the smallest b with prod(levels) <= 2^b. Throws on bad levels.
std::uint32_t bits_per_patch(const Levels& levels);

/// Pack `count` patches of D = levels.size() indices (row-major [count, D], index d in
/// [0, levels[d])) into exactly ceil(count * bits_per_patch / 8) bytes, mixed radix, LSB first.
std::vector<std::uint8_t> pack_indices(const std::int32_t* indices, std::size_t count, const Levels& levels);
/// The same for a flat vector whose size must be a multiple of D.
std::vector<std::uint8_t> pack_indices(const std::vector<std::int32_t>& indices, const Levels& levels);

/// Inverse of pack_indices: int32 [count, D] from exactly ceil(count * bits_per_patch / 8) bytes.
/// Refuses nonzero padding bits and fields that decode to prod(levels) or more.
std::vector<std::int32_t> unpack_indices(const std::uint8_t* data, std::size_t size, const Levels& levels,
                                         std::uint64_t count);

/// Everything besides the payload.
struct Header {
    ModelHash model_hash{};          // raw sha256 of the model (the manifest's model_id)
    std::uint32_t image_height = 0;  // original image size in pixels, before padding to whole patches
    std::uint32_t image_width = 0;
    std::uint16_t patch_size = 0;  // the model's image size, e.g. 32
    std::uint32_t grid_rows = 0;   // ceil(image_height / patch_size)
    std::uint32_t grid_cols = 0;   // ceil(image_width / patch_size)
    Levels levels;

    /// The header for an image tiled row-major into patch_size squares, the edges padded.
    /// Throws Error when a size is 0 or does not fit its field, or the levels are invalid.
    static Header for_image(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                            std::uint64_t patch_size, Levels levels);

    /// Throws Error unless the fields are what for_image would make (non-empty sizes, a grid that
    /// tiles the image, valid levels); write() calls it, so a header that would not round trip
    /// cannot be written.
    void check() const;

    std::uint64_t num_patches() const { return std::uint64_t{grid_rows} * grid_cols; }
    std::size_t header_length() const { return 76 + 2 * levels.size(); }

    bool operator==(const Header& other) const;
    bool operator!=(const Header& other) const { return !(*this == other); }
};

/// A whole .fsq file: the header and the indices [grid_rows * grid_cols, D], tiles row-major.
struct Bitstream {
    Header header;
    std::vector<std::int32_t> indices;

    /// The file's bytes. Throws Error on an invalid header or indices of the wrong shape or range.
    std::vector<std::uint8_t> write() const;
    /// Encodes first, then writes a temp file beside `path` and renames it: all or nothing.
    void save(const std::filesystem::path& path) const;

    /// Parse and check a whole file, in the order docs/bitstream.md lists; every malformed,
    /// truncated or damaged input is an Error ("bitstream: ..."), never undefined behaviour.
    static Bitstream read(const std::uint8_t* data, std::size_t size);
    static Bitstream read(const std::vector<std::uint8_t>& data) { return read(data.data(), data.size()); }
    static Bitstream load(const std::filesystem::path& path);
};

/// Refuse to decode a file with a model other than the one that wrote it.
void check_model(const Header& header, const ModelHash& model_hash, const Levels& levels);

/// zlib's CRC32 (IEEE 802.3), as the format uses it.
std::uint32_t crc32(const std::uint8_t* data, std::size_t size);

}  // namespace fsq
