// Codec over a fake backend: validation messages (fsqdeploy/validation.py), batch chunking and
// padding, tiling and stitching, compress/decompress, and the half-float conversions of the
// TensorRT backend.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>

#include "half.hpp"
#include "helpers.hpp"

namespace fsq::test {
namespace {

// A lossless "codec" for 2-pixel patches with levels [256] * 12: index c is pixel value c * 255,
// so compress -> decompress must give back the exact image, exercising tiling, edge padding,
// stitching, cropping and the bitstream end to end.
class LosslessBackend final : public Backend {
public:
    LosslessBackend(std::size_t min_batch = 1, std::size_t max_batch = 0) : min_(min_batch), max_(max_batch) {}
    std::string name() const override { return "lossless"; }
    std::size_t max_batch() const override { return max_; }
    std::size_t min_batch() const override { return min_; }
    void encode(const float* images, std::size_t n, std::int32_t* indices) override {
        calls.push_back(n);
        for (std::size_t i = 0; i < n * 12; ++i)
            indices[i] = static_cast<std::int32_t>(std::lround(images[i] * 255.0f));
        if (corrupt) indices[0] = 256;
    }
    void decode(const std::int32_t* indices, std::size_t n, float* images) override {
        calls.push_back(n);
        for (std::size_t i = 0; i < n * 12; ++i) images[i] = static_cast<float>(indices[i]) / 255.0f;
    }
    std::vector<std::size_t> calls;
    bool corrupt = false;

private:
    std::size_t min_, max_;
};

struct Fixture {
    TempDir dir;
    Manifest manifest;
    LosslessBackend* backend = nullptr;
    std::unique_ptr<Codec> codec;

    explicit Fixture(std::size_t min_batch = 1, std::size_t max_batch = 0) {
        make_art(dir.path(), Levels(12, 256), 2, 1);
        manifest = Manifest::load(dir.path());
        auto owned = std::make_unique<LosslessBackend>(min_batch, max_batch);
        backend = owned.get();
        codec = std::make_unique<Codec>(manifest, std::move(owned));
    }
};

Image random_image(std::uint32_t h, std::uint32_t w, unsigned seed) {
    Image image{h, w, std::vector<std::uint8_t>(std::size_t{h} * w * 3)};
    std::mt19937 rng(seed);
    for (std::uint8_t& v : image.rgb) v = static_cast<std::uint8_t>(rng());
    return image;
}

TEST(Validation, ImagesAsInPython) {
    const std::vector<float> ok(2 * 3 * 4 * 4, 0.5f);
    EXPECT_NO_THROW(check_images(ok.data(), {2, 3, 4, 4}, 4));
    EXPECT_NO_THROW(check_images(nullptr, {0, 3, 4, 4}, 4));
    EXPECT_FSQ_ERROR(check_images(ok.data(), {2, 4, 4, 4}, 4),
                     "encode: images must have shape [N, 3, 4, 4], got [2, 4, 4, 4]");
    EXPECT_FSQ_ERROR(check_images(ok.data(), {2, 3, 16}, 4), "got [2, 3, 16]");
    EXPECT_FSQ_ERROR(check_images(ok.data(), {-1, 3, 4, 4}, 4), "got [-1, 3, 4, 4]");
    std::vector<float> bad = ok;
    bad[5] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_FSQ_ERROR(check_images(bad.data(), {2, 3, 4, 4}, 4), "encode: images contain NaN or infinite values");
    bad[5] = std::numeric_limits<float>::infinity();
    EXPECT_FSQ_ERROR(check_images(bad.data(), {2, 3, 4, 4}, 4), "NaN or infinite");
    bad[5] = -0.25f;
    bad[7] = 1.5f;
    EXPECT_FSQ_ERROR(check_images(bad.data(), {2, 3, 4, 4}, 4, "compress"),
                     "compress: pixel values must lie in [0, 1], got [-0.25, 1.5]");
}

TEST(Validation, IndicesAsInPython) {
    const Levels levels = {8, 5};
    const std::vector<std::int32_t> idx = {7, 4, 0, 5};
    EXPECT_FSQ_ERROR(check_indices(idx.data(), {2, 2}, levels), "decode: index 5 at [1, 1] is outside [0, 5)");
    EXPECT_FSQ_ERROR(check_indices(idx.data(), {4}, levels), "decode: indices must have shape [N, 2], got [4]");
    EXPECT_FSQ_ERROR(check_indices(idx.data(), {1, 4}, levels), "got [1, 4]");
    EXPECT_NO_THROW(check_indices(idx.data(), {1, 2}, levels));
}

TEST(Codec, EncodeDecodeAndSizeChecks) {
    Fixture f;
    std::vector<float> images(3 * 12);
    for (std::size_t i = 0; i < images.size(); ++i) images[i] = static_cast<float>(i) / 255.0f;
    const std::vector<std::int32_t> idx = f.codec->encode(images, {3, 3, 2, 2});
    ASSERT_EQ(idx.size(), 36u);
    EXPECT_EQ(idx[35], 35);
    EXPECT_EQ(f.codec->decode(idx, {3, 12}), images);
    EXPECT_FSQ_ERROR(f.codec->encode(images, {2, 3, 2, 2}),
                     "encode: images hold 36 values but shape [2, 3, 2, 2] needs 24");
    EXPECT_FSQ_ERROR(f.codec->decode(idx, {2, 12}), "decode: indices hold 36 values but shape [2, 12] needs 24");
    EXPECT_FSQ_ERROR(f.codec->decode(idx, {3, 11}), "decode: indices must have shape [N, 12], got [3, 11]");
    EXPECT_TRUE(f.codec->encode(std::vector<float>{}, {0, 3, 2, 2}).empty());
    EXPECT_TRUE(f.backend->calls.size() == 2);  // N = 0 never reaches the backend
}

TEST(Codec, ChunksToTheBackendsBatchRangeAndPads) {
    Fixture f(2, 3);
    std::vector<float> images(7 * 12);
    for (std::size_t i = 0; i < images.size(); ++i) images[i] = static_cast<float>(i % 256) / 255.0f;
    const std::vector<std::int32_t> idx = f.codec->encode(images, {7, 3, 2, 2});
    EXPECT_EQ(f.backend->calls, (std::vector<std::size_t>{3, 3, 2}));  // the last one padded from 1 to 2
    for (std::size_t i = 0; i < idx.size(); ++i) ASSERT_EQ(idx[i], static_cast<std::int32_t>(i % 256)) << i;
    f.backend->calls.clear();
    EXPECT_EQ(f.codec->decode(idx, {7, 12}), images);
    EXPECT_EQ(f.backend->calls, (std::vector<std::size_t>{3, 3, 2}));
    f.backend->calls.clear();
    f.codec->encode(std::vector<float>(12, 0.0f), {1, 3, 2, 2});
    EXPECT_EQ(f.backend->calls, (std::vector<std::size_t>{2}));
}

TEST(Codec, RefusesAnEmptyBatchRange) {
    Fixture f(4, 3);
    EXPECT_FSQ_ERROR(f.codec->encode(std::vector<float>(12, 0.0f), {1, 3, 2, 2}),
                     "codec: the lossless backend accepts batches of at least 4 but at most 3");
}

TEST(Codec, RefusesIndicesOutsideTheLevelsFromTheBackend) {
    Fixture f;
    f.backend->corrupt = true;
    EXPECT_FSQ_ERROR(f.codec->encode(std::vector<float>(12, 0.0f), {1, 3, 2, 2}),
                     "codec: the lossless encoder returned index 256 at [0, 0], outside [0, 256)");
}

TEST(Codec, CompressDecompressIsExactForTheLosslessBackend) {
    Fixture f;
    for (auto [h, w] : std::vector<std::pair<std::uint32_t, std::uint32_t>>{{1, 1}, {5, 7}, {2, 2}, {9, 4}, {31, 2}}) {
        const Image image = random_image(h, w, h * 100 + w);
        const Bitstream b = f.codec->compress(image);
        EXPECT_EQ(b.header.grid_rows, (h + 1) / 2);
        EXPECT_EQ(b.header.model_hash, f.manifest.model_hash);
        EXPECT_EQ(b.header.version, 2u);  // version 2, patches: what the Python Codec writes too
        EXPECT_EQ(b.header.layout, kLayoutPatches);
        b.save(f.dir / "x.fsq");
        const Image back = f.codec->decompress(Bitstream::load(f.dir / "x.fsq"));
        EXPECT_EQ(back.height, h);
        EXPECT_EQ(back.width, w);
        EXPECT_EQ(back.rgb, image.rgb) << h << "x" << w;
    }
}

TEST(Codec, AGreyImageComesBackGrey) {
    // images.py's to_grey: the channel mean rounded to nearest, (R + G + B + 1) / 3.
    Image sums{1, 4, {0, 0, 1, 0, 1, 1, 1, 2, 2, 255, 255, 254}};
    EXPECT_FALSE(is_grey(sums));
    to_grey(sums);
    EXPECT_EQ(sums.rgb, (std::vector<std::uint8_t>{0, 0, 0, 1, 1, 1, 2, 2, 2, 255, 255, 255}));
    EXPECT_TRUE(is_grey(sums));
    // The lossless backend gives the grey image back exactly, flagged; one pixel off grey is colour.
    Fixture f;
    Image grey = random_image(5, 7, 3);
    for (std::size_t i = 0; i < grey.rgb.size(); i += 3) grey.rgb[i + 1] = grey.rgb[i + 2] = grey.rgb[i];
    const Bitstream b = f.codec->compress(grey);
    EXPECT_TRUE(b.header.grey);
    EXPECT_EQ(b.write()[5], kFlagGrey);
    EXPECT_EQ(f.codec->decompress(b).rgb, grey.rgb);
    // A grey-flagged file of colour indices decodes to their grey: the flag decides, not the pixels.
    const Image colour = random_image(5, 7, 4);
    Bitstream flagged = f.codec->compress(colour);
    EXPECT_FALSE(flagged.header.grey);
    flagged.header.grey = true;
    Image expected = colour;
    to_grey(expected);
    EXPECT_EQ(f.codec->decompress(flagged).rgb, expected.rgb);
    grey.rgb[4] ^= 1;
    EXPECT_FALSE(f.codec->compress(grey).header.grey);
}

TEST(Codec, DecompressRefusesAnotherModelsFile) {
    Fixture f;
    Bitstream b = f.codec->compress(random_image(3, 3, 1));
    Bitstream other = b;
    other.header.model_hash[0] ^= 1;
    EXPECT_FSQ_ERROR(f.codec->decompress(other), "bitstream: file was made by another model");
    Bitstream golden = Bitstream::read(from_hex(kGoldenHex));
    golden.header.model_hash = f.manifest.model_hash;
    EXPECT_FSQ_ERROR(f.codec->decompress(golden), "file was made with levels [3, 5, 7] but the model has [256, 256");
    Bitstream patch = b;
    patch.header.cell_size = 3;
    patch.header.grid_rows = patch.header.grid_cols = 1;
    EXPECT_FSQ_ERROR(f.codec->decompress(patch),
                     "decompress: the file holds 3-pixel patches (layout 0), the model reads 2-pixel patches (layout "
                     "0). Note: decompress with the model that compressed it");
    Bitstream grid = b;
    grid.header.layout = kLayoutGrid;  // a conv codec's latent grid of the same size
    EXPECT_FSQ_ERROR(f.codec->decompress(grid), "decompress: the file holds 2-pixel latent cells (layout 1)");
}

TEST(Codec, DecompressesVersion1FilesToTheSameImage) {
    Fixture f;
    const Image image = random_image(5, 7, 3);
    const Bitstream v2 = f.codec->compress(image);
    Bitstream v1 = v2;
    v1.header = Header::for_image(v2.header.model_hash, 5, 7, 2, v2.header.levels);
    const std::vector<std::uint8_t> bytes1 = v1.write(), bytes2 = v2.write();
    EXPECT_EQ(bytes1[4], 1u);
    EXPECT_EQ(bytes2[4], 2u);
    EXPECT_EQ(bytes2.size() - bytes1.size(), 34u);
    EXPECT_EQ(f.codec->decompress(Bitstream::read(bytes1)).rgb, image.rgb);
    EXPECT_EQ(f.codec->decompress(Bitstream::read(bytes2)).rgb, image.rgb);
}

// A lossless codec for images that are flat on each f x f cell, levels [256] * 3: each channel's
// index is the cell's top-left pixel value, and decoding fills the cell with it.
class FlatCellBackend final : public Backend {
public:
    explicit FlatCellBackend(std::int64_t f) : f_(f) {}
    std::string name() const override { return "flat-cells"; }
    void encode(const float*, std::size_t, std::int32_t*) override { FAIL() << "a patch call on a conv codec"; }
    void decode(const std::int32_t*, std::size_t, float*) override { FAIL() << "a patch call on a conv codec"; }
    void encode_grid(const float* image, std::int64_t height, std::int64_t width, std::int32_t* grid) override {
        shapes.push_back({height, width});
        const std::int64_t rows = height / f_, cols = width / f_;
        for (std::int64_t ch = 0; ch < 3; ++ch)
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t c = 0; c < cols; ++c)
                    grid[(ch * rows + r) * cols + c] = static_cast<std::int32_t>(
                        std::lround(image[(ch * height + r * f_) * width + c * f_] * 255.0f));
    }
    void decode_grid(const std::int32_t* grid, std::int64_t rows, std::int64_t cols, float* image) override {
        decoded.push_back({rows, cols});
        const std::int64_t height = rows * f_, width = cols * f_;
        for (std::int64_t ch = 0; ch < 3; ++ch)
            for (std::int64_t y = 0; y < height; ++y)
                for (std::int64_t x = 0; x < width; ++x)
                    image[(ch * height + y) * width + x] =
                        static_cast<float>(grid[(ch * rows + y / f_) * cols + x / f_]) / 255.0f;
    }
    std::vector<std::array<std::int64_t, 2>> shapes;
    std::vector<std::array<std::int64_t, 2>> decoded;  // the grid windows decode_grid was given

private:
    std::int64_t f_;
};

Image cropped(const Image& image, std::uint32_t x, std::uint32_t y, std::uint32_t w, std::uint32_t h) {
    Image out{h, w, {}};
    for (std::uint32_t row = y; row < y + h; ++row)
        out.rgb.insert(out.rgb.end(), image.rgb.begin() + (std::size_t{row} * image.width + x) * 3,
                       image.rgb.begin() + (std::size_t{row} * image.width + x + w) * 3);
    return out;
}

TEST(Codec, ConvArtifactCodesWholeImagesPaddedToMultiplesOfF) {
    TempDir dir;
    make_art(dir.path(), {256, 256, 256}, 32, 1, {}, "conv");  // f = 8
    const Manifest m = Manifest::load(dir.path());
    ASSERT_TRUE(m.spatial());
    auto owned = std::make_unique<FlatCellBackend>(8);
    FlatCellBackend* backend = owned.get();
    Codec codec(m, std::move(owned));
    EXPECT_EQ(codec.prior(), nullptr);  // no ART/prior.json: fixed-rate files
    // 13 x 21 pixels, flat on the 8 x 8 cells: padded to 16 x 24, a 2 x 3 grid, cropped back exactly.
    Image image{13, 21, std::vector<std::uint8_t>(13 * 21 * 3)};
    for (std::size_t y = 0; y < 13; ++y)
        for (std::size_t x = 0; x < 21; ++x)
            for (std::size_t ch = 0; ch < 3; ++ch)
                image.rgb[(y * 21 + x) * 3 + ch] = static_cast<std::uint8_t>(40 * (y / 8) + 70 * (x / 8) + 11 * ch);
    const Bitstream b = codec.compress(image);
    ASSERT_EQ(backend->shapes.size(), 1u);
    EXPECT_EQ(backend->shapes[0], (std::array<std::int64_t, 2>{16, 24}));  // one pass over the padded image
    EXPECT_EQ(b.header.layout, kLayoutGrid);
    EXPECT_EQ(b.header.coding, kCodingFixed);
    EXPECT_EQ(b.header.cell_size, 8u);
    EXPECT_EQ(b.header.grid_rows * 10 + b.header.grid_cols, 23u);
    EXPECT_EQ(b.indices[0 * 3 + 1], 11);           // cell (0, 0), channel 1
    EXPECT_EQ(b.indices[5 * 3 + 2], 40 + 140 + 22);  // cell (1, 2), channel 2
    const Image back = codec.decompress(Bitstream::read(b.write()));
    EXPECT_EQ(back.height, 13u);
    EXPECT_EQ(back.width, 21u);
    EXPECT_EQ(back.rgb, image.rgb);
    // A token grid, as a tokenizer app takes it out and puts it back (fsq/tokens.hpp): the same image.
    const std::vector<std::int64_t> tokens = indices_to_tokens(b.indices, m.levels);
    ASSERT_EQ(tokens.size(), 6u);
    EXPECT_EQ(tokens[5], (40 + 140) + (40 + 140 + 11) * 256 + std::int64_t{40 + 140 + 22} * 256 * 256);
    const Bitstream from_tokens{Header::for_grid(m.model_hash, 13, 21, 8, m.levels),
                                tokens_to_indices(tokens, m.levels)};
    EXPECT_EQ(codec.decompress(from_tokens).rgb, image.rgb);
    // out-of-range indices, a patch file and the patch API are refused
    Bitstream bad = b;
    bad.indices[4] = 256;
    EXPECT_FSQ_ERROR(codec.decompress(bad), "decode: index 256 at [1, 1] is outside [0, 256)");
    Bitstream patches = b;
    patches.header.layout = kLayoutPatches;
    EXPECT_FSQ_ERROR(codec.decompress(patches), "decompress: the file holds 8-pixel patches (layout 0), the model "
                                                "reads 8-pixel latent cells (layout 1)");
    EXPECT_FSQ_ERROR(codec.encode(std::vector<float>(3 * 32 * 32), {1, 3, 32, 32}),
                     "encode: '" + dir.path().string() + "' is a conv artifact (whole images, a latent grid)");
    EXPECT_FSQ_ERROR(codec.decode(std::vector<std::int32_t>(3), {1, 3}), "decode: '");
}

TEST(Codec, ConvArtifactInTilesGivesTheOnePassFile) {
    TempDir dir;
    make_art(dir.path(), {256, 256, 256}, 32, 1, {}, "conv");  // f = 8; no "tiling" record: halos 3 and 4 cells
    Manifest m = Manifest::load(dir.path());
    EXPECT_EQ(m.encoder_halo, 24);
    EXPECT_EQ(m.decoder_halo, 4);
    Image image{37, 83, std::vector<std::uint8_t>(37 * 83 * 3)};
    for (std::size_t i = 0; i < image.rgb.size(); ++i) image.rgb[i] = static_cast<std::uint8_t>((i / 3) % 251);
    Codec whole(m, std::make_unique<FlatCellBackend>(8));
    auto owned = std::make_unique<FlatCellBackend>(8);
    FlatCellBackend* backend = owned.get();
    Codec tiled(m, std::move(owned));
    tiled.set_tiling(kDefaultMaxPixels, 16);  // cores of 2 x 2 cells in a 5 x 11 grid
    const Bitstream one = whole.compress(image), many = tiled.compress(image);
    EXPECT_EQ(backend->shapes.size(), 3u * 6u);
    EXPECT_EQ(backend->shapes[0], (std::array<std::int64_t, 2>{40, 40}));  // core 2 + halo 3 right/bottom, clipped
    EXPECT_EQ(many.write(), one.write());
    EXPECT_EQ(tiled.decompress(many).rgb, whole.decompress(one).rgb);
    // by max_pixels: a 104 x 200 padded image over 6272 pixels, so windows of at most 79 pixels a
    // side, cores of 9 - 2 * 3 = 3 cells (encoder) and 9 - 2 * 4 = 1 (decoder)
    Image big{100, 200, std::vector<std::uint8_t>(100 * 200 * 3)};
    for (std::size_t i = 0; i < big.rgb.size(); ++i) big.rgb[i] = static_cast<std::uint8_t>((i * 7) % 253);
    const Bitstream big_one = whole.compress(big);
    tiled.set_tiling(6272);
    backend->shapes.clear();
    EXPECT_EQ(tiled.compress(big).write(), big_one.write());
    EXPECT_EQ(backend->shapes.size(), 5u * 9u);  // 13 x 25 cells in cores of 3
    EXPECT_EQ(tiled.decompress(big_one).rgb, whole.decompress(big_one).rgb);
    // the Python Codec's refusals
    EXPECT_FSQ_ERROR(tiled.set_tiling(kDefaultMaxPixels, 12),
                     "codec: tile 12 is not a positive multiple of 8 pixels (the model's downsampling factor). "
                     "Note: pass e.g. 128, or leave it unset");
    EXPECT_FSQ_ERROR(tiled.set_tiling(72 * 72 - 1),
                     "codec: max_pixels 5183 is below the smallest tile window, 72x72 pixels (one 8-pixel cell "
                     "and the model's halo on each side). Note: the default is 4194304");
}

TEST(Codec, ARegionDecodesTheCellsUnderItAndTheHaloToTheWholeDecodesPixels) {
    TempDir dir;
    make_art(dir.path(), {256, 256, 256}, 32, 1, {}, "conv");  // f = 8, decoder halo 4 cells
    const Manifest m = Manifest::load(dir.path());
    Image image{37, 83, std::vector<std::uint8_t>(37 * 83 * 3)};
    for (std::size_t i = 0; i < image.rgb.size(); ++i) image.rgb[i] = static_cast<std::uint8_t>((i * 7) % 253);
    auto owned = std::make_unique<FlatCellBackend>(8);
    FlatCellBackend* backend = owned.get();
    Codec codec(m, std::move(owned));
    const Bitstream b = codec.compress(image);  // a 5 x 11 grid
    const Image whole = codec.decompress(b);
    Codec tiled(m, std::make_unique<FlatCellBackend>(8));
    tiled.set_tiling(kDefaultMaxPixels, 16);
    for (const Region r : {Region{0, 0, 1, 1}, Region{13, 7, 40, 21}, Region{60, 20, 23, 17}, Region{0, 0, 83, 37},
                           Region{81, 36, 2, 1}}) {
        backend->decoded.clear();
        const Image part = codec.decompress(b, r);
        EXPECT_EQ(part.width, r.width);
        EXPECT_EQ(part.height, r.height);
        EXPECT_EQ(part.rgb, cropped(whole, r.x, r.y, r.width, r.height).rgb) << r.x << "," << r.y;
        EXPECT_EQ(tiled.decompress(b, r).rgb, part.rgb) << r.x << "," << r.y;
        // one window: the region's cells and 4 more on each side, clipped to the grid
        const std::int64_t rows = std::min<std::int64_t>(5, (r.y + r.height + 7) / 8 + 4) -
                                  std::max<std::int64_t>(0, std::int64_t{r.y / 8} - 4);
        const std::int64_t cols = std::min<std::int64_t>(11, (r.x + r.width + 7) / 8 + 4) -
                                  std::max<std::int64_t>(0, std::int64_t{r.x / 8} - 4);
        ASSERT_EQ(backend->decoded.size(), 1u);
        EXPECT_EQ(backend->decoded[0], (std::array<std::int64_t, 2>{rows, cols})) << r.x << "," << r.y;
    }
    EXPECT_FSQ_ERROR(codec.decompress(b, Region{0, 0, 84, 37}),
                     "decompress: region 0,0,84,37 (x, y, width, height) is not inside the 83x37 image. Note: pass "
                     "x + width <= 83 and y + height <= 37, width and height at least 1");
    EXPECT_FSQ_ERROR(codec.decompress(b, Region{5, 5, 0, 3}), "is not inside the 83x37 image");
    EXPECT_FSQ_ERROR(codec.decompress(b, Region{4294967295u, 0, 2, 2}), "is not inside the 83x37 image");
}

TEST(Codec, ARegionOfAPatchFileDecodesOnlyItsPatches) {
    Fixture f;  // 2-pixel patches
    const Image image = random_image(9, 13, 5);
    const Bitstream b = f.codec->compress(image);
    for (const Region r : {Region{0, 0, 1, 1}, Region{3, 2, 7, 5}, Region{12, 8, 1, 1}, Region{0, 0, 13, 9}}) {
        f.backend->calls.clear();
        EXPECT_EQ(f.codec->decompress(b, r).rgb, cropped(image, r.x, r.y, r.width, r.height).rgb) << r.x << "," << r.y;
        const std::size_t patches = ((r.y + r.height + 1) / 2 - r.y / 2) * ((r.x + r.width + 1) / 2 - r.x / 2);
        ASSERT_EQ(f.backend->calls.size(), 1u);
        EXPECT_EQ(f.backend->calls[0], patches);
    }
}

TEST(Codec, ConvArtifactOnAFixedShapeBackendIsOneLine) {
    TempDir dir;
    make_art(dir.path(), {8, 5, 5, 5}, 32, 1, {}, "conv");
    Codec codec(Manifest::load(dir.path()), std::make_unique<LosslessBackend>());
    EXPECT_FSQ_ERROR(codec.compress(random_image(16, 16, 4)),
                     "codec: the lossless backend runs fixed-shape (paper) graphs only; a conv artifact's "
                     "dynamic-shape graphs need the onnxruntime backend. Note: pass --backend onnxruntime");
}

TEST(Codec, OpenWithoutABackendSaysHowToGetOne) {
    TempDir dir;
    make_art(dir.path());
    if (!compiled_backends().empty()) GTEST_SKIP() << "this build has a backend";
    EXPECT_FSQ_ERROR(Codec::open(dir.path()),
                     "codec: this build of the fsqdeploy C++ runtime has no inference backend");
    BackendOptions trt;
    trt.kind = BackendOptions::Kind::TensorRT;
    EXPECT_FSQ_ERROR(open_backend(Manifest::load(dir.path()), trt), "codec: this build has no TensorRT backend");
    write_text(dir / "encoder.onnx", "tampered!");
    EXPECT_FSQ_ERROR(Codec::open(dir.path()), "failed verification: encoder.onnx");  // checked before the backend
}

TEST(Tiling, EdgePaddingRowMajorTiles) {
    // A 3x3 image with 2-pixel patches: grid 2x2, the last row and column repeated.
    Image image{3, 3, {}};
    for (int i = 0; i < 27; ++i) image.rgb.push_back(static_cast<std::uint8_t>(i * 9));
    const std::vector<float> p = to_patches(image, 2);
    ASSERT_EQ(p.size(), 4u * 3 * 2 * 2);
    auto at = [&](int tile, int ch, int y, int x) {
        return p[static_cast<std::size_t>(((tile * 3 + ch) * 2 + y) * 2 + x)];
    };
    auto px = [&](int y, int x, int ch) {
        return static_cast<float>(image.rgb[static_cast<std::size_t>((y * 3 + x) * 3 + ch)]) / 255.0f;
    };
    EXPECT_EQ(at(0, 1, 1, 1), px(1, 1, 1));
    EXPECT_EQ(at(1, 0, 0, 1), px(0, 2, 0));  // column 3 is padding: repeats column 2
    EXPECT_EQ(at(2, 2, 1, 0), px(2, 0, 2));  // row 3 is padding: repeats row 2
    EXPECT_EQ(at(3, 0, 1, 1), px(2, 2, 0));
    const Image back = from_patches(p.data(), 2, 2, 3, 3, 2);
    EXPECT_EQ(back.rgb, image.rgb);
    EXPECT_FSQ_ERROR(to_patches(Image{2, 2, {1, 2, 3}}, 2), "compress: image holds 3 bytes, expected 2 x 2 x 3");
    EXPECT_FSQ_ERROR(from_patches(p.data(), 1, 1, 3, 3, 2), "does not cover a 3x3 image");
    // Sizes whose byte counts overflow 64 bits are refused, never allocated short.
    EXPECT_FSQ_ERROR(to_patches(Image{0xFFFFFFFFu, 0xFFFFFFFFu, {1, 2}}, 2), "compress: image holds 2 bytes");
    EXPECT_FSQ_ERROR(from_patches(p.data(), 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 1),
                     "decompress: 4294967295 rows of 12884901885 values do not fit in memory");
    EXPECT_FSQ_ERROR(check_images(p.data(), {std::int64_t{1} << 62, 3, 2, 2}, 2), "images of 12 values do not fit");
}

TEST(Tiling, FromPatchesClipsRoundsAndZeroesNaN) {
    const std::vector<float> p = {-1.0f, 2.0f, 0.5f, std::numeric_limits<float>::quiet_NaN(),
                                  0.0f,  1.0f, 0.2f, 100.5f / 255.0f,
                                  0.0f,  0.0f, 0.0f, 0.0f};
    const Image img = from_patches(p.data(), 1, 1, 2, 2, 2);
    EXPECT_EQ(img.rgb, (std::vector<std::uint8_t>{0, 0, 0, 255, 255, 0, 128, 51, 0, 0, 101, 0}));
}

TEST(Half, RoundTripsEveryHalfAndRoundsToNearestEven) {
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        const auto half = static_cast<std::uint16_t>(h);
        const bool nan = (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0;
        if (nan) continue;
        ASSERT_EQ(detail::float_to_half(detail::half_to_float(half)), half) << std::hex << h;
    }
    EXPECT_EQ(detail::half_to_float(0x3C00), 1.0f);
    EXPECT_EQ(detail::half_to_float(0x0001), std::ldexp(1.0f, -24));
    EXPECT_EQ(detail::float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even
    EXPECT_EQ(detail::float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
    EXPECT_EQ(detail::float_to_half(65520.0f), 0x7C00);                          // rounds up to inf
    EXPECT_EQ(detail::float_to_half(65519.0f), 0x7BFF);
    EXPECT_EQ(detail::float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and the smallest subnormal
    EXPECT_EQ(detail::float_to_half(std::ldexp(1.5f, -25)), 0x0001);
    EXPECT_TRUE(std::isnan(detail::half_to_float(detail::float_to_half(std::nanf("")))));
}

}  // namespace
}  // namespace fsq::test
