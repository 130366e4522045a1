// Binary PPM (P6) and PGM (P5, grey) in and out: the image formats that need no library, so the
// examples stay dependency-free. Convert with any tool, e.g.
// `python -c "from PIL import Image; Image.open('a.png').save('a.ppm')"` (a grey PNG saves as P5).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fsq/codec.hpp>
#include <fsq/error.hpp>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace ppm {

inline fsq::Image read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw fsq::Error("image: cannot read '" + path + "'. Note: pass a binary PPM (P6) or PGM (P5) file");
    const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t pos = 0;
    auto bad = [&](const std::string& what) -> fsq::Error {
        return fsq::Error("image: '" + path + "' " + what +
                          ". Note: pass an 8-bit binary PPM (P6) or PGM (P5) file");
    };
    // "P6" (or "P5": one grey sample per pixel) <ws> width <ws> height <ws> maxval <one ws> pixels;
    // '#' starts a comment in the header.
    auto number = [&]() -> std::uint64_t {
        while (pos < data.size() && (std::isspace(data[pos]) || data[pos] == '#')) {
            if (data[pos] == '#') {
                while (pos < data.size() && data[pos] != '\n') ++pos;
            } else {
                ++pos;
            }
        }
        std::uint64_t v = 0;
        std::size_t digits = 0;
        for (; pos < data.size() && std::isdigit(data[pos]); ++pos, ++digits) {
            v = v * 10 + static_cast<std::uint64_t>(data[pos] - '0');
            if (v > 0xFFFFFFFFu) throw bad("has a huge size");
        }
        if (digits == 0) throw bad("has a malformed header");
        return v;
    };
    if (data.size() < 2 || data[0] != 'P' || (data[1] != '6' && data[1] != '5')) {
        throw bad("is not a binary PPM or PGM (no P6 or P5 magic)");
    }
    const std::uint64_t samples = data[1] == '6' ? 3 : 1;
    pos = 2;
    const std::uint64_t width = number(), height = number(), maxval = number();
    if (width == 0 || height == 0) throw bad("has an empty size");
    if (maxval == 0 || maxval > 255) throw bad("is not 8-bit (maxval " + std::to_string(maxval) + ")");
    if (pos >= data.size() || !std::isspace(data[pos])) throw bad("has a malformed header");
    ++pos;
    if ((data.size() - pos) / samples / width < height) throw bad("is truncated");
    const std::uint64_t bytes = width * height * samples;  // no overflow: at most the file's size
    fsq::Image image;
    image.height = static_cast<std::uint32_t>(height);
    image.width = static_cast<std::uint32_t>(width);
    const auto first = data.begin() + static_cast<std::ptrdiff_t>(pos);
    if (samples == 3) {
        image.rgb.assign(first, first + static_cast<std::ptrdiff_t>(bytes));
    } else {  // grey: each sample in all three channels, which the codec then marks grey
        image.rgb.reserve(bytes * 3);
        const auto last = first + static_cast<std::ptrdiff_t>(bytes);
        for (auto it = first; it != last; ++it) image.rgb.insert(image.rgb.end(), 3, *it);
    }
    if (maxval != 255) {
        const auto top = static_cast<unsigned>(maxval);
        for (std::uint8_t& v : image.rgb) {
            const unsigned value = v < top ? v : top;  // a sample above maxval is malformed: clamp it
            v = static_cast<std::uint8_t>((value * 255u + top / 2) / top);
        }
    }
    return image;
}

/// P6, or P5 when `grey` (a grey file's decode, whose channels are equal), written to a temp file
/// beside `path` and renamed over it once complete: a crash leaves no half-written image.
inline void write(const std::string& path, const fsq::Image& image, bool grey = false) {
    std::random_device entropy;
    const std::string tmp = path + ".tmp" + std::to_string(entropy());
    {
        std::ofstream out(tmp, std::ios::binary);
        out << (grey ? "P5\n" : "P6\n") << image.width << " " << image.height << "\n255\n";
        if (grey) {
            std::vector<char> plane(image.rgb.size() / 3);
            for (std::size_t i = 0; i < plane.size(); ++i) plane[i] = static_cast<char>(image.rgb[3 * i]);
            out.write(plane.data(), static_cast<std::streamsize>(plane.size()));
        } else {
            out.write(reinterpret_cast<const char*>(image.rgb.data()), static_cast<std::streamsize>(image.rgb.size()));
        }
        out.close();
        if (!out) {
            std::error_code ignored;
            std::filesystem::remove(tmp, ignored);
            throw fsq::Error("image: cannot write '" + path + "'. Note: check that the folder is writable");
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        throw fsq::Error("image: cannot write '" + path + "' (" + ec.message() + "). Note: check that the folder is "
                         "writable");
    }
}

}  // namespace ppm
