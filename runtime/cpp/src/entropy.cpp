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

std::size_t lane_count(std::uint64_t symbols) {
    const std::uint64_t k = symbols / kSymbolsPerLane;
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

Prior::Prior(Levels levels, std::vector<std::vector<std::uint32_t>> frequencies)
    : levels_(std::move(levels)), freq_(std::move(frequencies)) {
    if (freq_.size() != levels_.size()) {
        prior_fail(std::to_string(freq_.size()) + " frequency tables for " + std::to_string(levels_.size()) +
                   " levels");
    }
    for (std::size_t d = 0; d < levels_.size(); ++d) {
        const std::vector<std::uint32_t>& table = freq_[d];
        if (levels_[d] < 2 || levels_[d] > kMaxLevel || table.size() != static_cast<std::size_t>(levels_[d])) {
            prior_fail("table " + std::to_string(d) + " has " + std::to_string(table.size()) +
                       " frequencies, levels[" + std::to_string(d) + "] = " + std::to_string(levels_[d]));
        }
        std::size_t lowest = 0;
        std::uint64_t sum = 0;
        for (std::size_t s = 0; s < table.size(); ++s) {
            if (table[s] < table[lowest]) lowest = s;
            sum += table[s];
        }
        if (table[lowest] < 1) {
            prior_fail("table " + std::to_string(d) + " gives symbol " + std::to_string(lowest) + " frequency 0; " +
                       "every symbol needs at least 1 (a zero-frequency symbol cannot be coded)");
        }
        if (sum != kTotal) {
            prior_fail("table " + std::to_string(d) + " sums to " + std::to_string(sum) + ", not 2^16 = 65536");
        }
    }
    cum_.resize(levels_.size());
    symbol_of_slot_.resize(levels_.size());
    for (std::size_t d = 0; d < levels_.size(); ++d) {
        std::uint32_t c = 0;
        symbol_of_slot_[d].resize(kTotal);
        for (std::size_t s = 0; s < freq_[d].size(); ++s) {
            cum_[d].push_back(c);
            for (std::uint32_t v = 0; v < freq_[d][s]; ++v) symbol_of_slot_[d][c + v] = static_cast<std::uint32_t>(s);
            c += freq_[d][s];
        }
    }
    const std::vector<std::uint8_t> bytes = canonical_bytes();
    hash_ = sha256(bytes.data(), bytes.size());
}

std::vector<std::uint8_t> Prior::canonical_bytes() const {
    std::vector<std::uint8_t> out = {'F', 'S', 'Q', 'P', static_cast<std::uint8_t>(kPrecision)};
    put_le(out, static_cast<std::uint32_t>(levels_.size()), 2);
    for (std::size_t d = 0; d < levels_.size(); ++d) {
        put_le(out, static_cast<std::uint32_t>(levels_[d]), 2);
        for (std::uint32_t f : freq_[d]) put_le(out, f, 2);
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
        Prior prior(j.at("levels").get<Levels>(), j.at("frequencies").get<std::vector<std::vector<std::uint32_t>>>());
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

std::vector<std::uint8_t> Prior::encode(const std::int32_t* indices, std::uint64_t count) const {
    const std::size_t d = levels_.size();
    const std::uint64_t n = count * d;
    const std::size_t k = lane_count(n);
    std::vector<std::uint32_t> x(k, kStateLow);
    // Per symbol, the bytes emitted before coding it (0, 1 or 2, in emission order).
    std::vector<std::uint8_t> emitted(static_cast<std::size_t>(n), 0), first(static_cast<std::size_t>(n)),
        last(static_cast<std::size_t>(n));
    // rANS is last in, first out: code the symbols from the last to the first.
    for (std::uint64_t i = n; i-- > 0;) {
        const std::size_t lane = static_cast<std::size_t>(i % k), column = static_cast<std::size_t>(i % d);
        const auto s = static_cast<std::size_t>(indices[i]);
        const std::uint32_t f = freq_[column][s], c = cum_[column][s];
        std::uint32_t& state = x[lane];
        while (state >= (f << 16)) {  // f <= 65535, so f << 16 fits; at most twice
            (emitted[i] == 0 ? first[i] : last[i]) = static_cast<std::uint8_t>(state & 0xFF);
            ++emitted[i];
            state >>= 8;
        }
        if (emitted[i] == 1) last[i] = first[i];
        state = ((state / f) << 16) + state % f + c;
    }
    std::vector<std::uint8_t> out;
    out.reserve(4 * k + static_cast<std::size_t>(n / 2));
    for (std::uint32_t state : x) put_le(out, state, 4);
    // Group by group: round 0 (each symbol's last byte), then round 1 (the first of two), lanes ascending.
    for (std::uint64_t start = 0; start < n; start += k) {
        const std::uint64_t end = std::min<std::uint64_t>(start + k, n);
        for (std::uint64_t i = start; i < end; ++i) {
            if (emitted[i] > 0) out.push_back(last[i]);
        }
        for (std::uint64_t i = start; i < end; ++i) {
            if (emitted[i] == 2) out.push_back(first[i]);
        }
    }
    return out;
}

std::string Prior::decode(const std::uint8_t* payload, std::size_t size, std::uint64_t count,
                          std::vector<std::int32_t>& out) const {
    const std::size_t d = levels_.size();
    const detail::Limbs exact = symbols_of(count, d);
    const std::uint64_t n = exact.fits_u64() ? exact.to_u64() : UINT64_MAX;  // UINT64_MAX: K = 32 either way
    const std::size_t k = lane_count(n);
    if (size < 4 * k) {
        return "entropy-coded payload has " + std::to_string(size) + " bytes, fewer than its " + std::to_string(k) +
               " lane states of 4 bytes";
    }
    std::vector<std::uint32_t> x(k);
    for (std::size_t lane = 0; lane < k; ++lane) {
        x[lane] = get_le(payload + 4 * lane, 4);
        if (x[lane] < kStateLow) {
            return "lane " + std::to_string(lane) + " starts in state " + std::to_string(x[lane]) + ", below 2^24";
        }
    }
    const std::uint8_t* stream = payload + 4 * k;
    const std::size_t total = size - 4 * k;
    // A bound on the symbols the payload can hold (entropy.py's _most_symbols), so a header that
    // claims a huge grid over a tiny payload is refused before anything is allocated.
    std::uint32_t max_freq = 0;
    for (const auto& table : freq_) {
        for (std::uint32_t f : table) max_freq = std::max(max_freq, f);
    }
    const std::uint64_t most = 32 * (std::uint64_t{total} + 4 * k) * kTotal / (kTotal - max_freq);
    if (!exact.fits_u64() || n > most) {
        return "entropy-coded payload of " + std::to_string(size) + " bytes cannot hold " + exact.to_decimal() +
               " symbols under this prior (the header's grid is too large for it)";
    }
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
        for (int round = 0; round < 2; ++round) {  // each lane below 2^24 reads a byte, lanes ascending
            for (std::uint64_t lane = 0; lane < end - start; ++lane) {
                std::uint32_t& state = x[static_cast<std::size_t>(lane)];
                if (state >= kStateLow) continue;
                if (pos == total) {
                    return "entropy-coded payload ends after " + std::to_string(total) +
                           " bytes, before the last symbol";
                }
                state = (state << 8) | stream[pos++];
            }
        }
    }
    if (pos != total) {
        return "entropy-coded payload has " + std::to_string(total - pos) + " bytes left after the last symbol";
    }
    for (std::size_t lane = 0; lane < k; ++lane) {
        if (x[lane] != kStateLow) {
            return "lane " + std::to_string(lane) + " ends in state " + std::to_string(x[lane]) + ", not 2^24";
        }
    }
    return "";
}

}  // namespace fsq
