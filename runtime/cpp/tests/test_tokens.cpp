// Tokens: the mixed-radix value of a cell, with runtime/tokens.py's words
// (tests/runtime/test_tokens.py is the model).
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>

#include "fsq/fsq.hpp"

namespace fsq {
namespace {

std::string error_of(const std::function<void()>& call) {
    try {
        call();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

TEST(Tokens, WorkedExampleFromTheSpec) {
    const Levels levels{3, 5};
    const std::vector<std::int32_t> indices{2, 4, 0, 1, 1, 3};
    EXPECT_EQ(indices_to_tokens(indices, levels), (std::vector<std::int64_t>{14, 3, 10}));
    EXPECT_EQ(tokens_to_indices({14, 3, 10}, levels), indices);
    EXPECT_EQ(codebook_size(levels), 15u);
}

TEST(Tokens, AreWhatTheFixedRatePayloadStoresPerCell) {
    const Levels levels{8, 8, 8, 5, 5, 5};  // 16 bits: one little-endian u16 per cell
    std::mt19937 rng(1);
    std::vector<std::int32_t> indices;
    for (int i = 0; i < 50; ++i)
        for (const int level : levels) indices.push_back(static_cast<std::int32_t>(rng() % level));
    const std::vector<std::uint8_t> packed = pack_indices(indices, levels);
    const std::vector<std::int64_t> tokens = indices_to_tokens(indices, levels);
    ASSERT_EQ(packed.size(), 2 * tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(tokens[i], packed[2 * i] | (packed[2 * i + 1] << 8));
}

TEST(Tokens, RoundTripUpToTheLargestCodebook) {
    for (const Levels& levels : {Levels(11, 7), Levels(63, 2)}) {
        std::mt19937 rng(static_cast<unsigned>(levels.size()));
        std::vector<std::int32_t> indices(levels.size());  // first row: all zero; second: the largest token
        for (const int level : levels) indices.push_back(level - 1);
        for (int i = 0; i < 100; ++i)
            for (const int level : levels) indices.push_back(static_cast<std::int32_t>(rng() % level));
        const std::vector<std::int64_t> tokens = indices_to_tokens(indices, levels);
        EXPECT_EQ(tokens[0], 0);
        EXPECT_EQ(static_cast<std::uint64_t>(tokens[1]), codebook_size(levels) - 1);
        EXPECT_EQ(tokens_to_indices(tokens, levels), indices);
    }
}

TEST(Tokens, BadInputIsRefusedWithPythonsWords) {
    EXPECT_EQ(error_of([] { indices_to_tokens({0, 5}, {8, 5}); }),
              "tokens: index 5 at [0, 1] (levels last) is outside [0, 5)");
    EXPECT_EQ(error_of([] { tokens_to_indices({0, 40}, {8, 5}); }),
              "tokens: token 40 at [1] is outside the codebook [0, 40). Note: tokens must come from a model with "
              "levels [8, 5]");
    EXPECT_EQ(error_of([] { tokens_to_indices({-3}, {8, 5}); }).rfind("tokens: token -3 at [0] is outside", 0), 0u);
    EXPECT_EQ(error_of([] {
                  codebook_size(Levels(22, 8));
              }).rfind("tokens: a cell of this model takes 66 bits, more than the 63 an int64 token holds.", 0),
              0u);
    EXPECT_NE(error_of([] { indices_to_tokens({0, 1, 2}, {8, 5}); }).find("not a multiple of the 2 levels"),
              std::string::npos);
}

}  // namespace
}  // namespace fsq
