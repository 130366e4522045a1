// fsq-cpp: inspect artifacts and .fsq files, compress and decompress images with the C++ runtime.
//
//   fsq-cpp info ART                  the manifest, every file's sha256 checked, engines, backends
//   fsq-cpp info FILE.fsq [ART]       a bitstream's header (the whole file is checked; an entropy-coded
//                                     file is read with ART's prior, ART/prior.json)
//   fsq-cpp encode ART IMAGE.ppm OUT.fsq [--backend auto|tensorrt|onnxruntime] [--precision fp16]
//   fsq-cpp decode ART IN.fsq OUT.ppm    [--backend ...] [--precision ...] [--region X,Y,W,H]
//   fsq-cpp tokens FILE.fsq [ART]     a bitstream's token grid (docs/tokens.md): "rows x cols", then a
//                                     line of tokens per row
// Images are binary PPM (P6) or, grey, PGM (P5); a grey file decodes to P5 (examples/cpp/ppm.hpp).
//
// Errors are one line on stderr and exit code 2, as with the Python CLI.
#include <cstdio>
#include <filesystem>
#include <fsq/fsq.hpp>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "ppm.hpp"

namespace {

const char* const kUsage =
    "usage: fsq-cpp info ART|FILE.fsq [ART]\n"
    "       fsq-cpp encode ART IMAGE.ppm OUT.fsq [--backend auto|tensorrt|onnxruntime] [--precision P] [--tile N]\n"
    "       fsq-cpp decode ART IN.fsq OUT.ppm [--backend auto|tensorrt|onnxruntime] [--precision P] [--tile N]\n"
    "                      [--region X,Y,W,H]\n"
    "       fsq-cpp tokens FILE.fsq [ART]\n";

std::string join(const std::vector<std::string>& items) {
    std::string s;
    for (const auto& item : items) s += (s.empty() ? "" : ", ") + item;
    return s.empty() ? "none" : s;
}

std::string levels_text(const fsq::Levels& levels) {
    std::string s = "[";
    for (std::size_t i = 0; i < levels.size() && i < 16; ++i) s += (i ? ", " : "") + std::to_string(levels[i]);
    return s + (levels.size() > 16 ? ", ...]" : "]");
}

void info_artifact(const std::filesystem::path& art) {
    const fsq::Manifest m = fsq::Manifest::load(art);  // refuses any file that does not match
    std::cout << "artifact   " << art.string() << "\n"
              << "model_id   " << m.model_id << "\n"
              << "levels     " << levels_text(m.levels) << " (W=" << m.code_width << ": " << m.stages
              << " stage(s) of D=" << m.latent_dim << ")\n"
              << "bitstream  " << fsq::bits_per_patch(m.levels) << " bits per "
              << (m.spatial() ? std::to_string(m.downsample) + "x" + std::to_string(m.downsample) + " latent cell (" +
                                    m.arch + ")"
                              : std::to_string(m.image_size) + "x" + std::to_string(m.image_size) + " patch")
              << "\n";
    const char* label = "files      ";
    for (const auto& [name, entry] : m.files) {
        std::cout << label << name << "  " << entry.size << " bytes  sha256 ok\n";
        label = "           ";
    }
    for (const std::string& engine : m.engine_files()) {
        try {
            const fsq::EngineSidecar s = fsq::EngineSidecar::load(m.file(engine));
            std::cout << "engine     " << engine << ": TensorRT " << s.tensorrt_version << ", " << s.gpu_name << " (sm "
                      << s.compute_capability << "), " << s.precision << "\n";
        } catch (const fsq::Error& e) {
            std::cout << "engine     " << engine << ": " << e.what() << "\n";
        }
    }
    std::cout << "backends   compiled: " << join(fsq::compiled_backends()) << "\n";
}

const char* coding_text(std::uint8_t coding) {
    return coding == fsq::kCodingFixed ? "fixed-rate" : coding == fsq::kCodingRans ? "rANS" : "rANS, context tables";
}

// The whole file read, every check of docs/bitstream.md; an entropy-coded one with ART's prior (none: "").
fsq::Bitstream load_bitstream(const std::filesystem::path& path, const std::filesystem::path& art) {
    std::optional<fsq::Prior> prior;
    if (!art.empty()) prior = fsq::Prior::load(art / fsq::kPriorFile);
    return fsq::Bitstream::load(path, prior ? &*prior : nullptr);
}

void info_bitstream(const std::filesystem::path& path, const std::filesystem::path& art) {
    const fsq::Bitstream b = load_bitstream(path, art);
    const fsq::Header& h = b.header;
    const std::uintmax_t size = std::filesystem::file_size(path);
    const std::uint32_t bits = fsq::bits_per_patch(h.levels);
    const char* cell = h.spatial() ? "cell" : "patch";
    std::cout << "file       " << path.string() << " (" << size << " bytes, version "
              << unsigned{h.version} << ")\n"
              << "image      " << h.image_height << "x" << h.image_width << (h.grey ? " grey" : "") << " pixels, "
              << h.cell_size
              << (h.spatial() ? "-pixel latent cells" : "-pixel patches") << ", grid " << h.grid_rows << "x"
              << h.grid_cols << " (" << h.num_cells() << (h.spatial() ? " cells)\n" : " patches)\n") << "levels     "
              << levels_text(h.levels) << " (D=" << h.levels.size() << ", " << bits << " bits per " << cell << ")\n"
              << "model      " << fsq::to_hex(h.model_hash) << "\n";
    if (h.version == 2) {
        std::cout << "coding     " << unsigned{h.coding} << " (" << coding_text(h.coding) << ")";
        if (h.coding != fsq::kCodingFixed) std::cout << ", prior " << fsq::to_hex(h.prior_hash).substr(0, 8) << "..";
        std::cout << "\n";
    }
    std::cout << "payload    " << size - h.header_length() - 4 << " bytes, CRCs ok\n";
}

void print_tokens(const std::filesystem::path& path, const std::filesystem::path& art) {
    const fsq::Bitstream b = load_bitstream(path, art);
    const std::vector<std::int64_t> tokens = fsq::indices_to_tokens(b.indices, b.header.levels);
    const std::size_t cols = b.header.grid_cols;
    std::cout << b.header.grid_rows << " x " << cols << "\n";
    for (std::size_t i = 0; i < tokens.size(); ++i) std::cout << tokens[i] << ((i + 1) % cols ? " " : "\n");
}

fsq::BackendOptions backend_options(const std::vector<std::string>& args, std::size_t from) {
    fsq::BackendOptions options;
    for (std::size_t i = from; i < args.size(); i += 2) {
        if (i + 1 >= args.size()) throw fsq::Error("fsq-cpp: " + args[i] + " needs a value");
        const std::string& value = args[i + 1];
        if (args[i] == "--backend") {
            if (value == "tensorrt") {
                options.kind = fsq::BackendOptions::Kind::TensorRT;
            } else if (value == "onnxruntime") {
                options.kind = fsq::BackendOptions::Kind::OnnxRuntime;
            } else if (value != "auto") {
                throw fsq::Error("fsq-cpp: unknown backend '" + value + "'. Note: use auto, tensorrt or onnxruntime");
            }
        } else if (args[i] == "--precision") {
            options.precision = value;
        } else if (args[i] == "--tile" || args[i] == "--region") {  // read by tile_pixels, region
        } else {
            throw fsq::Error("fsq-cpp: unknown option '" + args[i] + "'");
        }
    }
    return options;
}

// --tile N: a conv codec's tiles, N x N pixels (the Python CLI's --tile); 0 when not given.
std::uint32_t tile_pixels(const std::vector<std::string>& args, std::size_t from) {
    for (std::size_t i = from; i + 1 < args.size(); i += 2) {
        if (args[i] != "--tile") continue;
        const std::string& v = args[i + 1];
        if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
            throw fsq::Error("fsq-cpp: --tile '" + v + "' is not a whole number of pixels");
        }
        return static_cast<std::uint32_t>(std::stoul(v));
    }
    return 0;
}

// --region X,Y,W,H: decode only that part (the Python CLI's --region); nullopt when not given.
std::optional<fsq::Region> region(const std::vector<std::string>& args, std::size_t from) {
    for (std::size_t i = from; i + 1 < args.size(); i += 2) {
        if (args[i] != "--region") continue;
        const std::string& v = args[i + 1];
        std::vector<std::string> parts;
        for (std::size_t at = 0;;) {
            const std::size_t comma = v.find(',', at);
            parts.push_back(v.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
            if (comma == std::string::npos) break;
            at = comma + 1;
        }
        bool whole = parts.size() == 4;
        for (const std::string& part : parts)
            whole =
                whole && !part.empty() && part.size() <= 9 && part.find_first_not_of("0123456789") == std::string::npos;
        if (!whole || std::stoul(parts[2]) < 1 || std::stoul(parts[3]) < 1) {
            throw fsq::Error("fsq-cpp: --region '" + v +
                             "' is not X,Y,W,H: four whole numbers of pixels, left, top, "
                             "width and height (width and height at least 1)");
        }
        const auto n = [&](int k) { return static_cast<std::uint32_t>(std::stoul(parts[k])); };
        return fsq::Region{n(0), n(1), n(2), n(3)};
    }
    return std::nullopt;
}

int run(const std::vector<std::string>& args) {
    if ((args.size() == 2 || args.size() == 3) && args[0] == "info") {
        if (std::filesystem::is_directory(args[1]) && args.size() == 2) {
            info_artifact(args[1]);
        } else {
            info_bitstream(args[1], args.size() == 3 ? std::filesystem::path(args[2]) : std::filesystem::path());
        }
        return 0;
    }
    if ((args.size() == 2 || args.size() == 3) && args[0] == "tokens") {
        print_tokens(args[1], args.size() == 3 ? std::filesystem::path(args[2]) : std::filesystem::path());
        return 0;
    }
    if (args.size() >= 4 && args[0] == "encode") {
        fsq::Codec codec = fsq::Codec::open(args[1], backend_options(args, 4));
        if (const std::uint32_t tile = tile_pixels(args, 4)) codec.set_tiling(fsq::kDefaultMaxPixels, tile);
        const fsq::Image image = ppm::read(args[2]);
        const fsq::Bitstream b = codec.compress(image);
        b.save(args[3], codec.prior());  // a conv artifact's file is entropy-coded over its prior
        std::cout << args[3] << ": " << b.header.num_cells() << (b.header.spatial() ? " latent cells" : " patches")
                  << ", coding " << int{b.header.coding} << ", via " << codec.backend().name() << "\n";
        return 0;
    }
    if (args.size() >= 4 && args[0] == "decode") {
        fsq::Codec codec = fsq::Codec::open(args[1], backend_options(args, 4));
        if (const std::uint32_t tile = tile_pixels(args, 4)) codec.set_tiling(fsq::kDefaultMaxPixels, tile);
        const fsq::Bitstream b = fsq::Bitstream::load(args[2], codec.prior());
        const std::optional<fsq::Region> part = region(args, 4);
        const fsq::Image image = part ? codec.decompress(b, *part) : codec.decompress(b);
        ppm::write(args[3], image, b.header.grey);  // a grey file as a one-channel PGM
        std::cout << args[3] << ": " << image.height << "x" << image.width << " via " << codec.backend().name() << "\n";
        return 0;
    }
    std::fputs(kUsage, stderr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(std::vector<std::string>(argv + 1, argv + argc));
    } catch (const fsq::Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    } catch (const std::filesystem::filesystem_error& e) {
        std::fprintf(stderr, "fsq-cpp: %s\n", e.what());
        return 2;
    }
}
