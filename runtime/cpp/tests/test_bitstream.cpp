// The .fsq format: the golden vectors (version 1, and version 2 in both layouts), packing, and
// every way the reader refuses a file, with the Python reader's messages
// (tests/runtime/test_bitstream.py is the model).
#include <gtest/gtest.h>

#include <optional>
#include <random>

#include "helpers.hpp"
#include "limbs.hpp"

namespace fsq::test {
namespace {

std::vector<std::uint8_t> le(std::uint64_t v, int bytes) {
    std::vector<std::uint8_t> out;
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return out;
}

void append(std::vector<std::uint8_t>& out, const std::vector<std::uint8_t>& more) {
    out.insert(out.end(), more.begin(), more.end());
}

// A file assembled field by field from the documented layout, with correct CRCs (as build() and
// build_v2() in tests/runtime/test_bitstream.py), so each test changes exactly one thing. Fields{}
// is the v1 golden file, Fields::v2() the v2 golden latent grid.
struct Fields {
    std::vector<std::uint8_t> magic = {'F', 'S', 'Q', 'B'};
    bool v2_layout = false;  // where the fields sit: v2 has layout, coding and prior_hash
    std::uint64_t version = 1, flags = 0;
    std::optional<std::uint64_t> header_length;
    std::uint64_t height = 5, width = 7, layout = 1, coding = 0, patch = 4, rows = 2, cols = 2;
    Levels levels = kGoldenLevels;
    std::uint64_t bits = 7;
    std::vector<std::uint8_t> prior = std::vector<std::uint8_t>(32, 0);
    std::vector<std::uint8_t> payload = {0x00, 0x34, 0xad, 0x09};
    std::optional<std::uint64_t> payload_length;
    std::vector<std::uint8_t> trailing;

    static Fields v2() {
        Fields f;
        f.v2_layout = true;
        f.version = 2;
        return f;
    }

    std::vector<std::uint8_t> build() const {
        std::vector<std::uint8_t> head = magic;
        append(head, le(version, 1));
        append(head, le(flags, 1));
        append(head, le(header_length.value_or((v2_layout ? 110 : 76) + 2 * levels.size()), 2));
        const ModelHash hash = golden_hash();
        head.insert(head.end(), hash.begin(), hash.end());
        append(head, le(height, 4));
        append(head, le(width, 4));
        if (v2_layout) {
            append(head, le(layout, 1));
            append(head, le(coding, 1));
        }
        append(head, le(patch, 2));
        append(head, le(rows, 4));
        append(head, le(cols, 4));
        append(head, le(levels.size(), 2));
        for (int level : levels) append(head, le(static_cast<std::uint64_t>(level), 2));
        append(head, le(bits, 4));
        append(head, le(payload_length.value_or(payload.size()), 8));
        if (v2_layout) append(head, prior);
        std::vector<std::uint8_t> out = head;
        append(out, le(crc32(head.data(), head.size()), 4));
        append(out, payload);
        append(out, le(crc32(payload.data(), payload.size()), 4));
        append(out, trailing);
        return out;
    }
};

std::string read_error(const std::vector<std::uint8_t>& data) {
    try {
        Bitstream::read(data);
    } catch (const Error& e) {
        return e.what();
    }
    return "(accepted)";
}

TEST(Crc32, MatchesZlibCheckValue) {
    const std::string check = "123456789";
    EXPECT_EQ(crc32(reinterpret_cast<const std::uint8_t*>(check.data()), check.size()), 0xCBF43926u);
}

TEST(Golden, WriteIsByteIdentical) {
    Bitstream b{Header::for_image(golden_hash(), 5, 7, 4, kGoldenLevels), kGoldenIndices};
    EXPECT_EQ(b.write(), from_hex(kGoldenHex));
    EXPECT_EQ(Fields{}.build(), from_hex(kGoldenHex));
}

TEST(Golden, ReadGivesTheDocumentedFields) {
    const Bitstream b = Bitstream::read(from_hex(kGoldenHex));
    EXPECT_EQ(b.header.model_hash, golden_hash());
    EXPECT_EQ(b.header.version, 1u);
    EXPECT_EQ(b.header.layout, kLayoutPatches);
    EXPECT_EQ(b.header.image_height, 5u);
    EXPECT_EQ(b.header.image_width, 7u);
    EXPECT_EQ(b.header.cell_size, 4u);
    EXPECT_EQ(b.header.grid_rows, 2u);
    EXPECT_EQ(b.header.grid_cols, 2u);
    EXPECT_EQ(b.header.levels, kGoldenLevels);
    EXPECT_EQ(b.header.header_length(), 82u);
    EXPECT_EQ(b.indices, kGoldenIndices);
}

TEST(Golden, V2GridWriteIsByteIdentical) {
    Bitstream b{Header::for_grid(golden_hash(), 5, 7, 4, kGoldenLevels), kGoldenIndices};
    EXPECT_EQ(b.write(), from_hex(kGoldenV2GridHex));
    EXPECT_EQ(Fields::v2().build(), from_hex(kGoldenV2GridHex));
    // Cell (r, c) is indices[0, :, r, c] of the encoder's channels-first grid [1, 3, 2, 2].
    const std::vector<std::int32_t> grid = cells_to_grid(b.header, kGoldenIndices);
    EXPECT_EQ(grid, (std::vector<std::int32_t>{0, 2, 1, 2, 0, 4, 2, 0, 0, 6, 3, 5}));
    EXPECT_EQ(grid_to_cells(grid, 3, 2, 2), kGoldenIndices);
}

TEST(Golden, V2PatchesWriteIsByteIdentical) {
    Bitstream b{Header::for_patches(golden_hash(), 5, 7, 4, kGoldenLevels), kGoldenIndices};
    EXPECT_EQ(b.write(), from_hex(kGoldenV2PatchesHex));
    Fields f = Fields::v2();
    f.layout = 0;
    EXPECT_EQ(f.build(), from_hex(kGoldenV2PatchesHex));
}

TEST(Golden, TheGreyFlagIsFlagsBit0AndRoundTrips) {
    // tests/runtime/test_bitstream.py's test_the_grey_flag_is_flags_bit_0_and_round_trips.
    for (const std::uint8_t layout : {kLayoutPatches, kLayoutGrid}) {
        Bitstream b{layout == kLayoutGrid ? Header::for_grid(golden_hash(), 5, 7, 4, kGoldenLevels)
                                          : Header::for_patches(golden_hash(), 5, 7, 4, kGoldenLevels),
                    kGoldenIndices};
        b.header.grey = true;
        Fields f = Fields::v2();
        f.layout = layout;
        f.flags = kFlagGrey;
        const std::vector<std::uint8_t> data = b.write();
        EXPECT_EQ(data, f.build());
        EXPECT_EQ(data[5], 1u);
        const Bitstream back = Bitstream::read(data);
        EXPECT_TRUE(back.header.grey);
        EXPECT_EQ(back.header, b.header);
        EXPECT_EQ(back.indices, kGoldenIndices);
        EXPECT_FALSE(Bitstream::read(from_hex(layout == kLayoutGrid ? kGoldenV2GridHex : kGoldenV2PatchesHex))
                         .header.grey);
    }
    Fields v1;
    v1.flags = kFlagGrey;
    EXPECT_FSQ_ERROR(Bitstream::read(v1.build()), "flags byte is 0x01, expected 0 (reserved)");
    Fields both = Fields::v2();
    both.flags = 0x03;
    EXPECT_FSQ_ERROR(Bitstream::read(both.build()),
                     "flags byte is 0x03, expected 0 or 0x01 (bit 0: grey; the others reserved)");
}

TEST(Golden, V2ReadGivesTheDocumentedFields) {
    for (const auto& [hex, layout] :
         {std::pair{kGoldenV2GridHex, kLayoutGrid}, {kGoldenV2PatchesHex, kLayoutPatches}}) {
        const std::vector<std::uint8_t> data = from_hex(hex);
        const Bitstream b = Bitstream::read(data);
        EXPECT_EQ(b.header.model_hash, golden_hash());
        EXPECT_EQ(b.header.version, 2u);
        EXPECT_EQ(b.header.layout, layout);
        EXPECT_EQ(b.header.spatial(), layout == kLayoutGrid);
        EXPECT_EQ(b.header.coding, kCodingFixed);
        EXPECT_EQ(b.header.image_height, 5u);
        EXPECT_EQ(b.header.image_width, 7u);
        EXPECT_EQ(b.header.cell_size, 4u);
        EXPECT_EQ(b.header.grid_rows, 2u);
        EXPECT_EQ(b.header.grid_cols, 2u);
        EXPECT_EQ(b.header.levels, kGoldenLevels);
        EXPECT_EQ(b.header.header_length(), 116u);
        EXPECT_EQ(b.indices, kGoldenIndices);
        EXPECT_EQ(b.write(), data);  // a header read keeps its version: the same bytes back
    }
}

TEST(Golden, V1AndV2OfOneImageHoldTheSamePayload) {
    const std::vector<std::uint8_t> v1 = from_hex(kGoldenHex), v2 = from_hex(kGoldenV2PatchesHex);
    EXPECT_EQ(v2.size() - v1.size(), 34u);
    EXPECT_TRUE(std::equal(v1.end() - 8, v1.end(), v2.end() - 8));
    EXPECT_EQ(Bitstream::read(v1).indices, Bitstream::read(v2).indices);
    EXPECT_NE(Bitstream::read(v1).header, Bitstream::read(v2).header);  // the version differs
}

// Guaranteed, not likely: the bytes read before the header CRC (magic, version, flags,
// header_length, D) are checked on their own, and no single flip turns version 1 into 2 or back.
TEST(Golden, EveryFlippedBitIsRefused) {
    for (const auto& [hex, bits] :
         {std::pair{kGoldenHex, 720u}, {kGoldenV2GridHex, 992u}, {kGoldenV2PatchesHex, 992u}}) {
        const std::vector<std::uint8_t> golden = from_hex(hex);
        ASSERT_EQ(golden.size() * 8, bits);
        for (std::size_t bit = 0; bit < golden.size() * 8; ++bit) {
            std::vector<std::uint8_t> data = golden;
            data[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
            EXPECT_EQ(read_error(data).rfind("bitstream: ", 0), 0u) << "bit " << bit << ": " << read_error(data);
        }
    }
}

TEST(Golden, EveryTruncationIsRefused) {
    for (const char* hex : {kGoldenHex, kGoldenV2GridHex, kGoldenV2PatchesHex}) {
        const std::vector<std::uint8_t> golden = from_hex(hex);
        for (std::size_t n = 0; n < golden.size(); ++n) {
            const std::vector<std::uint8_t> data(golden.begin(), golden.begin() + static_cast<std::ptrdiff_t>(n));
            const std::string error = read_error(data);
            EXPECT_EQ(error.rfind("bitstream: ", 0), 0u) << n << " bytes: " << error;
            EXPECT_NE(error.find("truncated"), std::string::npos) << n << " bytes: " << error;
        }
    }
}

TEST(Packing, WorkedExampleFromTheSpec) {
    // levels [3, 5]: V = 14, 3, 10 in 4-bit fields -> 3e 0a.
    const std::vector<std::uint8_t> packed = pack_indices({2, 4, 0, 1, 1, 3}, {3, 5});
    EXPECT_EQ(packed, (std::vector<std::uint8_t>{0x3e, 0x0a}));
    EXPECT_EQ(unpack_indices(packed.data(), packed.size(), {3, 5}, 3), (std::vector<std::int32_t>{2, 4, 0, 1, 1, 3}));
}

TEST(Packing, BitsPerPatch) {
    EXPECT_EQ(bits_per_patch(Levels(64, 8)), 192u);
    EXPECT_EQ(bits_per_patch({8, 5, 5, 5}), 10u);
    EXPECT_EQ(bits_per_patch({3, 5, 7}), 7u);
    EXPECT_EQ(bits_per_patch({2}), 1u);
    EXPECT_EQ(bits_per_patch({65535, 65535}), 32u);
    EXPECT_EQ(bits_per_patch({65535, 65535, 2}), 33u);
    EXPECT_EQ(bits_per_patch({1024, 1024}), 20u);  // prod = 2^20 exactly
    EXPECT_EQ(bits_per_patch({1025, 1024}), 21u);
    EXPECT_EQ(bits_per_patch(Levels(32729, 65535)), 523664u);  // (65535^D - 1).bit_length(), D = MAX_D
}

// Power-of-two levels: V is the indices' bits side by side, so a plain bit writer is a reference.
TEST(Packing, PowerOfTwoLevelsAreConcatenatedBits) {
    const Levels levels = {8, 2, 16, 4, 256, 2, 65536 / 2};
    std::mt19937 rng(1);
    std::vector<std::int32_t> idx;
    for (int i = 0; i < 50 * 7; ++i) idx.push_back(static_cast<std::int32_t>(rng() % levels[i % 7]));
    std::vector<std::uint8_t> expected((50 * bits_per_patch(levels) + 7) / 8, 0);
    std::size_t pos = 0;
    for (std::size_t i = 0; i < idx.size(); ++i) {
        for (int bit = 0; (1 << bit) < levels[i % 7]; ++bit, ++pos) {
            if ((idx[i] >> bit) & 1) expected[pos / 8] |= static_cast<std::uint8_t>(1u << (pos % 8));
        }
    }
    EXPECT_EQ(pack_indices(idx, levels), expected);
    EXPECT_EQ(unpack_indices(expected.data(), expected.size(), levels, 50), idx);
}

TEST(Packing, RandomRoundTrips) {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 200; ++trial) {
        const std::size_t d = 1 + rng() % (trial % 10 == 0 ? 300 : 20);
        Levels levels;
        for (std::size_t j = 0; j < d; ++j) {
            const int kind = static_cast<int>(rng() % 3);
            levels.push_back(kind == 0   ? 2 + static_cast<int>(rng() % 15)
                             : kind == 1 ? 1 << (1 + rng() % 16)
                                         : 2 + static_cast<int>(rng() % 65534));
            levels.back() = std::min(levels.back(), kMaxLevel);
        }
        const std::size_t n = rng() % 40;
        std::vector<std::int32_t> idx(n * d);
        for (std::size_t i = 0; i < idx.size(); ++i) {
            const int level = levels[i % d];
            idx[i] = rng() % 4 == 0 ? level - 1 : static_cast<std::int32_t>(rng() % static_cast<unsigned>(level));
        }
        const std::vector<std::uint8_t> packed = pack_indices(idx, levels);
        ASSERT_EQ(packed.size(), (n * bits_per_patch(levels) + 7) / 8);
        ASSERT_EQ(unpack_indices(packed.data(), packed.size(), levels, n), idx) << "trial " << trial;
    }
}

TEST(Packing, RefusesBadInput) {
    EXPECT_FSQ_ERROR(bits_per_patch({}), "bitstream: levels is empty. Note: pass the model's levels");
    EXPECT_FSQ_ERROR(bits_per_patch({8, 1}), "levels[1] = 1 is not an int in [2, 65535]");
    EXPECT_FSQ_ERROR(bits_per_patch({65536}), "levels[0] = 65536 is not an int in [2, 65535]");
    EXPECT_FSQ_ERROR(pack_indices({0, 5}, {8, 5}), "indices[0, 1] = 5 is outside [0, 5) (levels[1])");
    EXPECT_FSQ_ERROR(pack_indices({0, -1}, {8, 5}), "indices[0, 1] = -1 is outside [0, 5)");
    EXPECT_FSQ_ERROR(pack_indices({0, 1, 2}, {8, 5}), "indices have 3 values, not a multiple of D = 2");
}

TEST(Packing, UnpackRefusesWrongLengthPaddingAndOverflow) {
    const std::vector<std::uint8_t> data = {0x3e, 0x0a};
    EXPECT_FSQ_ERROR(unpack_indices(data.data(), 2, {3, 5}, 2),
                     "payload has 2 bytes, expected 1 for 2 patches of 4 bits");
    EXPECT_FSQ_ERROR(unpack_indices(data.data(), 2, {3, 5}, 5),
                     "payload has 2 bytes, expected 3 for 5 patches of 4 bits");
    const std::vector<std::uint8_t> padded = {0x3e, 0x1a};
    EXPECT_FSQ_ERROR(unpack_indices(padded.data(), 2, {3, 5}, 3), "padding bits after the last patch are not zero");
    const std::vector<std::uint8_t> over = {0x0f};  // V = 15 >= 3*5
    EXPECT_FSQ_ERROR(unpack_indices(over.data(), 1, {3, 5}, 2), "patch 0 decodes to 15, outside the codebook [0, 15)");
}

TEST(Header, ForImageComputesTheGridAndChecksSizes) {
    const Header h = Header::for_image(golden_hash(), 100, 33, 32, {8});
    EXPECT_EQ(h.grid_rows, 4u);
    EXPECT_EQ(h.grid_cols, 2u);
    EXPECT_EQ(h.num_patches(), 8u);
    EXPECT_FSQ_ERROR(Header::for_image(golden_hash(), 0, 5, 4, {8}),
                     "image_height = 0 is not an int in [1, 4294967295]");
    EXPECT_FSQ_ERROR(Header::for_image(golden_hash(), 5, 5, 65536, {8}),
                     "patch_size = 65536 is not an int in [1, 65535]");
    EXPECT_FSQ_ERROR(Header::for_image(golden_hash(), 5, 5, 4, Levels(32730, 2)),
                     "32730 levels do not fit the header (at most 32729)");
    Header bad = h;
    bad.grid_rows = 3;
    EXPECT_FSQ_ERROR(bad.check(), "grid 3x2 does not tile a 100x33 image with 32-pixel patches (expected 4x2)");
    EXPECT_FSQ_ERROR(Header::for_image(golden_hash(), 5, 0, 4, {8}),
                     "bitstream: image_width = 0 is not an int in [1, 4294967295]. Note: images, patches and grids "
                     "must be non-empty");
}

TEST(Header, ForGridAndForPatchesAreVersion2) {
    const Header grid = Header::for_grid(golden_hash(), 29, 50, 8, {5, 5, 5});
    EXPECT_EQ(grid.version, 2u);
    EXPECT_EQ(grid.layout, kLayoutGrid);
    EXPECT_TRUE(grid.spatial());
    EXPECT_EQ(grid.grid_rows, 4u);
    EXPECT_EQ(grid.grid_cols, 7u);
    EXPECT_EQ(grid.num_cells(), 28u);
    EXPECT_EQ(grid.header_length(), 116u);
    const Header patches = Header::for_patches(golden_hash(), 29, 50, 8, {5, 5, 5});
    EXPECT_EQ(patches.version, 2u);
    EXPECT_EQ(patches.layout, kLayoutPatches);
    EXPECT_FALSE(patches.spatial());
    EXPECT_NE(grid, patches);
    EXPECT_FSQ_ERROR(Header::for_grid(golden_hash(), 5, 0, 4, {8}),
                     "bitstream: image_width = 0 is not an int in [1, 4294967295]. Note: images, cells and grids "
                     "must be non-empty");
    EXPECT_FSQ_ERROR(Header::for_grid(golden_hash(), 5, 5, 0, {8}), "cell_size = 0 is not an int in [1, 65535]");
    EXPECT_FSQ_ERROR(Header::for_patches(golden_hash(), 5, 5, 65536, {8}), "cell_size = 65536 is not an int");
    // Version 2's header is 34 bytes longer, so it holds fewer levels than version 1's u16 allows.
    EXPECT_FSQ_ERROR(Header::for_grid(golden_hash(), 5, 5, 4, Levels(32713, 2)),
                     "32713 levels do not fit the header (at most 32712)");
    EXPECT_NO_THROW(Header::for_image(golden_hash(), 5, 5, 4, Levels(32713, 2)));
    EXPECT_NO_THROW(Header::for_grid(golden_hash(), 5, 5, 4, Levels(32712, 2)));
}

TEST(Header, CheckRefusesWhatFsqHeaderRefuses) {
    // tests/runtime/test_bitstream.py's test_header_validation_v2, case by case.
    const Header good = Header::for_grid(golden_hash(), 5, 7, 4, {3, 5});
    struct Case {
        void (*change)(Header&);
        const char* message;
    };
    const Case cases[] = {
        {[](Header& h) { h.version = 3; },
         "bitstream: version = 3 is not one of [1, 2]. Note: read the file with the fsqdeploy version"},
        {[](Header& h) { h.version = 1; }, "unsupported layout 1 (version 1 knows 0 (patches))"},
        {[](Header& h) {
             h.version = 1;
             h.layout = kLayoutPatches;
             h.grey = true;
         },
         "version 1 has no grey flag. Note: build the header with Header::for_patches or Header::for_grid"},
        {[](Header& h) { h.layout = 2; }, "unsupported layout 2 (version 2 knows 0 (patches) or 1 (latent grid))"},
        {[](Header& h) { h.coding = 3; },
         "unsupported coding 3 (version 2 knows 0, fixed-rate packing, 1, rANS with the artifact's prior, and 2, rANS "
         "with its context tables). Note: entropy-coded files need a newer"},
        {[](Header& h) { h.coding = 2; },
         "prior_hash is zero in an entropy-coded (coding 2) file. Note: build the header with Header::with_prior"},
        {[](Header& h) { h.coding = 1; },
         "prior_hash is zero in an entropy-coded (coding 1) file. Note: build the header with Header::with_prior"},
        {[](Header& h) { h.prior_hash[3] = 1; }, "prior_hash is not zero in a fixed-rate (coding 0) file"},
        {[](Header& h) { h.cell_size = 0; }, "cell_size = 0 is not an int in [1, 65535]"},
        {[](Header& h) { h.grid_cols = 3; },
         "grid 2x3 does not tile a 5x7 image with 4-pixel latent cells (expected 2x2). Note: build the header with "
         "Header::for_patches or Header::for_grid"},
    };
    EXPECT_NO_THROW(good.check());
    for (const Case& c : cases) {
        Header h = good;
        c.change(h);
        EXPECT_FSQ_ERROR(h.check(), c.message);
        Bitstream b{h, std::vector<std::int32_t>(h.num_cells() * 2, 0)};
        EXPECT_FSQ_ERROR(b.write(), c.message);  // never written
    }
}

TEST(Header, GridToCellsIsRowMajorChannelsLast) {
    // A non-square grid [1, 3, 4, 7] with distinct values: cell (r, c) is row r * 7 + c.
    std::vector<std::int32_t> grid(3 * 4 * 7);
    for (std::size_t i = 0; i < grid.size(); ++i) grid[i] = static_cast<std::int32_t>(i);
    const std::vector<std::int32_t> cells = grid_to_cells(grid, 3, 4, 7);
    ASSERT_EQ(cells.size(), grid.size());
    for (std::size_t k = 0; k < 3; ++k) EXPECT_EQ(cells[(2 * 7 + 5) * 3 + k], grid[(k * 4 + 2) * 7 + 5]);
    const Header h = Header::for_grid(golden_hash(), 29, 50, 8, {100, 100, 100});
    EXPECT_EQ(cells_to_grid(h, Bitstream::read(Bitstream{h, cells}.write()).indices), grid);
    EXPECT_FSQ_ERROR(grid_to_cells(grid, 3, 4, 6), "a latent grid of 84 indices is not [1, 3, 4, 6]");
    EXPECT_FSQ_ERROR(grid_to_cells(grid, 0, 4, 7), "a latent grid of 84 indices is not [1, 0, 4, 7]");
    EXPECT_FSQ_ERROR(cells_to_grid(h, std::vector<std::int32_t>(81)),
                     "indices have 81 values but the 4x7 grid needs [28, 3]");
}

TEST(Writer, RefusesIndicesThatDoNotFitTheHeader) {
    Bitstream b{Header::for_image(golden_hash(), 5, 7, 4, kGoldenLevels), {0, 0, 0}};
    EXPECT_FSQ_ERROR(b.write(), "indices have 1 rows but the 2x2 grid needs 4. Note: encode every tile of the padded");
    Bitstream grid{Header::for_grid(golden_hash(), 5, 7, 4, kGoldenLevels), {0, 0, 0}};
    EXPECT_FSQ_ERROR(grid.write(), "grid needs 4. Note: encode every position of the latent grid, row by row");
    b.indices = kGoldenIndices;
    b.indices[4] = 5;
    EXPECT_FSQ_ERROR(b.write(), "indices[1, 1] = 5 is outside [0, 5) (levels[1])");
}

TEST(Reader, RefusesEachMalformedFieldWithPythonsReason) {
    const std::vector<std::uint8_t> golden = from_hex(kGoldenHex);
    struct Case {
        std::vector<std::uint8_t> data;
        std::string reason;
    };
    auto with = [](auto change) {
        Fields f;
        change(f);
        return f.build();
    };
    auto flip = [&](std::size_t byte) {
        std::vector<std::uint8_t> d = golden;
        d[byte] ^= 0x10;
        return d;
    };
    auto prefix = [&](std::size_t n) {
        return std::vector<std::uint8_t>(golden.begin(), golden.begin() + static_cast<std::ptrdiff_t>(n));
    };
    const std::vector<Case> cases = {
        {with([](Fields& f) {
             f.magic = {'P', 'N', 'G', '!'};
         }),
         "bitstream: not an .fsq file (it starts with b'PNG!', not b'FSQB'). Note: pass a file written by "
         "`fsqdeploy compress`"},
        {with([](Fields& f) {
             f.magic = {0x89, '\'', '\\', 'G'};
         }),
         "(it starts with b\"\\x89'\\\\G\", not b'FSQB')"},
        {prefix(59),
         "bitstream: file is truncated or too short: 59 bytes, the fixed header alone has 60. Note: the "
         "file was damaged after it was written; compress the image again"},
        {with([](Fields& f) { f.version = 3; }),
         "unsupported format version 3 (this reader knows 1, 2). Note: read the file with the fsqdeploy version"},
        {prefix(4), "file is truncated or too short: 4 bytes, the fixed header alone has 60"},
        {with([](Fields& f) { f.flags = 1; }), "flags byte is 0x01, expected 0 (reserved)"},
        {with([](Fields& f) { f.header_length = 80; }),
         "header_length 80 does not match D = 3 levels (expected 76 + 2*D)"},
        {with([](Fields& f) { f.levels = {}; }), "header_length 76 does not match D = 0 levels"},
        {prefix(70), "file is truncated: 70 bytes, shorter than its 82-byte header"},
        {flip(41), "corrupted header (header CRC32 mismatch)"},
        {with([](Fields& f) {
             f.levels = {3, 1, 7};
         }),
         "invalid header: levels[1] = 1 is not an int in [2, 65535]"},
        {with([](Fields& f) { f.height = 0; }), "invalid header: image_height = 0 is not an int in [1, 4294967295]"},
        {with([](Fields& f) { f.patch = 0; }), "invalid header: patch_size = 0 is not an int in [1, 65535]"},
        {with([](Fields& f) { f.rows = 3; }),
         "invalid header: grid 3x2 does not tile a 5x7 image with 4-pixel patches (expected 2x2)"},
        {with([](Fields& f) { f.bits = 8; }), "bits_per_patch is 8 but levels [3, 5, 7] need 7"},
        {with([](Fields& f) {
             f.levels = Levels(10, 2);
             f.bits = 11;
         }),
         "bits_per_patch is 11 but levels [2, 2, 2, 2, ...] (D=10) need 10"},
        {with([](Fields& f) { f.payload_length = 5; }), "payload_length is 5, expected 4 for 4 patches of 7 bits"},
        {with([](Fields& f) {
             f.height = f.width = f.rows = f.cols = 0xFFFFFFFFu;
             f.patch = 1;
             f.levels = {65535};
             f.bits = 16;
         }),
         "payload_length is 4, expected 36893488130239234050 for 18446744065119617025 patches of 16 bits"},
        {with([](Fields& f) {
             f.height = f.width = 0xFFFFFFFFu;
             f.patch = 2;
             f.rows = f.cols = 0x80000000u;
             f.levels = {2};
             f.bits = 1;
             f.payload_length = std::uint64_t{1} << 59;
         }),
         "file is truncated: 86 bytes, expected 576460752303423570"},
        {prefix(89), "file is truncated: 89 bytes, expected 90"},
        {with([](Fields& f) { f.trailing = {'x'}; }),
         "1 trailing bytes after the payload CRC. Note: the file was appended to, or several files were joined"},
        {flip(83), "corrupted payload (payload CRC32 mismatch)"},
        {with([](Fields& f) {
             f.payload = {0x00, 0x34, 0xad, 0x19};
         }),
         "padding bits after the last patch are not zero"},
        {with([](Fields& f) {
             f.payload = {0x7f, 0x34, 0xad, 0x09};
         }),
         "patch 0 decodes to 127, outside the codebook [0, 105)"},
    };
    for (const Case& c : cases) {
        const std::string error = read_error(c.data);
        EXPECT_NE(error.find(c.reason), std::string::npos) << "expected: " << c.reason << "\n     got: " << error;
    }
}

// tests/runtime/test_bitstream.py's REFUSED_V2, with the Python reader's messages.
TEST(Reader, RefusesEachMalformedV2FieldWithPythonsReason) {
    const std::vector<std::uint8_t> golden = from_hex(kGoldenV2GridHex);
    auto with = [](auto change) {
        Fields f = Fields::v2();
        change(f);
        return f.build();
    };
    auto prefix = [&](std::size_t n) {
        return std::vector<std::uint8_t>(golden.begin(), golden.begin() + static_cast<std::ptrdiff_t>(n));
    };
    auto changed = [&](std::size_t byte, std::uint8_t value) {
        std::vector<std::uint8_t> d = golden;
        d[byte] = value;
        return d;
    };
    const std::vector<std::pair<std::vector<std::uint8_t>, std::string>> cases = {
        {prefix(61),
         "bitstream: file is truncated or too short: 61 bytes, the fixed header alone has 62. Note: the file was "
         "damaged"},
        {prefix(5), "file is truncated or too short: 5 bytes, the fixed header alone has 62"},
        {with([](Fields& f) { f.flags = 0x80; }), "flags byte is 0x80, expected 0"},
        {with([](Fields& f) { f.header_length = 82; }),
         "header_length 82 does not match D = 3 levels (expected 110 + 2*D)"},
        {with([](Fields& f) { f.levels = {}; }), "header_length 110 does not match D = 0"},
        {prefix(100), "file is truncated: 100 bytes, shorter than its 116-byte header"},
        {with([](Fields& f) { f.layout = 2; }),
         "bitstream: unsupported layout 2 (this reader knows 0, patches, and 1, a latent grid). Note: read the file "
         "with the fsqdeploy version that wrote it"},
        {with([](Fields& f) {
             f.coding = 3;
             f.payload_length = 3;
         }),
         "bitstream: unsupported coding 3 (this reader knows 0, fixed-rate packing, 1, rANS with the artifact's "
         "prior, and 2, rANS with its context tables). Note: entropy-coded files need a newer fsqdeploy"},
        {with([](Fields& f) { f.coding = 2; }),
         "bitstream: prior_hash is zero in an entropy-coded (coding 2) file. Note: the file was damaged"},
        {with([](Fields& f) { f.coding = 1; }),
         "bitstream: prior_hash is zero in an entropy-coded (coding 1) file. Note: the file was damaged"},
        {with([](Fields& f) { f.prior[0] = 1; }),
         "bitstream: prior_hash is not zero in a fixed-rate (coding 0) file. Note: the file was damaged"},
        {with([](Fields& f) { f.rows = 1; }),
         "invalid header: grid 1x2 does not tile a 5x7 image with 4-pixel latent cells (expected 2x2)"},
        {with([](Fields& f) {
             f.layout = 0;
             f.rows = 1;
         }),
         "invalid header: grid 1x2 does not tile a 5x7 image with 4-pixel patches"},
        {with([](Fields& f) {
             f.width = 0;
             f.cols = 0;
         }),
         "invalid header: image_width = 0 is not an int in [1, 4294967295]"},
        {with([](Fields& f) { f.patch = 0; }), "invalid header: cell_size = 0 is not an int in [1, 65535]"},
        {with([](Fields& f) {
             f.levels = {3, 1, 7};
         }),
         "invalid header: levels[1] = 1"},
        {with([](Fields& f) { f.bits = 8; }), "bits_per_cell is 8 but levels [3, 5, 7] need 7"},
        {with([](Fields& f) { f.payload_length = 5; }), "payload_length is 5, expected 4 for 4 cells of 7 bits"},
        {with([](Fields& f) {
             f.trailing = {0, 0};
         }),
         "2 trailing bytes after the payload CRC"},
        {prefix(123), "file is truncated: 123 bytes, expected 124"},
        {changed(123, golden[123] ^ 1), "corrupted payload (payload CRC32 mismatch)"},
        {changed(48, 0), "corrupted header (header CRC32 mismatch)"},
        {with([](Fields& f) {
             f.payload = {0x00, 0x34, 0xad, 0x19};
         }),
         "padding bits after the last cell are not zero"},
        {with([](Fields& f) {
             f.payload = {0x7f, 0x34, 0xad, 0x09};
         }),
         "cell 0 decodes to 127, outside the codebook [0, 105)"},
    };
    for (const auto& [data, reason] : cases) {
        const std::string error = read_error(data);
        EXPECT_NE(error.find(reason), std::string::npos) << "expected: " << reason << "\n     got: " << error;
    }
}

// A v1 file whose version byte says 2 (or the reverse) reads the other layout's offsets: refused.
TEST(Reader, AVersionByteThatDisagreesWithTheLayoutIsRefused) {
    Fields v1_as_v2;
    v1_as_v2.version = 2;
    EXPECT_EQ(read_error(v1_as_v2.build()).rfind("bitstream: ", 0), 0u);
    Fields v2_as_v1 = Fields::v2();
    v2_as_v1.version = 1;
    EXPECT_EQ(read_error(v2_as_v1.build()).rfind("bitstream: ", 0), 0u);
}

TEST(Files, RandomV2RoundTrips) {
    std::mt19937 rng(11);
    for (int trial = 0; trial < 120; ++trial) {
        const std::uint64_t height = 1 + rng() % 300, width = 1 + rng() % 300;
        const std::uint64_t cell = std::vector<std::uint64_t>{1, 4, 8, 16, 32}[rng() % 5];
        Levels levels(1 + rng() % 12);
        for (int& level : levels) level = 2 + static_cast<int>(rng() % 16);
        const bool grid = trial % 2 == 1;
        const Header h = grid ? Header::for_grid(golden_hash(), height, width, cell, levels)
                              : Header::for_patches(golden_hash(), height, width, cell, levels);
        ASSERT_EQ(h.grid_rows, (height + cell - 1) / cell);
        Bitstream b{h, std::vector<std::int32_t>(h.num_cells() * levels.size())};
        for (std::size_t i = 0; i < b.indices.size(); ++i) {
            b.indices[i] = static_cast<std::int32_t>(rng() % static_cast<unsigned>(levels[i % levels.size()]));
        }
        const std::vector<std::uint8_t> data = b.write();
        ASSERT_EQ(data.size(), 110 + 2 * levels.size() + (h.num_cells() * bits_per_patch(levels) + 7) / 8 + 4);
        const Bitstream back = Bitstream::read(data);
        ASSERT_EQ(back.header, h) << "trial " << trial;
        ASSERT_EQ(back.header.layout, grid ? kLayoutGrid : kLayoutPatches);
        ASSERT_EQ(back.indices, b.indices) << "trial " << trial;
    }
}

TEST(Files, SaveAndLoadRoundTrip) {
    TempDir dir;
    Bitstream b{Header::for_image(golden_hash(), 5, 7, 4, kGoldenLevels), kGoldenIndices};
    b.save(dir / "golden.fsq");
    EXPECT_EQ(Bitstream::load(dir / "golden.fsq").indices, kGoldenIndices);
    std::size_t entries = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path())) entries += entry.is_regular_file();
    EXPECT_EQ(entries, 1u);  // no temp file left behind
}

TEST(Files, ErrorsNameTheFile) {
    TempDir dir;
    const std::string missing = (dir / "missing.fsq").string();
    EXPECT_FSQ_ERROR(Bitstream::load(missing), "bitstream: cannot read '" + missing + "': No such file or directory");
    write_bytes(dir / "short.fsq", {'F', 'S', 'Q', 'B'});
    EXPECT_FSQ_ERROR(Bitstream::load(dir / "short.fsq"),
                     "bitstream: '" + (dir / "short.fsq").string() + "': file is truncated or too short: 4 bytes");
    Bitstream bad{Header::for_image(golden_hash(), 5, 7, 4, kGoldenLevels), {}};
    EXPECT_FSQ_ERROR(bad.save(dir / "bad.fsq"), "indices have 0 rows");
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.fsq"));
    Bitstream good{Header::for_image(golden_hash(), 5, 7, 4, kGoldenLevels), kGoldenIndices};
    EXPECT_FSQ_ERROR(good.save(dir / "no-such-dir" / "x.fsq"), "bitstream: cannot write");
}

TEST(Model, HashHexAndCheckModel) {
    const ModelHash h = golden_hash();
    EXPECT_EQ(to_hex(h), "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    EXPECT_EQ(hash_from_hex(to_hex(h)), h);
    EXPECT_EQ(hash_from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"), h);
    EXPECT_FSQ_ERROR(hash_from_hex("abc"), "model hash must be a sha256 digest (32 raw bytes or 64 hex characters)");
    const Header header = Header::for_image(h, 5, 7, 4, kGoldenLevels);
    EXPECT_NO_THROW(check_model(header, h, kGoldenLevels));
    ModelHash other = h;
    other[0] = 0xab;
    EXPECT_FSQ_ERROR(check_model(header, other, kGoldenLevels),
                     "file was made by another model (hash 00010203.. != ab010203..). Note: decompress with the model");
    EXPECT_FSQ_ERROR(check_model(header, h, {3, 5, 8}),
                     "file was made with levels [3, 5, 7] but the model has [3, 5, 8]");
}

TEST(Limbs, DecimalAndArithmetic) {
    detail::Limbs v(1);
    for (int i = 0; i < 64; ++i) v.mul_add(2, 0);
    EXPECT_EQ(v.to_decimal(), "18446744073709551616");
    EXPECT_EQ(v.bit_length(), 65u);
    EXPECT_FALSE(v.fits_u64());
    v.sub_one();
    EXPECT_TRUE(v.fits_u64());
    EXPECT_EQ(v.to_u64(), ~std::uint64_t{0});
    detail::Limbs w(0xFFFFFFFFFFFFFFFFull);
    w.mul_add(0xFFFFFFFFu, 0xFFFFFFFFFFFFFFFFull);
    EXPECT_EQ(w.to_decimal(), "79228162514264337589248983040");  // (2^64-1)(2^32-1) + 2^64-1
    EXPECT_EQ(w.divmod(1000000007u), 578555943u);
    EXPECT_EQ(w.to_decimal(), "79228161959667203871");
}


// -- coding 1: static interleaved rANS (docs/bitstream.md, tests/runtime/test_entropy.py) ------------

namespace {

// docs/bitstream.md's lane vector: levels 8,5,5,5, 2601 cells, K = 5, tables from counts (s+1)^2.
std::pair<Prior, std::vector<std::int32_t>> lanes_vector() {
    const Levels levels = {8, 5, 5, 5};
    const std::vector<std::vector<std::uint32_t>> tables = {
        {322, 1286, 2892, 5140, 8031, 11565, 15741, 20559},
        {1192, 4767, 10724, 19065, 29788},
        {1192, 4767, 10724, 19065, 29788},
        {1192, 4767, 10724, 19065, 29788}};
    std::vector<std::int32_t> symbols;
    std::uint32_t seed = 1;
    for (std::size_t i = 0; i < 2601 * 4; ++i) {
        seed = seed * 1103515245u + 12345u;
        const std::uint64_t u = seed >> 16;
        symbols.push_back(static_cast<std::int32_t>(((u * u) >> 16) * static_cast<std::uint64_t>(levels[i % 4]) >> 16));
    }
    return {Prior(levels, tables), symbols};
}

}  // namespace

// fsqdeploy.entropy.quantize_counts, for building test tables as the Python tests do: every symbol
// 1, the rest of 2^16 by largest remainder (the smaller symbol first on a tie), no counts as all 1.
std::vector<std::uint32_t> quantize_for_test(std::vector<std::uint64_t> counts) {
    std::uint64_t total = 0;
    for (std::uint64_t c : counts) total += c;
    if (total == 0) std::fill(counts.begin(), counts.end(), 1), total = counts.size();
    const std::uint64_t spare = 65536 - counts.size();
    std::vector<std::uint32_t> freq;
    std::vector<std::pair<std::uint64_t, std::size_t>> remainders;
    std::uint64_t sum = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        freq.push_back(static_cast<std::uint32_t>(1 + counts[s] * spare / total));
        sum += freq.back();
        remainders.push_back({counts[s] * spare % total, s});
    }
    std::sort(remainders.begin(), remainders.end(),
              [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    for (std::size_t i = 0; i < 65536 - sum; ++i) freq[remainders[i].second] += 1;
    return freq;
}

TEST(Rans, GoldenPriorHashAndFile) {
    const Prior prior = golden_prior();
    EXPECT_EQ(to_hex_bytes(prior.canonical_bytes()),
              "46535150100300030000800040004005003075204e1027881318020700010002000300f4ff020002000200");
    EXPECT_EQ(to_hex(prior.hash()), "1b8a26fe2f899439e9efd51432a60200ce541d9f1e99c53161126442375ea29d");
    EXPECT_EQ(to_hex_bytes(prior.encode(kGoldenIndices.data(), 4)), "0164dd0140ffd7ffa581fc00");
    const Bitstream b{Header::for_grid(golden_hash(), 5, 7, 4, kGoldenLevels).with_prior(prior), kGoldenIndices};
    const std::vector<std::uint8_t> data = b.write(&prior);
    EXPECT_EQ(data, from_hex(kGoldenRansHex));
    const Bitstream back = Bitstream::read(data, &prior);
    EXPECT_EQ(back.header, b.header);
    EXPECT_EQ(back.header.coding, kCodingRans);
    EXPECT_EQ(back.indices, kGoldenIndices);
}

TEST(Rans, LanesVectorIsPinned) {
    const auto [prior, symbols] = lanes_vector();
    EXPECT_EQ(lane_count(symbols.size()), 5u);
    const std::vector<std::uint8_t> payload = prior.encode(symbols.data(), 2601);
    EXPECT_EQ(to_hex(sha256(payload.data(), payload.size())),
              "58fbbecd7f1a55823e2aaf8240789af927eef3f42c9b2031e36f9b735f35358b");
    std::vector<std::int32_t> back;
    EXPECT_EQ(prior.decode(payload.data(), payload.size(), 2601, back), "");
    EXPECT_EQ(back, symbols);
}

TEST(Rans, LaneCount) {
    EXPECT_EQ(lane_count(0), 1u);
    EXPECT_EQ(lane_count(4095), 1u);
    EXPECT_EQ(lane_count(4096), 2u);
    EXPECT_EQ(lane_count(2048 * 32 + 5), 32u);
    EXPECT_EQ(lane_count(UINT64_MAX), 32u);
}

TEST(Rans, RandomRoundTripsAcrossLaneCounts) {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 40; ++trial) {
        Levels levels(1 + rng() % 6);
        std::vector<std::vector<std::uint32_t>> tables;
        for (int& level : levels) {
            level = 2 + static_cast<int>(rng() % 300);
            std::vector<std::uint32_t> t(static_cast<std::size_t>(level), 1);
            for (std::uint32_t left = 65536 - static_cast<std::uint32_t>(level); left > 0; --left) {
                t[std::min<std::size_t>(t.size() - 1, (rng() % t.size()) * (rng() % 2))] += 1;
            }
            tables.push_back(t);
        }
        const Prior prior(levels, tables);
        const std::uint64_t cells = 1 + rng() % (trial % 4 == 0 ? 20000 : 50);
        std::vector<std::int32_t> indices(cells * levels.size());
        for (std::size_t i = 0; i < indices.size(); ++i) {
            indices[i] = static_cast<std::int32_t>(rng() % static_cast<unsigned>(levels[i % levels.size()]));
        }
        const std::vector<std::uint8_t> payload = prior.encode(indices.data(), cells);
        std::vector<std::int32_t> back;
        ASSERT_EQ(prior.decode(payload.data(), payload.size(), cells, back), "") << "trial " << trial;
        ASSERT_EQ(back, indices) << "trial " << trial;
    }
}

TEST(Rans, PriorsAreChecked) {
    EXPECT_FSQ_ERROR(Prior({3, 5}, {{32768, 16384, 16384}}), "prior: 1 frequency tables for 2 levels");
    EXPECT_FSQ_ERROR(Prior({3}, {{32768, 32768}}), "prior: table 0 has 2 frequencies, levels[0] = 3");
    EXPECT_FSQ_ERROR(Prior({3}, {{0, 32768, 32768}}),
                     "prior: table 0 gives symbol 0 frequency 0; every symbol needs at least 1 (a zero-frequency "
                     "symbol cannot be coded). Note: export the artifact again");
    EXPECT_FSQ_ERROR(Prior({2, 3}, {{1, 65535}, {1, 2, 3}}), "prior: table 1 sums to 6, not 2^16 = 65536");
}

TEST(Rans, FileNeedsItsOwnPrior) {
    const Prior prior = golden_prior();
    const Prior other(kGoldenLevels, {{32768, 16384, 16384}, {30000, 20000, 10000, 5000, 536}, {2, 1, 3, 65524, 2, 2, 2}});
    const std::vector<std::uint8_t> data = from_hex(kGoldenRansHex);
    EXPECT_FSQ_ERROR(Bitstream::read(data),
                     "bitstream: file is entropy-coded (coding 1, prior 1b8a26fe..) and no prior was given. Note: "
                     "decompress with the artifact that compressed it");
    EXPECT_FSQ_ERROR(Bitstream::read(data, &other), "bitstream: file was coded with a foreign prior (prior_hash "
                                                    "1b8a26fe.. != this artifact's " + to_hex(other.hash()).substr(0, 8));
    const Bitstream b{Header::for_grid(golden_hash(), 5, 7, 4, kGoldenLevels).with_prior(prior), kGoldenIndices};
    EXPECT_FSQ_ERROR(b.write(&other), "foreign prior");
    EXPECT_FSQ_ERROR(b.write(), "no prior was given");
    // a fixed-rate file reads as before with a prior given
    EXPECT_EQ(Bitstream::read(from_hex(kGoldenV2GridHex), &prior).indices, kGoldenIndices);
}

// Every single flipped bit and every truncation of an entropy-coded file is refused.
void expect_every_flip_and_cut_refused(const std::vector<std::uint8_t>& data, const Prior& prior) {
    for (std::size_t bit = 0; bit < 8 * data.size(); ++bit) {
        std::vector<std::uint8_t> flipped = data;
        flipped[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
        EXPECT_THROW(Bitstream::read(flipped, &prior), Error) << "bit " << bit;
    }
    for (std::size_t length = 0; length < data.size(); ++length) {
        EXPECT_THROW(Bitstream::read(std::vector<std::uint8_t>(data.begin(), data.begin() + length), &prior), Error);
    }
}

TEST(Rans, EveryFlippedBitAndTruncationIsRefused) {
    expect_every_flip_and_cut_refused(from_hex(kGoldenRansHex), golden_prior());
}

TEST(Rans, BadPayloadsWithValidCrcsAreRefusedWithPythonsWords) {
    // tests/runtime/test_bitstream.py's REFUSED_RANS, case by case.
    const Prior prior = golden_prior();
    const std::pair<const char*, const char*> cases[] = {
        {"0164dd", "entropy-coded payload has 3 bytes, fewer than its 1 lane states of 4 bytes"},
        {"ffffff0040ffd7ffa581fc00", "lane 0 starts in state 16777215, below 2^24"},
        {"0164dd0140ffd7ffa581fc", "entropy-coded payload ends after 7 bytes, before the last symbol"},
        {"0164dd0140ffd7ffa581fc0000", "entropy-coded payload has 1 bytes left after the last symbol"},
        {"0164dd0140ffd7ffa581fc01", "lane 0 ends in state 16777217, not 2^24"},
    };
    for (const auto& [payload, message] : cases) {
        Fields f = Fields::v2();
        f.coding = 1;
        f.prior.assign(prior.hash().begin(), prior.hash().end());
        f.payload = from_hex(payload);
        try {
            Bitstream::read(f.build(), &prior);
            ADD_FAILURE() << payload << " accepted";
        } catch (const Error& e) {
            EXPECT_EQ(std::string(e.what()).rfind(std::string("bitstream: ") + message, 0), 0u) << e.what();
        }
    }
    // a grid far larger than the payload could hold is refused before anything is allocated
    Fields huge = Fields::v2();
    huge.coding = 1;
    huge.prior.assign(prior.hash().begin(), prior.hash().end());
    huge.height = huge.width = 0xFFFFFFFFu;
    huge.patch = 1;
    huge.rows = huge.cols = 0xFFFFFFFFu;
    huge.payload.clear();
    for (int lane = 0; lane < 32; ++lane) append(huge.payload, {0, 0, 0, 1});  // 32 lanes at 2^24, no bytes
    EXPECT_FSQ_ERROR(Bitstream::read(huge.build(), &prior),
                     "bitstream: entropy-coded payload of 128 bytes cannot hold 55340232195358851075 symbols under "
                     "this prior (the header's grid is too large for it)");
}

// -- coding 2 ---------------------------------------------------------------------------------

TEST(Context, GoldenPriorHashAndFile) {
    const Prior prior = golden_context_prior();
    EXPECT_EQ(prior.coding(), kCodingContext);
    EXPECT_EQ(to_hex(prior.hash()), "54e3398a1c71a90646e757502ddbe637b4c0b3e6f5e0f467f4ba1e2a6376529b");
    EXPECT_EQ(to_hex_bytes(prior.encode_context(kGoldenContextIndices.data(), 2, 3)), "3b008c2acf18df2082281afd98");
    const Bitstream b{Header::for_grid(golden_hash(), 6, 10, 4, kGoldenContextLevels).with_prior(prior),
                      kGoldenContextIndices};
    EXPECT_EQ(b.header.coding, kCodingContext);
    const std::vector<std::uint8_t> data = b.write(&prior);
    EXPECT_EQ(data, from_hex(kGoldenContextHex));
    const Bitstream back = Bitstream::read(data, &prior);
    EXPECT_EQ(back.header, b.header);
    EXPECT_EQ(back.indices, kGoldenContextIndices);
    // the same tables without the context tables: another prior, and coding 1
    const Prior plain(kGoldenContextLevels, prior.frequencies());
    EXPECT_EQ(plain.coding(), kCodingRans);
    EXPECT_FSQ_ERROR(Bitstream::read(data, &plain), "bitstream: file was coded with a foreign prior (prior_hash 54e3398a..");
    EXPECT_FSQ_ERROR(Bitstream::read(data), "bitstream: file is entropy-coded (coding 2, prior 54e3398a..) and no "
                                            "prior was given");
}

TEST(Context, LanesVectorIsPinned) {
    // test_context_coding.py's lanes_vector: levels 8,5,5,5, 23 x 29 cells, 256 symbols per lane.
    const Levels levels = {8, 5, 5, 5};
    std::vector<std::vector<std::uint32_t>> tables;
    std::vector<std::vector<std::vector<std::uint32_t>>> contexts;
    for (int level : levels) {
        tables.push_back(std::vector<std::uint32_t>());
        contexts.emplace_back();
        for (int ctx = 0; ctx < level * level; ++ctx) {
            std::vector<std::uint64_t> counts;
            for (int s = 0; s < level; ++s) counts.push_back((s + 1) * (s + 1) + (s == ctx % level ? 1000 : 0));
            contexts.back().push_back(quantize_for_test(counts));
        }
        tables.back() = quantize_for_test(std::vector<std::uint64_t>(static_cast<std::size_t>(level), 1));
    }
    const Prior prior(levels, tables, contexts, 256);
    std::uint32_t seed = 1;
    std::vector<std::int32_t> symbols;
    for (std::size_t i = 0; i < 23 * 29 * 4; ++i) {
        seed = seed * 1103515245u + 12345u;
        const std::uint64_t u = seed >> 16;
        symbols.push_back(static_cast<std::int32_t>(((u * u) >> 16) * static_cast<std::uint64_t>(levels[i % 4]) >> 16));
    }
    EXPECT_EQ(prior.context_lane_count(symbols.size()), 10u);
    const std::vector<std::uint8_t> payload = prior.encode_context(symbols.data(), 23, 29);
    EXPECT_EQ(to_hex(sha256(payload.data(), payload.size())),
              "4e278b6604d9c3cc5ea2bb917ea76cd3143c2519627d5cda6b6f1dcee80bb960");
    std::vector<std::int32_t> back;
    EXPECT_EQ(prior.decode_context(payload.data(), payload.size(), 23, 29, back), "");
    EXPECT_EQ(back, symbols);
}

TEST(Context, RandomRoundTrips) {
    std::mt19937 rng(11);
    for (int trial = 0; trial < 60; ++trial) {
        Levels levels(1 + rng() % 4);
        std::vector<std::vector<std::uint32_t>> tables;
        std::vector<std::vector<std::vector<std::uint32_t>>> contexts;
        for (int& level : levels) {
            level = 2 + static_cast<int>(rng() % 9);
            std::vector<std::uint64_t> flat(static_cast<std::size_t>(level), 1);
            tables.push_back(quantize_for_test(flat));
            contexts.emplace_back();
            for (int ctx = 0; ctx < level * level; ++ctx) {
                std::vector<std::uint64_t> counts;
                for (int s = 0; s < level; ++s) counts.push_back(rng() % 1000 * (rng() % 3 != 0));
                contexts.back().push_back(quantize_for_test(counts));
            }
        }
        const Prior prior(levels, tables, contexts, 1 + rng() % 64);
        const std::uint64_t rows = 1 + rng() % 30, cols = 1 + rng() % 30;
        std::vector<std::int32_t> indices(rows * cols * levels.size());
        for (std::size_t i = 0; i < indices.size(); ++i) {
            indices[i] = static_cast<std::int32_t>(rng() % static_cast<unsigned>(levels[i % levels.size()]));
        }
        const std::vector<std::uint8_t> payload = prior.encode_context(indices.data(), rows, cols);
        std::vector<std::int32_t> back;
        ASSERT_EQ(prior.decode_context(payload.data(), payload.size(), rows, cols, back), "") << "trial " << trial;
        ASSERT_EQ(back, indices) << "trial " << trial;
    }
}

TEST(Context, ContextTablesAreChecked) {
    const std::vector<std::vector<std::uint32_t>> per = {{21846, 21845, 21845}};
    EXPECT_FSQ_ERROR(Prior({3}, per, {std::vector<std::vector<std::uint32_t>>(4, {21846, 21845, 21845})}),
                     "prior: column 0 has 4 context tables, levels[0]^2 = 9");
    std::vector<std::vector<std::uint32_t>> column(9, {21846, 21845, 21845});
    column[8] = {65535, 1, 0};
    EXPECT_FSQ_ERROR(Prior({3}, per, {column}),
                     "prior: context table 8 of column 0 gives symbol 2 frequency 0; every symbol needs at least 1");
    column[8] = {65535, 1};
    EXPECT_FSQ_ERROR(Prior({3}, per, {column}), "prior: context table 8 of column 0 has 2 frequencies, levels[0] = 3");
    EXPECT_FSQ_ERROR(Prior({3}, per, {column, column}), "prior: context tables for 2 columns, 1 levels");
    EXPECT_FSQ_ERROR(Prior({3}, per).encode_context(kGoldenIndices.data(), 1, 1), "has no context tables");
}

TEST(Context, EveryFlippedBitAndTruncationIsRefused) {
    expect_every_flip_and_cut_refused(from_hex(kGoldenContextHex), golden_context_prior());
}

TEST(Context, BadPayloadsAreRefusedWithPythonsWords) {
    // tests/runtime/test_context_coding.py's test_damaged_payloads_refused, case by case.
    const Prior prior = golden_context_prior();
    const std::vector<std::uint8_t> payload = from_hex("3b008c2acf18df2082281afd98");
    std::vector<std::int32_t> out;
    EXPECT_EQ(prior.decode_context(payload.data(), 3, 2, 3, out),
              "entropy-coded payload has 3 bytes, fewer than its 1 lane states of 4 bytes");
    std::vector<std::uint8_t> zero = payload;
    std::fill(zero.begin(), zero.begin() + 4, 0);
    EXPECT_EQ(prior.decode_context(zero.data(), zero.size(), 2, 3, out), "lane 0 starts in state 0, below 2^24");
    std::vector<std::uint8_t> longer = payload;
    longer.push_back(0);
    EXPECT_EQ(prior.decode_context(longer.data(), longer.size(), 2, 3, out),
              "entropy-coded payload has 1 bytes left after the last symbol");
    EXPECT_EQ(golden_context_prior(std::uint64_t{1} << 31).decode_context(payload.data(), payload.size(), 10000, 30000, out),
              "entropy-coded payload of 13 bytes cannot hold 600000000 symbols under this prior (the header's grid "
              "is too large for it)");
}

}  // namespace
}  // namespace fsq::test
