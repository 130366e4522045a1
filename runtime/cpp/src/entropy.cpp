// The coding-1 coder and its prior; docs/bitstream.md is the specification, fsqdeploy/entropy.py
// the reference (messages included).
#include "fsq/entropy.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "fsq/error.hpp"
#include "limbs.hpp"

namespace fsq {
namespace {

constexpr std::uint32_t kTotal = 1u << kPrecision;
constexpr std::uint32_t kStateLow = 1u << 24;  // a lane's state lives in [2^24, 2^32); bytes move in and out
constexpr const char* kPriorNote = "Note: export the artifact again";

[[noreturn]] void prior_fail(const std::string& what) {
    throw Error("prior: " + what + ". " + kPriorNote);
}

void put_le(std::vector<std::uint8_t>& out, std::uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// count * d, exactly (a crafted header's grid may not fit 64 bits).
detail::Limbs symbols_of(std::uint64_t count, std::size_t d) {
    detail::Limbs n(count);
    n.mul_add(static_cast<std::uint32_t>(d), 0);
    return n;
}

std::uint32_t get_le(const std::uint8_t* p, int bytes) {
    std::uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

}  // namespace

std::size_t lane_count(std::uint64_t symbols, std::uint64_t per_lane) {
    const std::uint64_t k = symbols / per_lane;
    return k < 1 ? 1 : k > kMaxLanes ? kMaxLanes : static_cast<std::size_t>(k);
}

ModelHash sha256(const std::uint8_t* data, std::size_t size) {
    ModelHash digest{};
    unsigned int length = 0;
    if (EVP_Digest(data, size, digest.data(), &length, EVP_sha256(), nullptr) != 1 || length != digest.size()) {
        throw Error("prior: OpenSSL could not compute a sha256 digest");
    }
    return digest;
}

namespace {

// Why one table cannot code a column of `level` symbols, or "" when it can (entropy.py's _table_problem).
std::string table_problem(int level, const std::vector<std::uint32_t>& table, const std::string& name) {
    if (level < 2 || level > kMaxLevel || table.size() != static_cast<std::size_t>(level)) {
        return "has " + std::to_string(table.size()) + " frequencies, " + name + " = " + std::to_string(level);
    }
    std::size_t lowest = 0;
    std::uint64_t sum = 0;
    for (std::size_t s = 0; s < table.size(); ++s) {
        if (table[s] < table[lowest]) lowest = s;
        sum += table[s];
    }
    if (table[lowest] < 1) {
        return "gives symbol " + std::to_string(lowest) + " frequency 0; " +
               "every symbol needs at least 1 (a zero-frequency symbol cannot be coded)";
    }
    if (sum != kTotal) return "sums to " + std::to_string(sum) + ", not 2^16 = 65536";
    return "";
}

std::vector<std::uint32_t> cumulative(const std::vector<std::uint32_t>& table) {
    std::vector<std::uint32_t> cum(table.size());
    std::uint32_t c = 0;
    for (std::size_t s = 0; s < table.size(); ++s) {
        cum[s] = c;
        c += table[s];
    }
    return cum;
}

}  // namespace

Prior::Prior(Levels levels, Tables frequencies, std::vector<Tables> contexts, std::uint64_t context_symbols_per_lane)
    : levels_(std::move(levels)),
      contexts_(std::move(contexts)),
      context_symbols_per_lane_(context_symbols_per_lane),
      freq_(std::move(frequencies)) {
    if (freq_.size() != levels_.size()) {
        prior_fail(std::to_string(freq_.size()) + " frequency tables for " + std::to_string(levels_.size()) +
                   " levels");
    }
    for (std::size_t d = 0; d < levels_.size(); ++d) {
        const std::string problem = table_problem(levels_[d], freq_[d], "levels[" + std::to_string(d) + "]");
        if (!problem.empty()) prior_fail("table " + std::to_string(d) + " " + problem);
    }
    if (!contexts_.empty()) {
        if (contexts_.size() != levels_.size()) {
            prior_fail("context tables for " + std::to_string(contexts_.size()) + " columns, " +
                       std::to_string(levels_.size()) + " levels");
        }
        for (std::size_t d = 0; d < levels_.size(); ++d) {
            const auto level = static_cast<std::size_t>(levels_[d]);
            if (contexts_[d].size() != level * level) {
                prior_fail("column " + std::to_string(d) + " has " + std::to_string(contexts_[d].size()) +
                           " context tables, levels[" + std::to_string(d) + "]^2 = " + std::to_string(level * level));
            }
            ctx_base_.push_back(ctx_start_.size());
            for (std::size_t c = 0; c < contexts_[d].size(); ++c) {
                const std::vector<std::uint32_t>& table = contexts_[d][c];
                const std::string problem = table_problem(levels_[d], table, "levels[" + std::to_string(d) + "]");
                if (!problem.empty()) {
                    prior_fail("context table " + std::to_string(c) + " of column " + std::to_string(d) + " " + problem);
                }
                ctx_start_.push_back(ctx_freq_.size());
                const std::vector<std::uint32_t> cum = cumulative(table);
                ctx_freq_.insert(ctx_freq_.end(), table.begin(), table.end());
                ctx_cum_.insert(ctx_cum_.end(), cum.begin(), cum.end());
            }
        }
        if (context_symbols_per_lane_ < 1 || context_symbols_per_lane_ >= (std::uint64_t{1} << 32)) {
            prior_fail("context_symbols_per_lane is " + std::to_string(context_symbols_per_lane_) +
                       ", not an integer in [1, 2^32)");
        }
    }
    symbol_of_slot_.resize(levels_.size());
    for (std::size_t d = 0; d < levels_.size(); ++d) {
        cum_.push_back(cumulative(freq_[d]));
        symbol_of_slot_[d].resize(kTotal);
        for (std::size_t s = 0; s < freq_[d].size(); ++s) {
            for (std::uint32_t v = 0; v < freq_[d][s]; ++v) {
                symbol_of_slot_[d][cum_[d][s] + v] = static_cast<std::uint32_t>(s);
            }
        }
    }
    const std::vector<std::uint8_t> bytes = canonical_bytes();
    hash_ = sha256(bytes.data(), bytes.size());
}

std::size_t Prior::context_lane_count(std::uint64_t symbols) const {
    return lane_count(symbols, context_symbols_per_lane_);
}

std::vector<std::uint8_t> Prior::canonical_bytes() const {
    std::vector<std::uint8_t> out = {'F', 'S', 'Q', 'P', static_cast<std::uint8_t>(kPrecision)};
    put_le(out, static_cast<std::uint32_t>(levels_.size()), 2);
    for (std::size_t d = 0; d < levels_.size(); ++d) {
        put_le(out, static_cast<std::uint32_t>(levels_[d]), 2);
        for (std::uint32_t f : freq_[d]) put_le(out, f, 2);
    }
    if (!contexts_.empty()) {
        out.push_back(1);
        put_le(out, static_cast<std::uint32_t>(context_symbols_per_lane_), 4);
        for (std::uint32_t f : ctx_freq_) put_le(out, f, 2);
    }
    return out;
}

Prior Prior::load(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("prior: '" + path.string() + "' is missing. Note: export the artifact again");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("format", "") != "fsqdeploy-prior") {
        throw Error("prior: '" + path.string() + "' is not an fsqdeploy prior");
    }
    try {
        if (j.at("format_version").get<int>() != 1 || j.at("precision").get<int>() != static_cast<int>(kPrecision)) {
            prior_fail("'" + path.string() + "' has another format version or precision");
        }
        std::vector<Tables> contexts;
        if (j.contains("context_frequencies")) contexts = j.at("context_frequencies").get<std::vector<Tables>>();
        const std::uint64_t per_lane = j.value("context_symbols_per_lane", std::uint64_t{kSymbolsPerLane});
        Prior prior(j.at("levels").get<Levels>(), j.at("frequencies").get<Tables>(), std::move(contexts), per_lane);
        if (j.value("coding", 1) != prior.coding()) {
            prior_fail("'" + path.string() + "' says coding " + std::to_string(j.value("coding", 1)) + " but its tables are for coding " +
                       std::to_string(prior.coding()));
        }
        const std::string recorded = j.at("sha256").get<std::string>();
        if (to_hex(prior.hash()) != recorded) {
            prior_fail("'" + path.string() + "' records sha256 " + recorded.substr(0, 8) +
                       ".. but its tables hash to " + to_hex(prior.hash()).substr(0, 8) + "..");
        }
        return prior;
    } catch (const nlohmann::json::exception& e) {
        prior_fail("'" + path.string() + "' has a malformed field (" + e.what() + ")");
    }
}

namespace {

// The rANS payload of n symbols with these frequencies and cumulative frequencies (in the decoder's
// order), in groups beginning at `starts` (ascending, the first 0, each at most k long): a group's
// j-th symbol goes to lane j. entropy.py's _encode_groups; docs/bitstream.md specifies the bytes.
std::vector<std::uint8_t> encode_groups(const std::vector<std::uint32_t>& freq, const std::vector<std::uint32_t>& cum,
                                        const std::vector<std::size_t>& starts, std::size_t k) {
    const std::size_t n = freq.size();
    std::vector<std::uint32_t> x(k, kStateLow);
    // Per symbol, the bytes emitted before coding it (0, 1 or 2, in emission order).
    std::vector<std::uint8_t> emitted(n, 0), first(n), last(n);
    // rANS is last in, first out: code the groups (and their symbols) from the last to the first.
    for (std::size_t g = starts.size(); g-- > 0;) {
        const std::size_t end = g + 1 < starts.size() ? starts[g + 1] : n;
        for (std::size_t i = end; i-- > starts[g];) {
            const std::uint32_t f = freq[i], c = cum[i];
            std::uint32_t& state = x[i - starts[g]];
            while (state >= (f << 16)) {  // f <= 65535, so f << 16 fits; at most twice
                (emitted[i] == 0 ? first[i] : last[i]) = static_cast<std::uint8_t>(state & 0xFF);
                ++emitted[i];
                state >>= 8;
            }
            if (emitted[i] == 1) last[i] = first[i];
            state = ((state / f) << 16) + state % f + c;
        }
    }
    std::vector<std::uint8_t> out;
    out.reserve(4 * k + n / 2);
    for (std::uint32_t state : x) put_le(out, state, 4);
    // Group by group: round 0 (each symbol's last byte), then round 1 (the first of two), lanes ascending.
    for (std::size_t g = 0; g < starts.size(); ++g) {
        const std::size_t end = g + 1 < starts.size() ? starts[g + 1] : n;
        for (std::size_t i = starts[g]; i < end; ++i) {
            if (emitted[i] > 0) out.push_back(last[i]);
        }
        for (std::size_t i = starts[g]; i < end; ++i) {
            if (emitted[i] == 2) out.push_back(first[i]);
        }
    }
    return out;
}

// Round 0 and round 1 after a group's symbols: each of its `m` lanes below 2^24 reads a byte, lanes
// ascending; false when the stream ends first.
bool refill(std::vector<std::uint32_t>& x, std::size_t m, const std::uint8_t* stream, std::size_t total,
            std::size_t& pos) {
    for (int round = 0; round < 2; ++round) {
        for (std::size_t lane = 0; lane < m; ++lane) {
            std::uint32_t& state = x[lane];
            if (state >= kStateLow) continue;
            if (pos == total) return false;
            state = (state << 8) | stream[pos++];
        }
    }
    return true;
}

std::string ends_early(std::size_t total) {
    return "entropy-coded payload ends after " + std::to_string(total) + " bytes, before the last symbol";
}

// The lane states at the payload's start, or why not; `stream`/`total`: the bytes after them.
std::string read_states(const std::uint8_t* payload, std::size_t size, std::size_t k, std::vector<std::uint32_t>& x) {
    if (size < 4 * k) {
        return "entropy-coded payload has " + std::to_string(size) + " bytes, fewer than its " + std::to_string(k) +
               " lane states of 4 bytes";
    }
    x.assign(k, 0);
    for (std::size_t lane = 0; lane < k; ++lane) {
        x[lane] = get_le(payload + 4 * lane, 4);
        if (x[lane] < kStateLow) {
            return "lane " + std::to_string(lane) + " starts in state " + std::to_string(x[lane]) + ", below 2^24";
        }
    }
    return "";
}

// A bound on the symbols the payload can hold (entropy.py's _most_symbols), so a header that claims
// a huge grid over a tiny payload is refused before anything is allocated.
std::string too_many(const detail::Limbs& exact, std::size_t size, std::size_t k, std::uint32_t max_freq) {
    const std::uint64_t total = size - 4 * k;
    const std::uint64_t most = 32 * (total + 4 * k) * kTotal / (kTotal - max_freq);
    if (exact.fits_u64() && exact.to_u64() <= most) return "";
    return "entropy-coded payload of " + std::to_string(size) + " bytes cannot hold " + exact.to_decimal() +
           " symbols under this prior (the header's grid is too large for it)";
}

std::string check_end(const std::vector<std::uint32_t>& x, std::size_t pos, std::size_t total) {
    if (pos != total) {
        return "entropy-coded payload has " + std::to_string(total - pos) + " bytes left after the last symbol";
    }
    for (std::size_t lane = 0; lane < x.size(); ++lane) {
        if (x[lane] != kStateLow) {
            return "lane " + std::to_string(lane) + " ends in state " + std::to_string(x[lane]) + ", not 2^24";
        }
    }
    return "";
}

}  // namespace

std::vector<std::uint8_t> Prior::encode(const std::int32_t* indices, std::uint64_t count) const {
    const std::size_t d = levels_.size();
    const auto n = static_cast<std::size_t>(count * d);
    const std::size_t k = lane_count(n);
    std::vector<std::uint32_t> freq(n), cum(n);
    for (std::size_t i = 0; i < n; ++i) {
        const auto s = static_cast<std::size_t>(indices[i]);
        freq[i] = freq_[i % d][s];
        cum[i] = cum_[i % d][s];
    }
    std::vector<std::size_t> starts;
    for (std::size_t start = 0; start < n; start += k) starts.push_back(start);
    return encode_groups(freq, cum, starts, k);
}

std::vector<std::uint8_t> Prior::encode_context(const std::int32_t* indices, std::uint64_t rows,
                                                std::uint64_t cols) const {
    if (contexts_.empty()) {
        throw Error("prior: " + to_hex(hash_).substr(0, 8) + ".. has no context tables, so it cannot code coding 2. " +
                    kPriorNote);
    }
    const std::size_t d = levels_.size();
    const auto n = static_cast<std::size_t>(rows * cols * d);
    const std::size_t k = context_lane_count(n);
    std::vector<std::uint32_t> freq, cum;
    std::vector<std::size_t> starts;
    freq.reserve(n);
    cum.reserve(n);
    // Diagonal t = r + c ascending, rows ascending within it, d = 0..D-1 within a cell; each
    // diagonal split into groups of K.
    for (std::uint64_t t = 0; t + 1 < rows + cols; ++t) {
        const std::size_t first = freq.size();
        for (std::uint64_t r = t < cols ? 0 : t - cols + 1; r <= std::min(t, rows - 1); ++r) {
            const std::uint64_t c = t - r;
            for (std::size_t ch = 0; ch < d; ++ch) {
                const auto at = static_cast<std::size_t>((r * cols + c) * d + ch);
                const std::int32_t edge = levels_[ch] / 2;
                const std::int32_t above = r > 0 ? indices[at - cols * d] : edge;
                const std::int32_t left = c > 0 ? indices[at - d] : edge;
                const std::size_t entry = ctx_start_[context_table(ch, above, left)] + static_cast<std::size_t>(indices[at]);
                freq.push_back(ctx_freq_[entry]);
                cum.push_back(ctx_cum_[entry]);
            }
        }
        for (std::size_t start = first; start < freq.size(); start += k) starts.push_back(start);
    }
    return encode_groups(freq, cum, starts, k);
}

std::string Prior::decode(const std::uint8_t* payload, std::size_t size, std::uint64_t count,
                          std::vector<std::int32_t>& out) const {
    const std::size_t d = levels_.size();
    const detail::Limbs exact = symbols_of(count, d);
    const std::uint64_t n = exact.fits_u64() ? exact.to_u64() : UINT64_MAX;  // UINT64_MAX: K = 32 either way
    const std::size_t k = lane_count(n);
    std::vector<std::uint32_t> x;
    std::string problem = read_states(payload, size, k, x);
    if (!problem.empty()) return problem;
    std::uint32_t max_freq = 0;
    for (const auto& table : freq_) {
        for (std::uint32_t f : table) max_freq = std::max(max_freq, f);
    }
    problem = too_many(exact, size, k, max_freq);
    if (!problem.empty()) return problem;
    const std::uint8_t* stream = payload + 4 * k;
    const std::size_t total = size - 4 * k;
    out.assign(static_cast<std::size_t>(n), 0);
    std::size_t pos = 0;
    for (std::uint64_t start = 0; start < n; start += k) {
        const std::uint64_t end = std::min<std::uint64_t>(start + k, n);
        for (std::uint64_t i = start; i < end; ++i) {
            const std::size_t column = static_cast<std::size_t>(i % d);
            std::uint32_t& state = x[static_cast<std::size_t>(i - start)];
            const std::uint32_t slot = state & 0xFFFF;
            const std::uint32_t s = symbol_of_slot_[column][slot];
            state = freq_[column][s] * (state >> 16) + slot - cum_[column][s];
            out[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(s);
        }
        if (!refill(x, static_cast<std::size_t>(end - start), stream, total, pos)) return ends_early(total);
    }
    return check_end(x, pos, total);
}

std::string Prior::decode_context(const std::uint8_t* payload, std::size_t size, std::uint64_t rows,
                                  std::uint64_t cols, std::vector<std::int32_t>& out) const {
    const std::size_t d = levels_.size();
    detail::Limbs exact(rows);  // rows * cols * D, exactly: the header's grid fields are u32 each
    exact.mul_add(static_cast<std::uint32_t>(cols), 0);
    exact.mul_add(static_cast<std::uint32_t>(d), 0);
    const std::uint64_t n = exact.fits_u64() ? exact.to_u64() : UINT64_MAX;
    const std::size_t k = context_lane_count(n);
    std::vector<std::uint32_t> x;
    std::string problem = read_states(payload, size, k, x);
    if (!problem.empty()) return problem;
    problem = too_many(exact, size, k, *std::max_element(ctx_freq_.begin(), ctx_freq_.end()));
    if (!problem.empty()) return problem;
    const std::uint8_t* stream = payload + 4 * k;
    const std::size_t total = size - 4 * k;
    out.assign(static_cast<std::size_t>(n), 0);
    std::size_t pos = 0;
    std::vector<std::size_t> cells;  // the symbols of one diagonal, as positions in `out`
    for (std::uint64_t t = 0; t + 1 < rows + cols; ++t) {
        cells.clear();
        for (std::uint64_t r = t < cols ? 0 : t - cols + 1; r <= std::min(t, rows - 1); ++r) {
            for (std::size_t ch = 0; ch < d; ++ch) cells.push_back(static_cast<std::size_t>((r * cols + t - r) * d + ch));
        }
        for (std::size_t start = 0; start < cells.size(); start += k) {
            const std::size_t end = std::min(start + k, cells.size());
            for (std::size_t i = start; i < end; ++i) {
                const std::size_t at = cells[i], ch = at % d, cell = at / d;
                const std::int32_t edge = levels_[ch] / 2;
                const std::int32_t above = cell >= cols ? out[at - cols * d] : edge;
                const std::int32_t left = cell % cols > 0 ? out[at - d] : edge;
                const std::size_t first = ctx_start_[context_table(ch, above, left)];
                const std::uint32_t* cum = ctx_cum_.data() + first;
                std::uint32_t& state = x[i - start];
                const std::uint32_t slot = state & 0xFFFF;
                // the last symbol whose cumulative frequency is <= slot (cum[0] = 0)
                const auto s = static_cast<std::size_t>(std::upper_bound(cum, cum + levels_[ch], slot) - cum - 1);
                state = ctx_freq_[first + s] * (state >> 16) + slot - cum[s];
                out[at] = static_cast<std::int32_t>(s);
            }
            if (!refill(x, end - start, stream, total, pos)) return ends_early(total);
        }
    }
    return check_end(x, pos, total);
}

}  // namespace fsq
