// Tokens, the twin of runtime/tokens.py: the same arithmetic and the same messages.
#include "fsq/tokens.hpp"

#include <string>

#include "fsq/error.hpp"

namespace fsq {
namespace {

constexpr std::uint64_t kMaxCodebook = std::uint64_t{1} << 63;  // every token < prod(L) <= 2^63 fits int64

std::string levels_list(const Levels& levels) {
    std::string s = "[";
    for (std::size_t d = 0; d < levels.size(); ++d) s += (d ? ", " : "") + std::to_string(levels[d]);
    return s + "]";
}

}  // namespace

std::uint64_t codebook_size(const Levels& levels) {
    bits_per_patch(levels);  // refuses empty levels and levels outside [2, kMaxLevel]
    std::uint64_t size = 1;
    for (const int level : levels) {
        const auto l = static_cast<std::uint64_t>(level);
        if (size > kMaxCodebook / l) {  // size * l > 2^63
            throw Error("tokens: a cell of this model takes " + std::to_string(bits_per_patch(levels)) +
                        " bits, more than the 63 an int64 token holds. Note: use the indices (Codec.encode), or "
                        "train a tokenizer with fewer levels, e.g. --latent-dim 6 --levels 8,8,8,5,5,5 (64000 "
                        "tokens)");
        }
        size *= l;
    }
    return size;
}

std::vector<std::int64_t> indices_to_tokens(const std::vector<std::int32_t>& indices, const Levels& levels) {
    codebook_size(levels);
    const std::size_t d = levels.size();
    if (indices.size() % d != 0) {
        throw Error("tokens: indices have " + std::to_string(indices.size()) + " values, not a multiple of the " +
                    std::to_string(d) + " levels. Note: pass row-major [cells, D] indices");
    }
    std::vector<std::int64_t> tokens(indices.size() / d);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        std::uint64_t token = 0;
        for (std::size_t j = d; j-- > 0;) {  // Horner: no partial value exceeds the final token
            const std::int32_t index = indices[i * d + j];
            if (index < 0 || index >= levels[j]) {
                throw Error("tokens: index " + std::to_string(index) + " at [" + std::to_string(i) + ", " +
                            std::to_string(j) + "] (levels last) is outside [0, " + std::to_string(levels[j]) + ")");
            }
            token = token * static_cast<std::uint64_t>(levels[j]) + static_cast<std::uint64_t>(index);
        }
        tokens[i] = static_cast<std::int64_t>(token);
    }
    return tokens;
}

std::vector<std::int32_t> tokens_to_indices(const std::vector<std::int64_t>& tokens, const Levels& levels) {
    const std::uint64_t size = codebook_size(levels);
    const std::size_t d = levels.size();
    std::vector<std::int32_t> indices(tokens.size() * d);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || static_cast<std::uint64_t>(tokens[i]) >= size) {
            throw Error("tokens: token " + std::to_string(tokens[i]) + " at [" + std::to_string(i) +
                        "] is outside the codebook [0, " + std::to_string(size) +
                        "). Note: tokens must come from a model with levels " + levels_list(levels));
        }
        auto rest = static_cast<std::uint64_t>(tokens[i]);
        for (std::size_t j = 0; j < d; ++j) {
            const auto l = static_cast<std::uint64_t>(levels[j]);
            indices[i * d + j] = static_cast<std::int32_t>(rest % l);
            rest /= l;
        }
    }
    return indices;
}

}  // namespace fsq
