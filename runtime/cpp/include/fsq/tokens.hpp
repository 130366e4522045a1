// Tokens: one integer per latent cell (or patch), for apps that use the codec as an image
// tokenizer (docs/tokens.md; runtime/tokens.py is the reference, with the same messages).
//
// A cell's D indices are one token, their mixed-radix value idx_0 + idx_1*L_0 + idx_2*L_0*L_1 + ...
// (idx_0 the least significant digit): the number the fixed-rate payload stores per cell. Tokens
// are int64, so a model's prod(levels) may be at most 2^63.
//
//   fsq::Bitstream b = codec.compress(image);                        // b.indices: [cells, D]
//   std::vector<std::int64_t> tokens = fsq::indices_to_tokens(b.indices, levels);   // row-major grid
//   fsq::Bitstream back{fsq::Header::for_grid(hash, h, w, f, levels), fsq::tokens_to_indices(tokens, levels)};
//   fsq::Image image = codec.decompress(back);
#pragma once

#include <cstdint>
#include <vector>

#include "fsq/bitstream.hpp"

namespace fsq {

/// prod(levels), the number of distinct tokens; throws Error when an int64 cannot hold every token.
std::uint64_t codebook_size(const Levels& levels);

/// Row-major indices [count, D] (D = levels.size(), index d in [0, levels[d])) -> count tokens.
std::vector<std::int64_t> indices_to_tokens(const std::vector<std::int32_t>& indices, const Levels& levels);

/// Tokens -> row-major indices [count, D]; a token outside [0, prod(levels)) is refused.
std::vector<std::int32_t> tokens_to_indices(const std::vector<std::int64_t>& tokens, const Levels& levels);

}  // namespace fsq
