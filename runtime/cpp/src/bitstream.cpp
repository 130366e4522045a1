// The .fsq reader and writer; docs/bitstream.md is the specification, runtime/bitstream.py the
// reference. Messages and the order of the reader's checks follow the Python implementation.
#include "fsq/bitstream.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "fsq/entropy.hpp"
#include "fsq/error.hpp"
#include "limbs.hpp"

namespace fsq {
namespace {

constexpr std::uint8_t kMagic[4] = {'F', 'S', 'Q', 'B'};
constexpr std::size_t kPriorHash = 32;  // v2: the entropy coder's table hash, zero for coding 0

// Where a version keeps its fields (docs/bitstream.md) and what its spec calls them, so a message
// names the field the reader sees: the fixed part (magic .. D, which ends with D's u16),
// header_length = extra + 2*D, and the most levels that keep header_length in its u16.
struct Format {
    std::size_t fixed, extra, max_levels;
    const char* cell_size;  // the field's name
    const char* bits;       // bits_per_cell's name
    const char* unit;       // what a cell is called
};
constexpr Format kV1{60, 76, kMaxLevels, "patch_size", "bits_per_patch", "patch"};
constexpr Format kV2{62, 110, kMaxLevelsV2, "cell_size", "bits_per_cell", "cell"};

const Format& format_of(unsigned version) {
    return version == 1 ? kV1 : kV2;
}

std::string plural(std::string_view unit) {
    return unit == "patch" ? "patches" : std::string(unit) + "s";
}

constexpr const char* kCorrupt = "Note: the file was damaged after it was written; compress the image again";
constexpr const char* kCodingsText =
    "0, fixed-rate packing, 1, rANS with the artifact's prior, and 2, rANS with its context tables";
constexpr const char* kOtherArt = "Note: decompress with the artifact that compressed it";
constexpr const char* kLevelsNote = "Note: pass the model's levels, e.g. [8, 8, 8]";

[[noreturn]] void fail(const std::string& what, const std::string& note) {
    throw Error("bitstream: " + what + ". " + note);
}

// -- little-endian fields --------------------------------------------------------------------

std::uint64_t get_le(const std::uint8_t* p, int bytes) {
    std::uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// -- checks shared by the writer and the reader ------------------------------------------------

// A problem with the levels, or "" (note: kLevelsNote).
std::string levels_problem(const Levels& levels) {
    if (levels.empty()) return "levels is empty";
    for (std::size_t d = 0; d < levels.size(); ++d) {
        if (levels[d] < 2 || levels[d] > kMaxLevel) {
            return "levels[" + std::to_string(d) + "] = " + std::to_string(levels[d]) + " is not an int in [2, " +
                   std::to_string(kMaxLevel) + "]";
        }
    }
    return "";
}

void check_levels(const Levels& levels) {
    std::string what = levels_problem(levels);
    if (!what.empty()) fail(what, kLevelsNote);
}

std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) {
    return a / b + (a % b != 0);
}

// What FsqHeader.__post_init__ refuses, in its order, as (what, note); what is "" when the header
// is fine. First the version, layout and coding (which the reader has checked already, with its
// own words), then the levels, which the factories also check before the sizes, as FsqHeader does.
using Problem = std::pair<std::string, std::string>;

Problem format_problem(unsigned version, unsigned layout, unsigned coding) {
    if (version != 1 && version != 2) {
        return {"version = " + std::to_string(version) + " is not one of [1, 2]",
                "Note: read the file with the fsqdeploy version that wrote it"};
    }
    if (layout > kLayoutGrid || (version == 1 && layout != kLayoutPatches)) {
        const char* known = version == 1 ? "0 (patches)" : "0 (patches) or 1 (latent grid)";
        return {"unsupported layout " + std::to_string(layout) + " (version " + std::to_string(version) + " knows " +
                    known + ")",
                "Note: the file comes from a newer writer; read it with that fsqdeploy version"};
    }
    if (coding > kCodingContext || (version == 1 && coding != kCodingFixed)) {
        return {"unsupported coding " + std::to_string(coding) + " (version " + std::to_string(version) + " knows " +
                    (version == 1 ? "0, fixed-rate packing" : kCodingsText) + ")",
                "Note: entropy-coded files need a newer fsqdeploy"};
    }
    return {"", ""};
}

bool is_zero(const ModelHash& hash) {
    return std::all_of(hash.begin(), hash.end(), [](std::uint8_t b) { return b == 0; });
}

// A coding-0 file has no prior (prior_hash zero), an entropy-coded file names one; "" when they agree.
std::string prior_hash_problem(unsigned coding, const ModelHash& prior_hash) {
    if (is_zero(prior_hash) == (coding == kCodingFixed)) return "";
    return coding == kCodingFixed ? "prior_hash is not zero in a fixed-rate (coding 0) file"
                                  : "prior_hash is zero in an entropy-coded (coding " + std::to_string(coding) + ") file";
}

Problem header_levels_problem(const Levels& levels, unsigned version) {
    std::string what = levels_problem(levels);
    if (!what.empty()) return {what, kLevelsNote};
    if (levels.size() > format_of(version).max_levels) {
        return {std::to_string(levels.size()) + " levels do not fit the header (at most " +
                    std::to_string(format_of(version).max_levels) + ")",
                "Note: use a model with fewer FSQ dimensions"};
    }
    return {"", ""};
}

// A size field (named as the version names it) must lie in [1, limit], limit being its field's maximum.
struct SizeField {
    const char* name;
    std::uint64_t value, limit;
};

Problem size_problem(const SizeField& f, unsigned version) {
    if (f.value >= 1 && f.value <= f.limit) return {"", ""};
    return {std::string(f.name) + " = " + std::to_string(f.value) + " is not an int in [1, " + std::to_string(f.limit) +
                "]",
            // v1 keeps its words, as FsqHeader does
            version == 1 ? "Note: images, patches and grids must be non-empty"
                         : "Note: images, cells and grids must be non-empty"};
}

Problem header_problem(const Header& h) {
    const Problem format = format_problem(h.version, h.layout, h.coding);
    if (!format.first.empty()) return format;
    const std::string prior = prior_hash_problem(h.coding, h.prior_hash);
    if (!prior.empty()) return {prior, "Note: build the header with Header::with_prior"};
    if (h.version == 1 && h.grey) {
        return {"version 1 has no grey flag", "Note: build the header with Header::for_patches or Header::for_grid"};
    }
    const Problem levels = header_levels_problem(h.levels, h.version);
    if (!levels.first.empty()) return levels;
    const SizeField sizes[] = {
        {"image_height", h.image_height, 0xFFFFFFFFu},
        {"image_width", h.image_width, 0xFFFFFFFFu},
        {format_of(h.version).cell_size, h.cell_size, 0xFFFFu},
        {"grid_rows", h.grid_rows, 0xFFFFFFFFu},
        {"grid_cols", h.grid_cols, 0xFFFFFFFFu},
    };
    for (const SizeField& size : sizes) {
        Problem p = size_problem(size, h.version);
        if (!p.first.empty()) return p;
    }
    const std::uint64_t rows = ceil_div(h.image_height, h.cell_size);
    const std::uint64_t cols = ceil_div(h.image_width, h.cell_size);
    if (h.grid_rows != rows || h.grid_cols != cols) {
        return {"grid " + std::to_string(h.grid_rows) + "x" + std::to_string(h.grid_cols) + " does not tile a " +
                    std::to_string(h.image_height) + "x" + std::to_string(h.image_width) + " image with " +
                    std::to_string(h.cell_size) + "-pixel " + (h.spatial() ? "latent cells" : "patches") +
                    " (expected " + std::to_string(rows) + "x" + std::to_string(cols) + ")",
                "Note: build the header with Header::for_patches or Header::for_grid"};
    }
    return {"", ""};
}

std::string levels_text(const Levels& levels) {
    std::string s = "[";
    const std::size_t shown = levels.size() <= 8 ? levels.size() : 4;
    for (std::size_t d = 0; d < shown; ++d) s += (d ? ", " : "") + std::to_string(levels[d]);
    if (levels.size() <= 8) return s + "]";
    return s + ", ...] (D=" + std::to_string(levels.size()) + ")";
}

// ceil(count * bits / 8) as exact decimal text, and as a number when it fits 64 bits.
struct ByteCount {
    std::string text;
    bool fits = false;
    std::uint64_t value = 0;
};

ByteCount packed_bytes(std::uint64_t count, std::uint32_t bits) {
    detail::Limbs total(count);
    total.mul_add(bits, 7);
    total.divmod(8);
    ByteCount out;
    out.text = total.to_decimal();
    out.fits = total.fits_u64();
    if (out.fits) out.value = total.to_u64();
    return out;
}

// Python's repr() of a bytes object, for "it starts with b'\x89PNG'".
std::string bytes_repr(const std::uint8_t* data, std::size_t size) {
    const bool single = std::memchr(data, '\'', size) != nullptr;
    const char quote = single && std::memchr(data, '"', size) == nullptr ? '"' : '\'';
    std::string s = std::string("b") + quote;
    for (std::size_t i = 0; i < size; ++i) {
        const std::uint8_t c = data[i];
        if (c == quote || c == '\\') {
            s += '\\';
            s += static_cast<char>(c);
        } else if (c == '\n') {
            s += "\\n";
        } else if (c == '\r') {
            s += "\\r";
        } else if (c == '\t') {
            s += "\\t";
        } else if (c >= 0x20 && c < 0x7f) {
            s += static_cast<char>(c);
        } else {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            s += buf;
        }
    }
    return s + quote;
}

// Digits grouped into runs whose radix product fits 32 bits, so the big-integer V is multiplied
// or divided once per run rather than once per digit (as _digit_runs does for numpy's uint64).
struct Run {
    std::size_t begin, end;
    std::uint32_t product;
};

std::vector<Run> digit_runs(const Levels& levels) {
    std::vector<Run> runs;
    std::size_t start = 0;
    std::uint64_t product = 1;
    for (std::size_t d = 0; d < levels.size(); ++d) {
        if (product * static_cast<std::uint64_t>(levels[d]) > 0xFFFFFFFFu) {
            runs.push_back({start, d, static_cast<std::uint32_t>(product)});
            start = d;
            product = 1;
        }
        product *= static_cast<std::uint64_t>(levels[d]);
    }
    runs.push_back({start, levels.size(), static_cast<std::uint32_t>(product)});
    return runs;
}

detail::Limbs codebook_size(const Levels& levels) {  // prod(levels); levels already checked
    detail::Limbs product(1);
    for (const Run& run : digit_runs(levels)) product.mul_add(run.product, 0);
    return product;
}

std::uint32_t bits_of(const Levels& levels) {  // (prod(levels) - 1).bit_length()
    detail::Limbs product = codebook_size(levels);
    product.sub_one();
    return static_cast<std::uint32_t>(product.bit_length());
}

// Bits [pos, pos + nbits) of the LSB-first stream, nbits <= 32.
void put_bits(std::uint8_t* out, std::uint64_t pos, std::uint32_t value, unsigned nbits) {
    const unsigned shift = static_cast<unsigned>(pos % 8);
    std::uint64_t window = std::uint64_t{value} << shift;
    const std::size_t nbytes = (shift + nbits + 7) / 8;
    std::uint8_t* p = out + pos / 8;
    for (std::size_t k = 0; k < nbytes; ++k) p[k] |= static_cast<std::uint8_t>(window >> (8 * k));
}

std::uint32_t get_bits(const std::uint8_t* in, std::uint64_t pos, unsigned nbits) {
    const unsigned shift = static_cast<unsigned>(pos % 8);
    const std::size_t nbytes = (shift + nbits + 7) / 8;
    const std::uint8_t* p = in + pos / 8;
    std::uint64_t window = 0;
    for (std::size_t k = 0; k < nbytes; ++k) window |= std::uint64_t{p[k]} << (8 * k);
    const std::uint64_t mask = nbits == 32 ? 0xFFFFFFFFu : ((std::uint64_t{1} << nbits) - 1);
    return static_cast<std::uint32_t>((window >> shift) & mask);
}

void check_indices(const std::int32_t* indices, std::size_t count, const Levels& levels) {
    const std::size_t d = levels.size();
    for (std::size_t i = 0; i < count; ++i) {
        for (std::size_t j = 0; j < d; ++j) {
            const std::int32_t v = indices[i * d + j];
            if (v < 0 || v >= levels[j]) {
                fail("indices[" + std::to_string(i) + ", " + std::to_string(j) + "] = " + std::to_string(v) +
                         " is outside [0, " + std::to_string(levels[j]) + ") (levels[" + std::to_string(j) + "])",
                     "Note: the indices must come from a model with these levels");
            }
        }
    }
}

// The payload's indices, or why it cannot be (nonzero padding bits, a field >= prod(levels)).
// The levels are valid, `bits` is theirs, and size == ceil(count * bits / 8); `unit` names a field.
std::string decode_payload(const std::uint8_t* data, std::size_t size, const Levels& levels, std::uint32_t bits,
                           std::uint64_t count, std::string_view unit, std::vector<std::int32_t>& out) {
    const std::uint64_t used = count * bits;  // <= 8 * size, so no overflow
    if (used % 8 != 0 && (data[size - 1] >> (used % 8)) != 0) {
        return "padding bits after the last " + std::string(unit) + " are not zero";
    }
    const std::size_t d = levels.size();
    const std::vector<Run> runs = digit_runs(levels);
    // count * D <= count * bits <= 8 * size: the output is at most 32 times the payload.
    out.assign(static_cast<std::size_t>(count) * d, 0);
    detail::Limbs v(0, (bits + 31) / 32);
    auto read_field = [&](std::uint64_t i, detail::Limbs& field) {
        for (std::size_t limb = 0; limb * 32 < bits; ++limb) {
            const unsigned n = static_cast<unsigned>(std::min<std::uint64_t>(32, bits - limb * 32));
            field.set_limb(limb, get_bits(data, i * bits + limb * 32, n));
        }
    };
    for (std::uint64_t i = 0; i < count; ++i) {
        read_field(i, v);
        std::int32_t* row = out.data() + i * d;
        for (const Run& run : runs) {
            std::uint32_t digit = v.divmod(run.product);
            for (std::size_t j = run.begin; j < run.end; ++j) {
                const auto level = static_cast<std::uint32_t>(levels[j]);
                row[j] = static_cast<std::int32_t>(digit % level);
                digit /= level;
            }
        }
        if (!v.is_zero()) {  // what is left is V // prod(levels): nonzero iff V >= prod(levels)
            detail::Limbs value(0, (bits + 31) / 32);
            read_field(i, value);
            return std::string(unit) + " " + std::to_string(i) + " decodes to " + value.to_decimal() +
                   ", outside the codebook [0, " + codebook_size(levels).to_decimal() + ")";
        }
    }
    return "";
}

// The header fields of docs/bitstream.md that sit before the levels, at each version's offsets.
void read_fixed(const std::uint8_t* data, unsigned version, Header& h) {
    std::memcpy(h.model_hash.data(), data + 8, 32);
    h.version = static_cast<std::uint8_t>(version);
    h.image_height = static_cast<std::uint32_t>(get_le(data + 40, 4));
    h.image_width = static_cast<std::uint32_t>(get_le(data + 44, 4));
    const std::uint8_t* p = data + 48;
    if (version == 2) {  // v1 has no layout or coding byte: patches, fixed-rate
        h.layout = data[48];
        h.coding = data[49];
        p += 2;
    } else {
        h.layout = kLayoutPatches;
        h.coding = kCodingFixed;
    }
    h.cell_size = static_cast<std::uint16_t>(get_le(p, 2));
    h.grid_rows = static_cast<std::uint32_t>(get_le(p + 2, 4));
    h.grid_cols = static_cast<std::uint32_t>(get_le(p + 6, 4));
}

// An entropy-coded file is coded with exactly one prior: refuse none, or another (a foreign prior).
void check_prior(const Header& h, const Prior* prior, const std::string& source) {
    const std::string file_prior = to_hex(h.prior_hash).substr(0, 8);
    if (prior == nullptr) {
        fail(source + "file is entropy-coded (coding " + std::to_string(h.coding) + ", prior " + file_prior +
                 "..) and no prior was given",
             kOtherArt);
    }
    if (prior->hash() != h.prior_hash) {
        fail(source + "file was coded with a foreign prior (prior_hash " + file_prior + ".. != this artifact's " +
                 to_hex(prior->hash()).substr(0, 8) + "..)",
             kOtherArt);
    }
    if (prior->levels() != h.levels) {  // the hash covers the prior's levels, not the file's
        fail(source + "file has levels " + levels_text(h.levels) + " but its prior has " +
                 levels_text(prior->levels()),
             kOtherArt);
    }
}

Bitstream read_impl(const std::uint8_t* data, std::size_t size, const std::string& source, const Prior* prior) {
    // Order matters: lengths and the header CRC before anything that trusts a header field, so a
    // flipped bit in D, header_length or payload_length cannot move where the CRCs are looked for.
    auto reject = [&](const std::string& what, const std::string& note = kCorrupt) { fail(source + what, note); };
    const std::size_t head = std::min<std::size_t>(size, 4);
    if (std::memcmp(data, kMagic, head) != 0) {
        reject("not an .fsq file (it starts with " + bytes_repr(data, head) + ", not b'FSQB')",
               "Note: pass a file written by `fsqdeploy compress`");
    }
    auto too_short = [&](std::size_t fixed) {
        reject("file is truncated or too short: " + std::to_string(size) + " bytes, the fixed header alone has " +
               std::to_string(fixed));
    };
    if (size <= 4) too_short(kV1.fixed);  // no version byte yet: v1's, as Python says
    const unsigned version = data[4];
    if (version != 1 && version != 2) {
        reject("unsupported format version " + std::to_string(version) + " (this reader knows 1, 2)",
               "Note: read the file with the fsqdeploy version that wrote it");
    }
    const std::size_t fixed = format_of(version).fixed, extra = format_of(version).extra;
    if (size < fixed) too_short(fixed);
    const unsigned flags = data[5];
    const std::size_t header_length = get_le(data + 6, 2);
    const std::size_t d = get_le(data + fixed - 2, 2);
    if ((flags & ~unsigned{version == 2 ? kFlagGrey : 0u}) != 0) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "%#04x", flags);
        reject(std::string("flags byte is ") + hex + ", expected " +
                   (version == 1 ? "0 (reserved)" : "0 or 0x01 (bit 0: grey; the others reserved)"),
               "Note: the file comes from a newer writer or is damaged");
    }
    if (d == 0 || header_length != extra + 2 * d) {
        reject("header_length " + std::to_string(header_length) + " does not match D = " + std::to_string(d) +
               " levels (expected " + std::to_string(extra) + " + 2*D)");
    }
    if (size < header_length) {
        reject("file is truncated: " + std::to_string(size) + " bytes, shorter than its " +
               std::to_string(header_length) + "-byte header");
    }
    const std::size_t crc_at = header_length - 4;
    if (crc32(data, crc_at) != get_le(data + crc_at, 4)) reject("corrupted header (header CRC32 mismatch)");

    // The header is intact; what follows catches files that were written wrong (or by a newer
    // writer), not damaged. Layout and coding first: a coding this reader does not know has a
    // payload whose length and packing it cannot judge.
    Bitstream out;
    Header& h = out.header;
    read_fixed(data, version, h);
    h.grey = (flags & kFlagGrey) != 0;
    h.levels.resize(d);
    for (std::size_t j = 0; j < d; ++j) h.levels[j] = static_cast<int>(get_le(data + fixed + 2 * j, 2));
    const std::uint8_t* tail = data + fixed + 2 * d;
    const std::uint64_t bits = get_le(tail, 4);
    const std::uint64_t payload_length = get_le(tail + 4, 8);
    if (h.layout > kLayoutGrid) {
        reject(
            "unsupported layout " + std::to_string(h.layout) + " (this reader knows 0, patches, and 1, a latent grid)",
            "Note: read the file with the fsqdeploy version that wrote it");
    }
    if (h.coding > kCodingContext) {
        reject("unsupported coding " + std::to_string(h.coding) + " (this reader knows " + kCodingsText + ")",
               "Note: entropy-coded files need a newer fsqdeploy");
    }
    if (version == 2) std::memcpy(h.prior_hash.data(), tail + 12, kPriorHash);
    const std::string prior_problem = prior_hash_problem(h.coding, h.prior_hash);
    if (!prior_problem.empty()) reject(prior_problem);

    const std::string problem = header_problem(h).first;  // written wrong, not damaged: the note is kCorrupt's
    if (!problem.empty()) reject("invalid header: " + problem);
    const std::uint32_t need = bits_of(h.levels);
    if (bits != need) {
        reject(std::string(format_of(version).bits) + " is " + std::to_string(bits) + " but levels " +
               levels_text(h.levels) + " need " + std::to_string(need));
    }
    const std::string cells = plural(format_of(version).unit);
    const ByteCount expected = packed_bytes(h.num_cells(), need);
    if (h.coding == kCodingFixed && (!expected.fits || payload_length != expected.value)) {
        reject("payload_length is " + std::to_string(payload_length) + ", expected " + expected.text + " for " +
               std::to_string(h.num_cells()) + " " + cells + " of " + std::to_string(bits) + " bits");
    }
    // end + 4 may not fit 64 bits when payload_length is near 2^64: compare by subtraction.
    const std::uint64_t after_header = size - header_length;
    if (payload_length > after_header || after_header - payload_length < 4) {
        detail::Limbs end(payload_length);
        end.mul_add(1, header_length + 4);
        reject("file is truncated: " + std::to_string(size) + " bytes, expected " + end.to_decimal());
    }
    if (after_header - payload_length > 4) {
        reject(std::to_string(after_header - payload_length - 4) + " trailing bytes after the payload CRC",
               "Note: the file was appended to, or several files were joined");
    }
    const std::uint8_t* payload = data + header_length;
    const std::size_t payload_size = static_cast<std::size_t>(payload_length);
    if (crc32(payload, payload_size) != get_le(payload + payload_size, 4)) {
        reject("corrupted payload (payload CRC32 mismatch)");
    }
    std::string problem_in_payload;
    if (h.coding == kCodingRans) {
        check_prior(h, prior, source);
        problem_in_payload = prior->decode(payload, payload_size, h.num_cells(), out.indices);
    } else if (h.coding == kCodingContext) {
        check_prior(h, prior, source);
        problem_in_payload = prior->decode_context(payload, payload_size, h.grid_rows, h.grid_cols, out.indices);
    } else {
        problem_in_payload = decode_payload(payload, payload_size, h.levels, need, h.num_cells(),
                                            format_of(version).unit, out.indices);
    }
    if (!problem_in_payload.empty()) reject(problem_in_payload);
    return out;
}

}  // namespace

// -- public API ---------------------------------------------------------------------------------

std::uint32_t crc32(const std::uint8_t* data, std::size_t size) {
    return static_cast<std::uint32_t>(::crc32_z(::crc32_z(0L, Z_NULL, 0), data, size));
}

ModelHash hash_from_hex(std::string_view hex) {
    ModelHash out{};
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    bool ok = hex.size() == 64;
    for (std::size_t i = 0; ok && i < 32; ++i) {
        const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    }
    if (!ok) {
        std::string shown(hex.substr(0, 80));
        fail("model hash must be a sha256 digest (32 raw bytes or 64 hex characters), got '" + shown + "'",
             "Note: use the hash from the model's manifest");
    }
    return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t size) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < size; ++i) {
        s += digits[data[i] >> 4];
        s += digits[data[i] & 15];
    }
    return s;
}

std::string to_hex(const ModelHash& hash) { return to_hex(hash.data(), hash.size()); }

std::uint32_t bits_per_patch(const Levels& levels) {
    check_levels(levels);
    return bits_of(levels);
}

std::vector<std::uint8_t> pack_indices(const std::int32_t* indices, std::size_t count, const Levels& levels) {
    check_levels(levels);
    check_indices(indices, count, levels);
    const std::uint32_t bits = bits_of(levels);
    const ByteCount nbytes = packed_bytes(count, bits);
    std::vector<std::uint8_t> out(static_cast<std::size_t>(nbytes.value), 0);
    const std::vector<Run> runs = digit_runs(levels);
    const std::size_t d = levels.size();
    detail::Limbs v(0, (bits + 31) / 32);
    for (std::size_t i = 0; i < count; ++i) {
        // V = idx_0 + idx_1*L_0 + ...: Horner from the most significant digit, one run at a time.
        const std::int32_t* row = indices + i * d;
        v.clear();
        for (auto run = runs.rbegin(); run != runs.rend(); ++run) {
            std::uint32_t digit = 0;
            for (std::size_t j = run->end; j-- > run->begin;) {
                digit = digit * static_cast<std::uint32_t>(levels[j]) + static_cast<std::uint32_t>(row[j]);
            }
            v.mul_add(run->product, digit);
        }
        // Field i occupies stream bits [i*b, (i+1)*b), bit j of V at stream bit i*b + j.
        const std::uint64_t base = std::uint64_t{i} * bits;
        for (std::size_t limb = 0; limb * 32 < bits; ++limb) {
            const unsigned n = static_cast<unsigned>(std::min<std::uint64_t>(32, bits - limb * 32));
            put_bits(out.data(), base + limb * 32, v.limb(limb), n);
        }
    }
    return out;
}

namespace {

// pack_indices' checks of a flat vector: valid levels, whole rows of D, every index in range.
void check_index_rows(const std::vector<std::int32_t>& indices, const Levels& levels) {
    check_levels(levels);
    const std::size_t d = levels.size();
    if (indices.size() % d != 0) {
        fail("indices have " + std::to_string(indices.size()) + " values, not a multiple of D = " + std::to_string(d) +
                 " (a row per patch, a column per level)",
             "Note: pass row-major [N, " + std::to_string(d) + "] indices");
    }
    check_indices(indices.data(), indices.size() / d, levels);
}

}  // namespace

std::vector<std::uint8_t> pack_indices(const std::vector<std::int32_t>& indices, const Levels& levels) {
    check_index_rows(indices, levels);
    return pack_indices(indices.data(), indices.size() / levels.size(), levels);
}

std::vector<std::int32_t> unpack_indices(const std::uint8_t* data, std::size_t size, const Levels& levels,
                                         std::uint64_t count, std::string_view unit) {
    check_levels(levels);
    const std::uint32_t bits = bits_of(levels);
    const ByteCount expected = packed_bytes(count, bits);
    if (!expected.fits || expected.value != size) {
        fail("payload has " + std::to_string(size) + " bytes, expected " + expected.text + " for " +
                 std::to_string(count) + " " + plural(unit) + " of " + std::to_string(bits) + " bits",
             kCorrupt);
    }
    std::vector<std::int32_t> out;
    const std::string what = decode_payload(data, size, levels, bits, count, unit, out);
    if (!what.empty()) fail(what, kCorrupt);
    return out;
}

namespace {

// FsqHeader._sized: the grid computed from the sizes, every field checked in FsqHeader's order.
Header sized(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
             std::uint64_t cell_size, Levels levels, std::uint8_t version, std::uint8_t layout) {
    for (const Problem& p : {format_problem(version, layout, kCodingFixed), header_levels_problem(levels, version)}) {
        if (!p.first.empty()) fail(p.first, p.second);
    }
    const SizeField sizes[] = {{"image_height", image_height, 0xFFFFFFFFu},
                               {"image_width", image_width, 0xFFFFFFFFu},
                               {format_of(version).cell_size, cell_size, 0xFFFFu}};
    for (const SizeField& size : sizes) {
        const auto [what, note] = size_problem(size, version);
        if (!what.empty()) fail(what, note);
    }
    Header h;
    h.model_hash = model_hash;
    h.version = version;
    h.layout = layout;
    h.image_height = static_cast<std::uint32_t>(image_height);
    h.image_width = static_cast<std::uint32_t>(image_width);
    h.cell_size = static_cast<std::uint16_t>(cell_size);
    h.grid_rows = static_cast<std::uint32_t>(ceil_div(image_height, cell_size));
    h.grid_cols = static_cast<std::uint32_t>(ceil_div(image_width, cell_size));
    h.levels = std::move(levels);
    h.check();
    return h;
}

}  // namespace

Header Header::for_patches(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                           std::uint64_t patch_size, Levels levels) {
    return sized(model_hash, image_height, image_width, patch_size, std::move(levels), 2, kLayoutPatches);
}

Header Header::for_grid(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                        std::uint64_t downsample, Levels levels) {
    return sized(model_hash, image_height, image_width, downsample, std::move(levels), 2, kLayoutGrid);
}

Header Header::for_image(const ModelHash& model_hash, std::uint64_t image_height, std::uint64_t image_width,
                         std::uint64_t patch_size, Levels levels) {
    return sized(model_hash, image_height, image_width, patch_size, std::move(levels), 1, kLayoutPatches);
}

std::size_t Header::header_length() const {
    return format_of(version).extra + 2 * levels.size();
}

void Header::check() const {
    const auto [what, note] = header_problem(*this);
    if (!what.empty()) fail(what, note);
}

bool Header::operator==(const Header& o) const {
    return model_hash == o.model_hash && image_height == o.image_height && image_width == o.image_width &&
           cell_size == o.cell_size && grid_rows == o.grid_rows && grid_cols == o.grid_cols && levels == o.levels &&
           version == o.version && layout == o.layout && coding == o.coding && prior_hash == o.prior_hash &&
           grey == o.grey;
}

Header Header::with_prior(const Prior& prior) const {
    Header h = *this;
    h.coding = prior.coding();
    h.prior_hash = prior.hash();
    h.check();
    return h;
}

std::vector<std::uint8_t> Bitstream::write(const Prior* prior) const {
    header.check();
    std::vector<std::uint8_t> payload;
    const std::size_t rows = indices.size() / header.levels.size();
    if (header.coding == kCodingFixed) {
        payload = pack_indices(indices, header.levels);
    } else {
        check_prior(header, prior, "");
        check_index_rows(indices, header.levels);
        if (header.coding == kCodingRans) {
            payload = prior->encode(indices.data(), rows);
        } else if (rows == header.num_cells()) {  // coding 2 needs the grid's shape: a wrong count is refused below
            payload = prior->encode_context(indices.data(), header.grid_rows, header.grid_cols);
        }
    }
    if (rows != header.num_cells()) {
        fail("indices have " + std::to_string(rows) + " rows but the " + std::to_string(header.grid_rows) + "x" +
                 std::to_string(header.grid_cols) + " grid needs " + std::to_string(header.num_cells()),
             header.spatial() ? "Note: encode every position of the latent grid, row by row"
                              : "Note: encode every tile of the padded image, row by row");
    }
    std::vector<std::uint8_t> out;
    out.reserve(header.header_length() + payload.size() + 4);
    out.insert(out.end(), kMagic, kMagic + 4);
    put_le(out, header.version, 1);
    put_le(out, header.grey ? kFlagGrey : 0, 1);  // flags
    put_le(out, header.header_length(), 2);
    out.insert(out.end(), header.model_hash.begin(), header.model_hash.end());
    put_le(out, header.image_height, 4);
    put_le(out, header.image_width, 4);
    if (header.version == 2) {
        put_le(out, header.layout, 1);
        put_le(out, header.coding, 1);
    }
    put_le(out, header.cell_size, 2);
    put_le(out, header.grid_rows, 4);
    put_le(out, header.grid_cols, 4);
    put_le(out, header.levels.size(), 2);
    for (int level : header.levels) put_le(out, static_cast<std::uint64_t>(level), 2);
    put_le(out, bits_of(header.levels), 4);
    put_le(out, payload.size(), 8);
    if (header.version == 2) out.insert(out.end(), header.prior_hash.begin(), header.prior_hash.end());
    put_le(out, crc32(out.data(), out.size()), 4);
    out.insert(out.end(), payload.begin(), payload.end());
    put_le(out, crc32(payload.data(), payload.size()), 4);
    return out;
}

Bitstream Bitstream::read(const std::uint8_t* data, std::size_t size, const Prior* prior) {
    static const std::uint8_t empty = 0;
    return read_impl(size ? data : &empty, size, "", prior);
}

void Bitstream::save(const std::filesystem::path& path, const Prior* prior) const {
    const std::vector<std::uint8_t> data = write(prior);
    auto cannot = [&](const std::string& reason) {
        fail("cannot write '" + path.string() + "': " + reason,
             "Note: check that the folder is writable and the disk is not full");
    };
    // A temp file beside the target, renamed over it only once it is complete.
    std::random_device entropy;
    std::filesystem::path tmp = path;
    tmp += ".tmp" + std::to_string(entropy());
    std::FILE* f = std::fopen(tmp.string().c_str(), "wb");
    if (!f) cannot(std::strerror(errno));
    const bool written = std::fwrite(data.data(), 1, data.size(), f) == data.size();
    const int saved_errno = errno;
    const bool closed = std::fclose(f) == 0;
    if (!written || !closed) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        cannot(std::strerror(written ? errno : saved_errno));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        cannot(ec.message());
    }
}

Bitstream Bitstream::load(const std::filesystem::path& path, const Prior* prior) {
    std::vector<std::uint8_t> data;
    std::FILE* f = std::fopen(path.string().c_str(), "rb");
    bool ok = f != nullptr;
    std::uint8_t buffer[1 << 16];
    for (std::size_t n = sizeof buffer; ok && n == sizeof buffer;) {
        n = std::fread(buffer, 1, sizeof buffer, f);
        data.insert(data.end(), buffer, buffer + n);
        ok = !std::ferror(f);
    }
    const int saved_errno = errno;
    if (f) std::fclose(f);
    if (!ok) {
        fail("cannot read '" + path.string() + "': " + std::strerror(saved_errno),
             "Note: pass an .fsq file written by `fsqdeploy compress`");
    }
    static const std::uint8_t empty = 0;
    return read_impl(data.empty() ? &empty : data.data(), data.size(), "'" + path.string() + "': ", prior);
}

std::vector<std::int32_t> grid_to_cells(const std::vector<std::int32_t>& grid, std::size_t d, std::size_t rows,
                                        std::size_t cols) {
    // size == d * rows * cols, by division: the product of crafted sizes could overflow.
    const std::size_t n = grid.size();
    const bool fits =
        d != 0 && (rows == 0 || cols == 0 ? n == 0 : n % d == 0 && n / d % rows == 0 && n / d / rows == cols);
    if (!fits) {
        fail("a latent grid of " + std::to_string(grid.size()) + " indices is not [1, " + std::to_string(d) + ", " +
                 std::to_string(rows) + ", " + std::to_string(cols) + "]",
             "Note: pass one image's indices, channels first");
    }
    std::vector<std::int32_t> cells(grid.size());
    const std::size_t plane = rows * cols;
    for (std::size_t k = 0; k < d; ++k) {
        for (std::size_t i = 0; i < plane; ++i) cells[i * d + k] = grid[k * plane + i];
    }
    return cells;
}

std::vector<std::int32_t> cells_to_grid(const Header& header, const std::vector<std::int32_t>& cells) {
    const std::size_t d = header.levels.size();
    const std::uint64_t plane = header.num_cells();
    if (d == 0 || cells.size() % d != 0 || cells.size() / d != plane) {
        fail("indices have " + std::to_string(cells.size()) + " values but the " + std::to_string(header.grid_rows) +
                 "x" + std::to_string(header.grid_cols) + " grid needs [" + std::to_string(plane) + ", " +
                 std::to_string(d) + "]",
             "Note: pass the indices Bitstream::read returned with the header");
    }
    std::vector<std::int32_t> grid(cells.size());
    for (std::size_t k = 0; k < d; ++k) {
        for (std::size_t i = 0; i < plane; ++i) grid[k * plane + i] = cells[i * d + k];
    }
    return grid;
}

void check_model(const Header& header, const ModelHash& model_hash, const Levels& levels) {
    check_levels(levels);
    if (header.model_hash != model_hash) {
        fail("file was made by another model (hash " + to_hex(header.model_hash).substr(0, 8) +
                 ".. != " + to_hex(model_hash).substr(0, 8) + "..)",
             "Note: decompress with the model that compressed it");
    }
    if (header.levels != levels) {
        fail("file was made with levels " + levels_text(header.levels) + " but the model has " + levels_text(levels),
             "Note: decompress with the model that compressed it");
    }
}

}  // namespace fsq
