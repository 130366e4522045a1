// Static interleaved rANS over FSQ indices (the .fsq payloads of codings 1 and 2) and its frozen prior.
//
// docs/bitstream.md ("Coding 1", "Coding 2") is the specification; this is a byte-for-byte port of
// fsqdeploy.entropy (fsqdeploy/entropy.py). Integers only: the same tables give the same
// bytes on any machine, in C++ and in Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "fsq/bitstream.hpp"

namespace fsq {

inline constexpr std::uint8_t kCodingRans = 1;    // the .fsq coding byte of an entropy-coded payload
inline constexpr std::uint8_t kCodingContext = 2;  // ... and of one coded with the context tables
inline constexpr unsigned kPrecision = 16;         // a table's frequencies sum to 2^16
inline constexpr std::size_t kMaxLanes = 32;       // K <= 32 ...
inline constexpr std::size_t kSymbolsPerLane = 2048;  // ... and one lane per 2048 symbols
inline constexpr const char* kPriorFile = "prior.json";

/// K for `symbols` symbols (cells * D): floor(symbols / per_lane), clamped to [1, 32]; coding 1's
/// rule is one lane per 2048 symbols, coding 2's the prior's context_symbols_per_lane.
std::size_t lane_count(std::uint64_t symbols, std::uint64_t per_lane = kSymbolsPerLane);

/// sha256 of a byte range (OpenSSL), as the prior's hash is taken.
ModelHash sha256(const std::uint8_t* data, std::size_t size);

using Tables = std::vector<std::vector<std::uint32_t>>;

/// One frequency table per index column d: levels[d] entries, each >= 1, summing to 2^16; and,
/// for coding 2, per column d levels[d]^2 such tables, one per context above * L_d + left.
class Prior {
public:
    /// Checks the tables; throws Error ("prior: ...", the Python words) when the coder cannot use them.
    /// `contexts` empty: a prior for coding 1 only.
    Prior(Levels levels, Tables frequencies, std::vector<Tables> contexts = {},
          std::uint64_t context_symbols_per_lane = kSymbolsPerLane);
    /// ART/prior.json: the tables, checked, and their recorded sha256, which must match.
    static Prior load(const std::filesystem::path& path);

    const Levels& levels() const { return levels_; }
    const std::vector<std::vector<std::uint32_t>>& frequencies() const { return freq_; }
    bool has_contexts() const { return !contexts_.empty(); }
    /// The coding its files get: 2 with context tables, else 1.
    std::uint8_t coding() const { return has_contexts() ? kCodingContext : kCodingRans; }
    /// Coding 2's K: floor(symbols / context_symbols_per_lane), clamped to [1, 32].
    std::size_t context_lane_count(std::uint64_t symbols) const;
    /// "FSQP", precision u8, D u16, per column L_d u16 and its frequencies u16, little-endian; with
    /// context tables then 01, symbols per lane u32, and per column its L_d^2 tables of u16.
    std::vector<std::uint8_t> canonical_bytes() const;
    /// sha256 of canonical_bytes(): a coding-1 file's prior_hash.
    const ModelHash& hash() const { return hash_; }

    /// int32 [count, D] row-major indices (in range) -> the coding-1 payload.
    std::vector<std::uint8_t> encode(const std::int32_t* indices, std::uint64_t count) const;
    /// The payload of `count` cells -> indices [count, D], or "" on success and why not (as the
    /// Python decoder words it) when the payload is not one the encoder writes.
    std::string decode(const std::uint8_t* payload, std::size_t size, std::uint64_t count,
                       std::vector<std::int32_t>& out) const;
    /// Coding 2: int32 [rows * cols, D] row-major cells -> the payload (context tables required).
    std::vector<std::uint8_t> encode_context(const std::int32_t* indices, std::uint64_t rows,
                                             std::uint64_t cols) const;
    /// Coding 2's payload of a rows x cols grid -> indices, or why not, as decode() words it.
    std::string decode_context(const std::uint8_t* payload, std::size_t size, std::uint64_t rows,
                               std::uint64_t cols, std::vector<std::int32_t>& out) const;

private:
    // Context table t = base_[d] + above * L_d + left holds its L_d entries at ctx_start_[t].
    std::size_t context_table(std::size_t d, std::int32_t above, std::int32_t left) const {
        return ctx_base_[d] + static_cast<std::size_t>(above) * static_cast<std::size_t>(levels_[d]) +
               static_cast<std::size_t>(left);
    }
    Levels levels_;
    std::vector<Tables> contexts_;
    std::uint64_t context_symbols_per_lane_ = kSymbolsPerLane;
    std::vector<std::size_t> ctx_base_, ctx_start_;
    std::vector<std::uint32_t> ctx_freq_, ctx_cum_;
    std::vector<std::vector<std::uint32_t>> freq_, cum_;
    std::vector<std::vector<std::uint32_t>> symbol_of_slot_;  // per column: the symbol owning each of 2^16 slots
    ModelHash hash_{};
};

}  // namespace fsq
