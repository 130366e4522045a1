// libFuzzer target for the .fsq reader, both codings. Every input must either be refused with
// fsq::Error or be accepted, and an accepted file must be canonical: writing what was read gives
// back the same bytes. Anything else (a crash, a sanitizer report, another exception) is a bug.
// Coding-1 files are read with docs/bitstream.md's golden prior (levels [3, 5, 7]) and coding-2 files
// with its coding-2 golden prior (levels [3, 2], context tables); the seeds hold files coded with
// each, so mutations reach both rANS decoders with the right prior_hash.
//
// Random bytes rarely get past the two CRC32s, so each input is also tried with its CRCs repaired:
// that lets the fuzzer reach the header's values (v2's layout, coding and prior_hash included),
// the lengths and the payload decoder. The seeds (fsq-cross seeds) hold v1 and v2 files.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fsq/bitstream.hpp"
#include "fsq/entropy.hpp"
#include "fsq/error.hpp"

namespace {

const fsq::Prior& golden_prior() {
    static const fsq::Prior prior({3, 5, 7}, {{32768, 16384, 16384}, {30000, 20000, 10000, 5000, 536},
                                              {1, 2, 3, 65524, 2, 2, 2}});
    return prior;
}

// docs/bitstream.md's coding-2 golden prior (runtime/cpp/tests/helpers.hpp's golden_context_prior).
const fsq::Prior& golden_context_prior() {
    static const fsq::Prior prior = [] {
        const std::vector<std::vector<std::uint32_t>> three = {{64694, 259, 583}, {65, 64888, 583}, {66, 259, 65211}};
        const std::vector<std::vector<std::uint32_t>> two = {{65274, 262}, {66, 65470}};
        std::vector<std::vector<std::vector<std::uint32_t>>> contexts(2);
        for (std::size_t ctx = 0; ctx < 9; ++ctx) contexts[0].push_back(three[ctx % 3]);
        for (std::size_t ctx = 0; ctx < 4; ++ctx) contexts[1].push_back(two[ctx % 2]);
        return fsq::Prior({3, 2}, {{21846, 21845, 21845}, {32768, 32768}}, contexts, 2048);
    }();
    return prior;
}

void check(const std::uint8_t* data, std::size_t size) {
    // a v2 file's coding byte (offset 49) picks the prior it is read with
    const fsq::Prior& prior = size > 49 && data[4] == 2 && data[49] == fsq::kCodingContext ? golden_context_prior()
                                                                                          : golden_prior();
    fsq::Bitstream b;
    try {
        b = fsq::Bitstream::read(data, size, &prior);
    } catch (const fsq::Error&) {
        return;  // refused with a message: fine
    }
    const std::vector<std::uint8_t> again = b.write(&prior);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) std::abort();
}

void put_u32(std::uint8_t* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    check(data, size);
    // Repair the CRCs where the (claimed) version and D say they are: D is the last u16 of the
    // fixed part, 60 bytes in version 1 and 62 in version 2 (docs/bitstream.md).
    const bool v2 = size > 4 && data[4] == 2;
    const std::size_t fixed_size = v2 ? 62 : 60, extra = v2 ? 110 : 76;
    if (size < fixed_size) return 0;
    std::vector<std::uint8_t> fixed(data, data + size);
    const std::size_t d = fixed[fixed_size - 2] | (std::size_t{fixed[fixed_size - 1]} << 8);
    const std::size_t header_length = extra + 2 * d;
    if (size < header_length) return 0;
    put_u32(&fixed[header_length - 4], fsq::crc32(fixed.data(), header_length - 4));
    if (size >= header_length + 4) {
        const std::size_t payload = size - header_length - 4;
        put_u32(&fixed[size - 4], fsq::crc32(fixed.data() + header_length, payload));
    }
    check(fixed.data(), fixed.size());
    return 0;
}
