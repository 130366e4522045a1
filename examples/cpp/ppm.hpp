// Binary PPM (P6) in and out: the one image format that needs no library, so the examples stay
// dependency-free. Convert with any tool, e.g. `python -c "from PIL import Image; Image.open('a.png').save('a.ppm')"`.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fsq/codec.hpp>
#include <fsq/error.hpp>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace ppm {

inline fsq::Image read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw fsq::Error("image: cannot read '" + path + "'. Note: pass a binary PPM (P6) file");
    const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t pos = 0;
    auto bad = [&](const std::string& what) -> fsq::Error {
        return fsq::Error("image: '" + path + "' " + what + ". Note: pass an 8-bit binary PPM (P6) file");
    };
    // "P6" <ws> width <ws> height <ws> maxval <one ws> pixels; '#' starts a comment in the header.
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
    if (data.size() < 2 || data[0] != 'P' || data[1] != '6') throw bad("is not a binary PPM (no P6 magic)");
    pos = 2;
    const std::uint64_t width = number(), height = number(), maxval = number();
    if (width == 0 || height == 0) throw bad("has an empty size");
    if (maxval == 0 || maxval > 255) throw bad("is not 8-bit (maxval " + std::to_string(maxval) + ")");
    if (pos >= data.size() || !std::isspace(data[pos])) throw bad("has a malformed header");
    ++pos;
    if ((data.size() - pos) / 3 / width < height) throw bad("is truncated");
    const std::uint64_t bytes = width * height * 3;  // no overflow: at most the file's size
    fsq::Image image;
    image.height = static_cast<std::uint32_t>(height);
    image.width = static_cast<std::uint32_t>(width);
    image.rgb.assign(data.begin() + static_cast<std::ptrdiff_t>(pos),
                     data.begin() + static_cast<std::ptrdiff_t>(pos + bytes));
    if (maxval != 255) {
        const auto top = static_cast<unsigned>(maxval);
        for (std::uint8_t& v : image.rgb) {
            const unsigned value = v < top ? v : top;  // a sample above maxval is malformed: clamp it
            v = static_cast<std::uint8_t>((value * 255u + top / 2) / top);
        }
    }
    return image;
}

inline void write(const std::string& path, const fsq::Image& image) {
    std::ofstream out(path, std::ios::binary);
    out << "P6\n" << image.width << " " << image.height << "\n255\n";
    out.write(reinterpret_cast<const char*>(image.rgb.data()), static_cast<std::streamsize>(image.rgb.size()));
    if (!out) throw fsq::Error("image: cannot write '" + path + "'. Note: check that the folder is writable");
}

}  // namespace ppm
