// Codec: the exported FSQ codec on any compiled backend, with the Python runtime's contract.
//
//     fsq::Codec codec = fsq::Codec::open("art");          // verifies every file's sha256 first
//     std::vector<int32_t> idx = codec.encode(images, {n, 3, S, S});  // paper: float [0, 1] -> int32 [n, W]
//     std::vector<float> out = codec.decode(idx, {n, W});              // -> float [n, 3, S, S]
//     codec.compress(image).save("photo.fsq", codec.prior()); // any H x W RGB image -> .fsq (either arch)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "fsq/backend.hpp"
#include "fsq/bitstream.hpp"
#include "fsq/entropy.hpp"
#include "fsq/manifest.hpp"

namespace fsq {

/// An 8-bit RGB image: rows top to bottom, pixels interleaved, rgb.size() == height * width * 3.
struct Image {
    std::uint32_t height = 0;
    std::uint32_t width = 0;
    std::vector<std::uint8_t> rgb;
};

/// The image as float32 patches [rows * cols, 3, P, P] in [0, 1] (value / 255), tiles row-major,
/// padded on the right and bottom by repeating its edge pixels: runtime/compress.py's to_patches.
std::vector<float> to_patches(const Image& image, std::uint32_t patch_size);
/// Inverse of to_patches: stitch the grid, crop to height x width, clip to [0, 1] and round to
/// 8 bits as compress.py's from_patches does (NaN becomes 0).
Image from_patches(const float* patches, std::uint32_t grid_rows, std::uint32_t grid_cols, std::uint32_t height,
                   std::uint32_t width, std::uint32_t patch_size);

/// True when every pixel has R = G = B: compress then sets the file's grey flag (images.py's is_grey).
bool is_grey(const Image& image);
/// Each pixel's three channels set to (R + G + B + 1) / 3, their mean rounded to nearest: what
/// decompress returns for a grey file (images.py's to_grey; docs/bitstream.md, flags).
void to_grey(Image& image);

/// The boundary checks of fsqdeploy/validation.py, with its messages: images float32
/// [N, 3, S, S], finite, in [0, 1]; indices [N, W] with index c in [0, levels[c]).
void check_images(const float* images, const std::vector<std::int64_t>& shape, int image_size,
                  const char* component = "encode");
void check_indices(const std::int32_t* indices, const std::vector<std::int64_t>& shape, const Levels& levels,
                   const char* component = "decode");

/// A part of an image in pixels: left, top, width, height (the Python CLI's --region X,Y,W,H).
struct Region {
    std::uint32_t x = 0, y = 0, width = 0, height = 0;
};

/// The Python Codec's DEFAULT_MAX_PIXELS: a conv image larger than this (padded) runs in tiles.
inline constexpr std::uint64_t kDefaultMaxPixels = 2048ull * 2048;

/// An artifact's codec. Paper artifacts: patch batches (encode / decode) and images (compress /
/// decompress). Conv artifacts: images only, each through the dynamic-shape graphs in one pass
/// (the onnxruntime backend), entropy-coded over ART/prior.json as the Python Codec does.
class Codec {
public:
    Codec(Manifest manifest, std::unique_ptr<Backend> backend);
    /// Manifest::load (every file's size and sha256 checked) then open_backend.
    static Codec open(const std::filesystem::path& art_dir, const BackendOptions& options = {});

    const Manifest& manifest() const { return manifest_; }
    Backend& backend() { return *backend_; }
    int image_size() const { return manifest_.image_size; }
    std::size_t code_width() const { return manifest_.levels.size(); }

    /// float32 images [N, 3, S, S] in [0, 1] -> int32 indices [N, W], row-major. Batches larger
    /// than the backend's maximum are split into chunks.
    std::vector<std::int32_t> encode(const float* images, const std::vector<std::int64_t>& shape);
    std::vector<std::int32_t> encode(const std::vector<float>& images, const std::vector<std::int64_t>& shape);
    /// int32 indices [N, W] -> float32 images [N, 3, S, S].
    std::vector<float> decode(const std::int32_t* indices, const std::vector<std::int64_t>& shape);
    std::vector<float> decode(const std::vector<std::int32_t>& indices, const std::vector<std::int64_t>& shape);

    /// Any H x W image -> a .fsq bitstream. Paper: version 2 layout 0 (tile with edge padding,
    /// encode, header for_patches). Conv: layout 1, the image edge-padded to multiples of f and
    /// encoded whole, coding 2 (or 1) over prior() unless that is no smaller than the fixed rate
    /// (coding 0): the Python Codec's compress, byte for byte. Save it with prior().
    Bitstream compress(const Image& image);
    /// A .fsq bitstream written by this model (paper: version 1 or 2, patches of its size; conv: a
    /// latent grid of its f) -> the H x W image; refuses another model's file and the other layout.
    Image decompress(const Bitstream& bitstream);
    /// Only `region` of the image (width x height pixels): a conv model decodes the latent cells under
    /// it widened by the decoder's halo, a patch model the patches under it, so the pixels are the
    /// whole decode's (to float32 rounding, as with tiling) at a fraction of the work; the Python
    /// Codec.decompress(data, region), refused with its message when it is not inside the image.
    Image decompress(const Bitstream& bitstream, const Region& region);
    /// ART/prior.json of a conv artifact that has one (checked on load), else nullptr: what
    /// Bitstream::save / load need for entropy-coded files.
    const Prior* prior() const { return prior_ ? &*prior_ : nullptr; }
    /// Conv artifacts: an image whose padded size is above `max_pixels` runs in tiles widened by
    /// the manifest's halos (runtime/tiles.py), with exactly the one-pass result and memory bounded
    /// by the largest window; `tile_pixels` > 0 sets the tiles' core side instead (a multiple of f).
    /// The Python Codec's max_pixels and tile, refused with its messages; no effect on paper artifacts.
    void set_tiling(std::uint64_t max_pixels, std::uint32_t tile_pixels = 0);

private:
    void run(bool encoding, const void* in, std::size_t n, void* out);
    Bitstream compress_grid(const Image& image);
    Image decompress_grid(const Bitstream& bitstream, const Region& region);
    std::size_t core_cells(std::size_t height, std::size_t width, std::size_t halo) const;

    Manifest manifest_;
    std::unique_ptr<Backend> backend_;
    std::optional<Prior> prior_;
    std::uint64_t max_pixels_ = kDefaultMaxPixels;
    std::uint32_t tile_pixels_ = 0;
};

}  // namespace fsq
