// Codec: validation at the boundary, batch chunking, tiling; the backend only runs graphs.
#include "fsq/codec.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "fsq/error.hpp"

namespace fsq {
namespace {

std::string shape_text(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

std::string g4(double v) {  // Python's f"{v:.4g}"
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return buf;
}

// n items of `per_item` values each, refused when the count would not fit memory (or size_t).
std::size_t total_values(std::size_t n, std::size_t per_item, const char* component, const char* what) {
    if (per_item != 0 && n > std::numeric_limits<std::size_t>::max() / sizeof(float) / per_item) {
        throw Error(std::string(component) + ": " + std::to_string(n) + " " + what + " of " + std::to_string(per_item) +
                    " values do not fit in memory. Note: process them in smaller batches");
    }
    return n * per_item;
}

}  // namespace

// -- validation (fsqdeploy/validation.py) -------------------------------------------------------

namespace {

void check_image_shape(const std::vector<std::int64_t>& shape, int image_size, const char* component) {
    const std::int64_t s = image_size;
    if (shape.size() != 4 || shape[0] < 0 || shape[1] != 3 || shape[2] != s || shape[3] != s) {
        throw Error(std::string(component) + ": images must have shape [N, 3, " + std::to_string(s) + ", " +
                    std::to_string(s) + "], got " + shape_text(shape));
    }
}

void check_index_shape(const std::vector<std::int64_t>& shape, const Levels& levels, const char* component) {
    const auto width = static_cast<std::int64_t>(levels.size());
    if (shape.size() != 2 || shape[0] < 0 || shape[1] != width) {
        throw Error(std::string(component) + ": indices must have shape [N, " + std::to_string(width) + "], got " +
                    shape_text(shape));
    }
}

}  // namespace

void check_images(const float* images, const std::vector<std::int64_t>& shape, int image_size, const char* component) {
    check_image_shape(shape, image_size, component);
    const std::size_t s = static_cast<std::size_t>(image_size);
    const std::size_t count = total_values(static_cast<std::size_t>(shape[0]), 3 * s * s, component, "images");
    if (count == 0) return;
    float lo = images[0], hi = images[0];
    for (std::size_t i = 0; i < count; ++i) {
        const float v = images[i];
        if (!std::isfinite(v)) throw Error(std::string(component) + ": images contain NaN or infinite values");
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    if (lo < 0.0f || hi > 1.0f) {
        throw Error(std::string(component) + ": pixel values must lie in [0, 1], got [" + g4(lo) + ", " + g4(hi) + "]");
    }
}

void check_indices(const std::int32_t* indices, const std::vector<std::int64_t>& shape, const Levels& levels,
                   const char* component) {
    check_index_shape(shape, levels, component);
    const std::size_t n = static_cast<std::size_t>(shape[0]), w = levels.size();
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t c = 0; c < w; ++c) {
            const std::int32_t v = indices[i * w + c];
            if (v < 0 || v >= levels[c]) {
                throw Error(std::string(component) + ": index " + std::to_string(v) + " at [" + std::to_string(i) +
                            ", " + std::to_string(c) + "] is outside [0, " + std::to_string(levels[c]) + ")");
            }
        }
    }
}

// -- tiling (runtime/compress.py) -------------------------------------------------------------------

namespace {

// np.clip(v, 0, 1) * 255 + 0.5, truncated (fsqdeploy.images.float_to_uint8): float32 steps, no
// fused multiply-add.
std::uint8_t to_byte(float v) {
    if (!(v >= 0.0f)) v = 0.0f;  // also NaN
    if (v > 1.0f) v = 1.0f;
    const float scaled = v * 255.0f;
    const float rounded = scaled + 0.5f;
    return static_cast<std::uint8_t>(rounded);
}

void check_image_buffer(const Image& image, std::uint32_t cell) {
    const std::size_t h = image.height, w = image.width;
    if (h == 0 || w == 0 || cell == 0) {
        throw Error("compress: image " + std::to_string(h) + "x" + std::to_string(w) + " or patch size " +
                    std::to_string(cell) + " is empty");
    }
    if (h > std::numeric_limits<std::size_t>::max() / 3 / w || image.rgb.size() != h * w * 3) {
        throw Error("compress: image holds " + std::to_string(image.rgb.size()) + " bytes, expected " +
                    std::to_string(h) + " x " + std::to_string(w) + " x 3 (interleaved RGB)");
    }
}

// Pixel rows [y0, y1) and columns [x0, x1) of the image edge-padded on the bottom and right
// (fsqdeploy.images.pad_to_multiple), as float32 [3, y1 - y0, x1 - x0] in [0, 1] (value / 255).
std::vector<float> window_planes(const Image& image, std::size_t y0, std::size_t y1, std::size_t x0, std::size_t x1) {
    const std::size_t h = image.height, w = image.width;
    std::vector<float> out(total_values(3 * (y1 - y0), x1 - x0, "compress", "pixels"));
    float* dst = out.data();
    for (std::size_t ch = 0; ch < 3; ++ch) {
        for (std::size_t y = y0; y < y1; ++y) {
            const std::uint8_t* row = image.rgb.data() + std::min(y, h - 1) * w * 3;
            for (std::size_t x = x0; x < x1; ++x) {
                *dst++ = static_cast<float>(row[std::min(x, w - 1) * 3 + ch]) / 255.0f;
            }
        }
    }
    return out;
}

// runtime/tiles.py's spans: [0, length) cut into cores of `core` cells (the last may be shorter),
// each widened by `halo` cells on both sides into its window, clipped to [0, length).
struct Span {
    std::size_t window_begin, window_end, core_begin, core_end;
};

std::vector<Span> spans(std::size_t length, std::size_t core, std::size_t halo) {
    std::vector<Span> out;
    for (std::size_t start = 0; start < length; start += core) {
        out.push_back({start > halo ? start - halo : 0, std::min(length, start + core + halo), start,
                       std::min(length, start + core)});
    }
    return out;
}

std::size_t halo_cells(const Manifest& m, bool encoder) {  // runtime/codec.py's _halo_cells
    const auto f = static_cast<std::size_t>(m.downsample);
    return encoder ? (static_cast<std::size_t>(m.encoder_halo) + f - 1) / f : static_cast<std::size_t>(m.decoder_halo);
}

std::uint64_t isqrt(std::uint64_t n) {
    auto r = static_cast<std::uint64_t>(std::sqrt(static_cast<long double>(n)));
    while (r * r > n) --r;
    while ((r + 1) * (r + 1) <= n) ++r;
    return r;
}

}  // namespace

std::vector<float> to_patches(const Image& image, std::uint32_t patch_size) {
    check_image_buffer(image, patch_size);
    const std::size_t h = image.height, w = image.width, p = patch_size;
    const std::size_t rows = (h + p - 1) / p, cols = (w + p - 1) / p;
    std::vector<float> out(rows * cols * 3 * p * p);
    float* dst = out.data();
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < cols; ++c) {
            for (std::size_t ch = 0; ch < 3; ++ch) {
                for (std::size_t y = 0; y < p; ++y) {
                    const std::size_t sy = std::min(r * p + y, h - 1);  // edge padding
                    const std::uint8_t* row = image.rgb.data() + sy * w * 3;
                    for (std::size_t x = 0; x < p; ++x) {
                        const std::size_t sx = std::min(c * p + x, w - 1);
                        *dst++ = static_cast<float>(row[sx * 3 + ch]) / 255.0f;
                    }
                }
            }
        }
    }
    return out;
}

bool is_grey(const Image& image) {
    for (std::size_t i = 0; i + 2 < image.rgb.size(); i += 3) {
        if (image.rgb[i] != image.rgb[i + 1] || image.rgb[i + 1] != image.rgb[i + 2]) return false;
    }
    return true;
}

void to_grey(Image& image) {
    for (std::size_t i = 0; i + 2 < image.rgb.size(); i += 3) {
        const unsigned sum = unsigned{image.rgb[i]} + image.rgb[i + 1] + image.rgb[i + 2];
        const auto mean = static_cast<std::uint8_t>((sum + 1) / 3);
        image.rgb[i] = image.rgb[i + 1] = image.rgb[i + 2] = mean;
    }
}

Image from_patches(const float* patches, std::uint32_t grid_rows, std::uint32_t grid_cols, std::uint32_t height,
                   std::uint32_t width, std::uint32_t patch_size) {
    const std::size_t p = patch_size, cols = grid_cols;
    if (std::uint64_t{grid_rows} * p < height || std::uint64_t{grid_cols} * p < width) {
        throw Error("decompress: a " + std::to_string(grid_rows) + "x" + std::to_string(grid_cols) + " grid of " +
                    std::to_string(p) + "-pixel patches does not cover a " + std::to_string(height) + "x" +
                    std::to_string(width) + " image");
    }
    Image image;
    image.height = height;
    image.width = width;
    image.rgb.resize(total_values(height, std::size_t{width} * 3, "decompress", "rows"));
    for (std::size_t y = 0; y < height; ++y) {
        for (std::size_t x = 0; x < width; ++x) {
            const std::size_t tile = (y / p) * cols + x / p;
            for (std::size_t ch = 0; ch < 3; ++ch) {
                image.rgb[(y * width + x) * 3 + ch] = to_byte(patches[((tile * 3 + ch) * p + y % p) * p + x % p]);
            }
        }
    }
    return image;
}

// -- Codec --------------------------------------------------------------------------------------

namespace {

// encode / decode take patch batches [N, 3, S, S]: a conv artifact codes whole images instead.
void check_patch_api(const Manifest& manifest, const char* component) {
    if (manifest.spatial()) {
        throw Error(std::string(component) + ": '" + manifest.dir.string() + "' is a " + manifest.arch +
                    " artifact (whole images, a latent grid), which codes images of any size, not patch "
                    "batches. Note: use compress / decompress");
    }
}

}  // namespace

Codec::Codec(Manifest manifest, std::unique_ptr<Backend> backend)
    : manifest_(std::move(manifest)), backend_(std::move(backend)) {
    if (!backend_) throw Error("codec: no backend given. Note: use Codec::open or open_backend");
    // The Python Codec entropy-codes a conv artifact's files over its prior; patch files stay fixed-rate.
    if (manifest_.spatial() && manifest_.files.count(kPriorFile)) prior_ = Prior::load(manifest_.file(kPriorFile));
}

void Codec::set_tiling(std::uint64_t max_pixels, std::uint32_t tile_pixels) {
    if (!manifest_.spatial()) return;  // patch models encode patch by patch: the options do not apply
    const auto f = static_cast<std::uint32_t>(manifest_.downsample);
    if (tile_pixels != 0 && (tile_pixels < f || tile_pixels % f != 0)) {
        throw Error("codec: tile " + std::to_string(tile_pixels) + " is not a positive multiple of " +
                    std::to_string(f) + " pixels (the model's downsampling factor). Note: pass e.g. " +
                    std::to_string(16 * f) + ", or leave it unset");
    }
    // The smallest window: one core cell and the wider halo on each side.
    const std::uint64_t side =
        (1 + 2 * std::uint64_t{std::max(halo_cells(manifest_, true), halo_cells(manifest_, false))}) * f;
    if (max_pixels < side * side) {
        throw Error("codec: max_pixels " + std::to_string(max_pixels) + " is below the smallest tile window, " +
                    std::to_string(side) + "x" + std::to_string(side) + " pixels (one " + std::to_string(f) +
                    "-pixel cell and the model's halo on each side). Note: the default is " +
                    std::to_string(kDefaultMaxPixels));
    }
    max_pixels_ = max_pixels;
    tile_pixels_ = tile_pixels;
}

// runtime/codec.py's _core_cells: a tile's core side in cells for a padded image of height x width.
std::size_t Codec::core_cells(std::size_t height, std::size_t width, std::size_t halo) const {
    const auto f = static_cast<std::size_t>(manifest_.downsample);
    if (tile_pixels_ != 0) return tile_pixels_ / f;
    if (std::uint64_t{height} * width <= max_pixels_) return std::max(height, width) / f;
    const auto core = static_cast<long long>(isqrt(max_pixels_) / f) - 2 * static_cast<long long>(halo);
    return static_cast<std::size_t>(std::max(1LL, core));
}

Codec Codec::open(const std::filesystem::path& art_dir, const BackendOptions& options) {
    Manifest manifest = Manifest::load(art_dir);
    std::unique_ptr<Backend> backend = open_backend(manifest, options);
    return Codec(std::move(manifest), std::move(backend));
}

void Codec::run(bool encoding, const void* in, std::size_t n, void* out) {
    const std::size_t s = static_cast<std::size_t>(manifest_.image_size);
    const std::size_t image_values = 3 * s * s, width = code_width();
    const std::size_t in_stride = encoding ? image_values : width;
    const std::size_t out_stride = encoding ? width : image_values;
    const std::size_t max_batch = backend_->max_batch() ? backend_->max_batch() : n;
    const std::size_t min_batch = std::max<std::size_t>(backend_->min_batch(), 1);
    if (backend_->max_batch() && min_batch > backend_->max_batch()) {
        throw Error("codec: the " + backend_->name() + " backend accepts batches of at least " +
                    std::to_string(min_batch) + " but at most " + std::to_string(backend_->max_batch()) +
                    ". Note: rebuild its engines with overlapping batch profiles");
    }
    // Inputs and outputs are float32 or int32: 4 bytes either way.
    const auto* src = static_cast<const std::uint8_t*>(in);
    auto* dst = static_cast<std::uint8_t*>(out);
    std::vector<std::uint8_t> pad_in, pad_out;
    for (std::size_t start = 0; start < n; start += max_batch) {
        const std::size_t count = std::min(max_batch, n - start);
        const std::uint8_t* chunk_in = src + start * in_stride * 4;
        std::uint8_t* chunk_out = dst + start * out_stride * 4;
        std::size_t run_count = count;
        if (count < min_batch) {
            // Below the engine profile's minimum: pad with zeros (a valid image and valid indices).
            pad_in.assign(min_batch * in_stride * 4, 0);
            pad_out.assign(min_batch * out_stride * 4, 0);
            std::memcpy(pad_in.data(), chunk_in, count * in_stride * 4);
            chunk_in = pad_in.data();
            chunk_out = pad_out.data();
            run_count = min_batch;
        }
        if (encoding) {
            backend_->encode(reinterpret_cast<const float*>(chunk_in), run_count,
                             reinterpret_cast<std::int32_t*>(chunk_out));
        } else {
            backend_->decode(reinterpret_cast<const std::int32_t*>(chunk_in), run_count,
                             reinterpret_cast<float*>(chunk_out));
        }
        if (chunk_out == pad_out.data()) std::memcpy(dst + start * out_stride * 4, chunk_out, count * out_stride * 4);
    }
}

std::vector<std::int32_t> Codec::encode(const float* images, const std::vector<std::int64_t>& shape) {
    check_patch_api(manifest_, "encode");
    check_images(images, shape, manifest_.image_size, "encode");
    const std::size_t n = static_cast<std::size_t>(shape[0]);
    std::vector<std::int32_t> indices(total_values(n, code_width(), "encode", "index rows"));
    if (n) run(true, images, n, indices.data());
    // A backend that returns indices outside the levels runs another model's graph.
    for (std::size_t i = 0; i < indices.size(); ++i) {
        const int level = manifest_.levels[i % code_width()];
        if (indices[i] < 0 || indices[i] >= level) {
            throw Error("codec: the " + backend_->name() + " encoder returned index " + std::to_string(indices[i]) +
                        " at [" + std::to_string(i / code_width()) + ", " + std::to_string(i % code_width()) +
                        "], outside [0, " + std::to_string(level) +
                        "). Note: the graph or engine does not belong "
                        "to this manifest; export again");
        }
    }
    return indices;
}

std::vector<std::int32_t> Codec::encode(const std::vector<float>& images, const std::vector<std::int64_t>& shape) {
    check_patch_api(manifest_, "encode");
    check_image_shape(shape, manifest_.image_size, "encode");
    const std::size_t per_image = 3 * static_cast<std::size_t>(manifest_.image_size) * manifest_.image_size;
    if (images.size() % per_image != 0 || images.size() / per_image != static_cast<std::size_t>(shape[0])) {
        throw Error("encode: images hold " + std::to_string(images.size()) + " values but shape " + shape_text(shape) +
                    " needs " + std::to_string(static_cast<std::size_t>(shape[0]) * per_image));
    }
    return encode(images.data(), shape);
}

std::vector<float> Codec::decode(const std::int32_t* indices, const std::vector<std::int64_t>& shape) {
    check_patch_api(manifest_, "decode");
    check_indices(indices, shape, manifest_.levels, "decode");
    const std::size_t n = static_cast<std::size_t>(shape[0]);
    const std::size_t s = static_cast<std::size_t>(manifest_.image_size);
    std::vector<float> images(total_values(n, 3 * s * s, "decode", "images"));
    if (n) run(false, indices, n, images.data());
    return images;
}

std::vector<float> Codec::decode(const std::vector<std::int32_t>& indices, const std::vector<std::int64_t>& shape) {
    check_patch_api(manifest_, "decode");
    check_index_shape(shape, manifest_.levels, "decode");
    if (indices.size() % code_width() != 0 || indices.size() / code_width() != static_cast<std::size_t>(shape[0])) {
        throw Error("decode: indices hold " + std::to_string(indices.size()) + " values but shape " +
                    shape_text(shape) + " needs " + std::to_string(static_cast<std::size_t>(shape[0]) * code_width()));
    }
    return decode(indices.data(), shape);
}

Bitstream Codec::compress(const Image& image) {
    if (manifest_.spatial()) return compress_grid(image);
    const auto s = static_cast<std::uint32_t>(manifest_.image_size);
    Bitstream out;
    out.header = Header::for_patches(manifest_.model_hash, image.height, image.width, s, manifest_.levels);
    out.header.grey = is_grey(image);
    const std::vector<float> patches = to_patches(image, s);
    const auto n = static_cast<std::int64_t>(out.header.num_cells());
    out.indices = encode(patches, {n, 3, static_cast<std::int64_t>(s), static_cast<std::int64_t>(s)});
    return out;
}

namespace {

// Codec.decode_image's check: a file this model wrote, in its layout and cell size (a patch model
// reads patches of its own size, version 1 or 2; a conv model a latent grid of its f).
void check_own_file(const Header& h, const Manifest& manifest) {
    check_model(h, manifest.model_hash, manifest.levels);
    const bool grid = manifest.spatial();
    const std::uint8_t layout = grid ? kLayoutGrid : kLayoutPatches;
    const auto cell = static_cast<std::uint32_t>(grid ? manifest.downsample : manifest.image_size);
    if (h.layout != layout || h.cell_size != cell) {
        const char* kind = h.layout == kLayoutPatches ? "pixel patches"
                           : h.layout == kLayoutGrid  ? "pixel latent cells"
                                                      : "pixel cells";
        throw Error("decompress: the file holds " + std::to_string(h.cell_size) + "-" + kind + " (layout " +
                    std::to_string(h.layout) + "), the model reads " + std::to_string(cell) +
                    (grid ? "-pixel latent cells (layout 1)" : "-pixel patches (layout 0)") +
                    ". Note: decompress with the model that compressed it");
    }
    h.check();
}

// codec.py's _region: the region must lie inside the header's image, width and height at least 1.
void check_region(const Region& r, const Header& h) {
    const std::uint64_t right = std::uint64_t{r.x} + r.width, bottom = std::uint64_t{r.y} + r.height;
    if (r.width < 1 || r.height < 1 || right > h.image_width || bottom > h.image_height) {
        const std::string w = std::to_string(h.image_width), hh = std::to_string(h.image_height);
        throw Error(
            "decompress: region " + std::to_string(r.x) + "," + std::to_string(r.y) + "," + std::to_string(r.width) +
            "," + std::to_string(r.height) + " (x, y, width, height) is not inside the " + w + "x" + hh +
            " image. Note: pass x + width <= " + w + " and y + height <= " + hh + ", width and height at least 1");
    }
}

std::uint32_t ceil_div(std::uint32_t a, std::uint32_t b) {
    return static_cast<std::uint32_t>((std::uint64_t{a} + b - 1) / b);
}

Image crop(const Image& image, std::uint32_t x, std::uint32_t y, std::uint32_t width, std::uint32_t height) {
    Image out;
    out.width = width;
    out.height = height;
    out.rgb.resize(std::size_t{width} * height * 3);
    for (std::uint32_t row = 0; row < height; ++row)
        std::copy_n(image.rgb.begin() + static_cast<std::ptrdiff_t>((std::size_t{y + row} * image.width + x) * 3),
                    std::size_t{width} * 3,
                    out.rgb.begin() + static_cast<std::ptrdiff_t>(std::size_t{row} * width * 3));
    return out;
}

}  // namespace

Image Codec::decompress(const Bitstream& bitstream) {
    return decompress(bitstream, Region{0, 0, bitstream.header.image_width, bitstream.header.image_height});
}

Image Codec::decompress(const Bitstream& bitstream, const Region& region) {
    check_own_file(bitstream.header, manifest_);
    const Header& h = bitstream.header;
    check_region(region, h);
    Image image;
    if (manifest_.spatial()) {
        image = decompress_grid(bitstream, region);
    } else {  // the patches under the region, each decoded alone as always
        const std::uint32_t s = h.cell_size, r0 = region.y / s, c0 = region.x / s;
        const std::uint32_t rows = ceil_div(region.y + region.height, s) - r0;
        const std::uint32_t cols = ceil_div(region.x + region.width, s) - c0;
        const std::size_t d = code_width();
        std::vector<std::int32_t> under(std::size_t{rows} * cols * d);
        for (std::uint32_t r = 0; r < rows; ++r)
            std::copy_n(
                bitstream.indices.begin() + static_cast<std::ptrdiff_t>(((std::size_t{r0} + r) * h.grid_cols + c0) * d),
                std::size_t{cols} * d, under.begin() + static_cast<std::ptrdiff_t>(r * cols * d));
        const std::int64_t n = std::int64_t{rows} * cols;
        const std::vector<float> patches = decode(under, {n, static_cast<std::int64_t>(d)});
        const Image block = from_patches(patches.data(), rows, cols, rows * s, cols * s, s);
        image = crop(block, region.x - c0 * s, region.y - r0 * s, region.width, region.height);
    }
    if (h.grey) to_grey(image);  // a grey image comes back grey, as images.py's to_grey makes it
    return image;
}

// -- conv artifacts: whole images through the dynamic-shape graphs -------------------------------

Bitstream Codec::compress_grid(const Image& image) {
    const auto f = static_cast<std::uint32_t>(manifest_.downsample);
    check_image_buffer(image, f);
    const std::size_t rows = (std::size_t{image.height} + f - 1) / f, cols = (std::size_t{image.width} + f - 1) / f;
    const std::size_t d = code_width(), positions = rows * cols, halo = halo_cells(manifest_, true);
    std::vector<std::int32_t> grid(total_values(positions, d, "compress", "latent cells")), window;
    // One pass when the padded image fits max_pixels, else tiles (runtime/tiles.py's encode_tiled).
    const std::size_t core = core_cells(rows * f, cols * f, halo);
    for (const Span& r : spans(rows, core, halo)) {
        for (const Span& c : spans(cols, core, halo)) {
            const std::size_t wr = r.window_end - r.window_begin, wc = c.window_end - c.window_begin;
            const std::vector<float> planes =
                window_planes(image, r.window_begin * f, r.window_end * f, c.window_begin * f, c.window_end * f);
            window.assign(d * wr * wc, 0);
            backend_->encode_grid(planes.data(), static_cast<std::int64_t>(wr * f), static_cast<std::int64_t>(wc * f),
                                  window.data());
            for (std::size_t ch = 0; ch < d; ++ch)
                for (std::size_t y = r.core_begin; y < r.core_end; ++y)
                    for (std::size_t x = c.core_begin; x < c.core_end; ++x)
                        grid[(ch * rows + y) * cols + x] =
                            window[(ch * wr + y - r.window_begin) * wc + x - c.window_begin];
        }
    }
    // A backend that returns indices outside the levels runs another model's graph.
    for (std::size_t i = 0; i < grid.size(); ++i) {
        const int level = manifest_.levels[i / positions];
        if (grid[i] < 0 || grid[i] >= level) {
            throw Error("codec: the " + backend_->name() + " encoder returned index " + std::to_string(grid[i]) +
                        " in channel " + std::to_string(i / positions) + ", outside [0, " + std::to_string(level) +
                        "). Note: the graph does not belong to this manifest; export again");
        }
    }
    Bitstream fixed;
    fixed.header = Header::for_grid(manifest_.model_hash, image.height, image.width, f, manifest_.levels);
    fixed.header.grey = is_grey(image);
    fixed.indices = grid_to_cells(grid, d, rows, cols);
    if (prior_) {  // coding 2 (or 1) unless the prior would not pay on this image (Codec.encode_file)
        Bitstream coded{fixed.header.with_prior(*prior_), fixed.indices};
        if (coded.write(&*prior_).size() < fixed.write().size()) return coded;
    }
    return fixed;
}

// After check_own_file (decompress).
Image Codec::decompress_grid(const Bitstream& bitstream, const Region& region) {
    const Header& h = bitstream.header;
    const auto f = static_cast<std::uint32_t>(manifest_.downsample);
    const std::vector<std::int32_t> grid = cells_to_grid(h, bitstream.indices);  // refuses a wrong cell count
    // indices outside the levels (a Bitstream built in memory; read() refuses them in a file)
    const std::vector<std::int64_t> cells_shape{static_cast<std::int64_t>(h.num_cells()),
                                                static_cast<std::int64_t>(code_width())};
    check_indices(bitstream.indices.data(), cells_shape, manifest_.levels, "decode");
    const std::size_t rows = h.grid_rows, cols = h.grid_cols, d = code_width(), halo = halo_cells(manifest_, false);
    // The cells under the region widened by the decoder's halo (clipped to the grid): a window of the
    // grid decoded as the whole image is, in one pass or tiles.
    const std::size_t r_lo = region.y / f >= halo ? region.y / f - halo : 0;
    const std::size_t c_lo = region.x / f >= halo ? region.x / f - halo : 0;
    const std::size_t r_hi = std::min<std::size_t>(rows, ceil_div(region.y + region.height, f) + halo);
    const std::size_t c_hi = std::min<std::size_t>(cols, ceil_div(region.x + region.width, f) + halo);
    const std::size_t y_lo = region.y, y_hi = std::size_t{region.y} + region.height;
    const std::size_t x_lo = region.x, x_hi = std::size_t{region.x} + region.width;
    Image image;
    image.height = region.height;
    image.width = region.width;
    image.rgb.resize(total_values(region.height, std::size_t{region.width} * 3, "decompress", "rows"));
    // One pass when the window fits max_pixels, else tiles (runtime/tiles.py's decode_tiled), each
    // core's pixels inside the region converted to bytes as they come.
    const std::size_t core = core_cells((r_hi - r_lo) * f, (c_hi - c_lo) * f, halo);
    std::vector<std::int32_t> window;
    std::vector<float> planes;
    for (Span r : spans(r_hi - r_lo, core, halo)) {
        r = Span{r.window_begin + r_lo, r.window_end + r_lo, r.core_begin + r_lo, r.core_end + r_lo};
        for (Span c : spans(c_hi - c_lo, core, halo)) {
            c = Span{c.window_begin + c_lo, c.window_end + c_lo, c.core_begin + c_lo, c.core_end + c_lo};
            const std::size_t y_begin = std::max(r.core_begin * f, y_lo), y_end = std::min(r.core_end * f, y_hi);
            const std::size_t x_begin = std::max(c.core_begin * f, x_lo), x_end = std::min(c.core_end * f, x_hi);
            if (y_begin >= y_end || x_begin >= x_end) continue;  // a core of the halo only
            const std::size_t wr = r.window_end - r.window_begin, wc = c.window_end - c.window_begin;
            window.resize(d * wr * wc);
            for (std::size_t ch = 0; ch < d; ++ch)
                for (std::size_t y = 0; y < wr; ++y)
                    for (std::size_t x = 0; x < wc; ++x)
                        window[(ch * wr + y) * wc + x] =
                            grid[(ch * rows + r.window_begin + y) * cols + c.window_begin + x];
            planes.assign(total_values(3 * wr * f, wc * f, "decompress", "pixels"), 0.0f);
            backend_->decode_grid(window.data(), static_cast<std::int64_t>(wr), static_cast<std::int64_t>(wc),
                                  planes.data());
            const std::size_t pw = wc * f, plane = wr * f * pw;
            for (std::size_t y = y_begin; y < y_end; ++y) {
                for (std::size_t x = x_begin; x < x_end; ++x) {
                    const std::size_t at = (y - r.window_begin * f) * pw + (x - c.window_begin * f);
                    for (std::size_t ch = 0; ch < 3; ++ch)
                        image.rgb[((y - y_lo) * region.width + x - x_lo) * 3 + ch] = to_byte(planes[ch * plane + at]);
                }
            }
        }
    }
    return image;
}

}  // namespace fsq
