// The .fsq file: a small checked header, then every cell's FSQ indices packed bit-tight.
//
// A cell is what one index vector describes: a cell_size x cell_size patch encoded on its own
// (layout 0, the paper model), or one position of a single latent grid over the whole image
// (layout 1, the conv codec; cell_size is its downsampling factor f). Version 2 files say which;
// version 1 files (patches only) stay readable, and Header::for_image still writes them.
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
/// The most levels a file can hold, so that header_length (76 + 2*D in v1, 110 + 2*D in v2)
/// fits its u16: 32729 in version 1, 32712 in version 2 (what writers write now).
inline constexpr std::size_t kMaxLevels = 32729;
inline constexpr std::size_t kMaxLevelsV2 = 32712;

inline constexpr std::uint8_t kVersion = 2;        // what Header::for_patches / for_grid write
inline constexpr std::uint8_t kLayoutPatches = 0;  // each cell an independent cell_size x cell_size patch
inline constexpr std::uint8_t kLayoutGrid = 1;     // the cells are the positions of one latent grid
inline constexpr std::uint8_t kFlagGrey = 0x01;   // version 2 flags bit 0: the source image was grey
inline constexpr std::uint8_t kCodingFixed = 0;    // fixed-rate mixed-radix packing (coding 1: fsq/entropy.hpp)

class Prior;  // fsq/entropy.hpp: the entropy coder's frozen tables

/// A 64-character hex string (as manifests store model_id) as raw bytes; throws Error otherwise.
ModelHash hash_from_hex(std::string_view hex);
std::string to_hex(const ModelHash& hash);
/// Lower-case hex of any bytes (to_hex of a hash is this over its 32 bytes).
std::string to_hex(const std::uint8_t* data, std::size_t size);

/// ceil(log2(prod(levels))), exact: the smallest b with prod(levels) <= 2^b. Throws on bad levels.
std::uint32_t bits_per_patch(const Levels& levels);

/// Pack `count` patches of D = levels.size() indices (row-major [count, D], index d in
/// [0, levels[d])) into exactly ceil(count * bits_per_patch / 8) bytes, mixed radix, LSB first.
std::vector<std::uint8_t> pack_indices(const std::int32_t* indices, std::size_t count, const Levels& levels);
/// The same for a flat vector whose size must be a multiple of D.
std::vector<std::uint8_t> pack_indices(const std::vector<std::int32_t>& indices, const Levels& levels);

/// Inverse of pack_indices: int32 [count, D] from exactly ceil(count * bits_per_patch / 8) bytes.
/// Refuses nonzero padding bits and fields that decode to prod(levels) or more; `unit` names a
/// field in those messages ("patch" as version 1 calls it, "cell" as version 2 does).
std::vector<std::int32_t> unpack_indices(const std::uint8_t* data, std::size_t size, const Levels& levels,
                                         std::uint64_t count, std::string_view unit = "patch");

/// Everything besides the payload.
struct Header {
    ModelHash model_hash{};          // raw sha256 of the model (the manifest's model_id)
    std::uint32_t image_height = 0;  // original image size in pixels, before padding to whole cells
    std::uint32_t image_width = 0;
    std::uint16_t cell_size = 0;  // the patch side P (layout 0) or the downsampling factor f (layout 1)
    std::uint32_t grid_rows = 0;  // ceil(image_height / cell_size)
    std::uint32_t grid_cols = 0;  // ceil(image_width / cell_size)
    Levels levels;
    std::uint8_t version = kVersion;
    std::uint8_t layout = kLayoutPatches;  // version 1 files hold patches only
    std::uint8_t coding = kCodingFixed;
    ModelHash prior_hash{};  // codings 1 and 2: the sha256 of the prior's tables (Prior::hash); zero for coding 0
    bool grey = false;       // version 2 flags bit 0: the image was grey (R = G = B), so it decodes grey

    /// A version 2 header (layout 0) for an image tiled row-major into patch_size squares, each
    /// encoded on its own (the paper model), the edges padded.
    static Header for_patches(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                              std::uint64_t patch_size, Levels levels);
    /// A version 2 header (layout 1) for the latent grid of an image edge-padded on the bottom and
    /// right to multiples of `downsample` (f) and encoded in one piece: one cell per position.
    static Header for_grid(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                           std::uint64_t downsample, Levels levels);
    /// A version 1 header (patches; the format before version 2, which both readers still read).
    static Header for_image(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                            std::uint64_t patch_size, Levels levels);

    /// Throws Error unless the fields are what the factories would make (a known version, layout
    /// and coding, non-empty sizes, a grid that tiles the image, valid levels); write() calls it,
    /// so a header that would not round trip cannot be written. Messages are FsqHeader's.
    void check() const;

    /// This (version 2) header for an entropy-coded payload over `prior`'s tables: coding 2 when it
    /// has context tables, else 1.
    Header with_prior(const Prior& prior) const;

    /// True when the cells are one latent grid (layout 1), not independent patches.
    bool spatial() const { return layout == kLayoutGrid; }
    std::uint64_t num_cells() const { return std::uint64_t{grid_rows} * grid_cols; }
    /// Version 1's name of num_cells().
    std::uint64_t num_patches() const { return num_cells(); }
    /// Bytes from offset 0 to the payload: 76 + 2*D in version 1, 110 + 2*D in version 2.
    std::size_t header_length() const;

    bool operator==(const Header& other) const;
    bool operator!=(const Header& other) const { return !(*this == other); }
};

/// A whole .fsq file: the header and the indices [grid_rows * grid_cols, D], cells row-major.
/// For a latent grid (layout 1), cell (r, c) holds indices[0, :, r, c] of the channels-first grid
/// [1, D, rows, cols]: grid_to_cells / cells_to_grid convert.
struct Bitstream {
    Header header;
    std::vector<std::int32_t> indices;

    /// The file's bytes. Throws Error on an invalid header or indices of the wrong shape or range;
    /// a coding-1 header needs its `prior` (another is refused).
    std::vector<std::uint8_t> write(const Prior* prior = nullptr) const;
    /// Encodes first, then writes a temp file beside `path` and renames it: all or nothing.
    void save(const std::filesystem::path& path, const Prior* prior = nullptr) const;

    /// Parse and check a whole file, in the order docs/bitstream.md lists; every malformed,
    /// truncated or damaged input is an Error ("bitstream: ..."), never undefined behaviour.
    /// An entropy-coded file (coding 1) needs `prior`, the artifact's; another is refused.
    static Bitstream read(const std::uint8_t* data, std::size_t size, const Prior* prior = nullptr);
    static Bitstream read(const std::vector<std::uint8_t>& data, const Prior* prior = nullptr) {
        return read(data.data(), data.size(), prior);
    }
    static Bitstream load(const std::filesystem::path& path, const Prior* prior = nullptr);
};

/// A channels-first grid [1, D, rows, cols] (what a spatial encoder outputs) -> [rows * cols, D],
/// cell (r, c) at row r * cols + c; and back. Both throw Error when the size is not D * rows * cols.
std::vector<std::int32_t> grid_to_cells(const std::vector<std::int32_t>& grid, std::size_t d, std::size_t rows,
                                        std::size_t cols);
std::vector<std::int32_t> cells_to_grid(const Header& header, const std::vector<std::int32_t>& cells);

/// Refuse to decode a file with a model other than the one that wrote it.
void check_model(const Header& header, const ModelHash& model_hash, const Levels& levels);

/// zlib's CRC32 (IEEE 802.3), as the format uses it.
std::uint32_t crc32(const std::uint8_t* data, std::size_t size);

}  // namespace fsq
