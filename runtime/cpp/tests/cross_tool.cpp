// fsq-cross: the C++ side of tests/cross_check.py (Python <-> C++ on files made during the run),
// and a maker of fixtures for the other ctest entries.
//
//   fsq-cross read DIR OUT.json              every DIR/*.fsq: header, or error; indices as raw int32 beside OUT
//   fsq-cross write SPECS.json OUTDIR RESULT.json   each spec {name, model_hash, image_height, image_width,
//                                            patch_size, levels, indices_file (raw int32 [N, D])} -> OUTDIR/name
//   fsq-cross patches IMAGE.u8 H W P OUT.f32     to_patches of a raw interleaved RGB image
//   fsq-cross stitch PATCHES.f32 R C H W P OUT.u8  from_patches
//   fsq-cross manifest ART OUT.json          Manifest::load (verified) summary
//   fsq-cross make-art ART                   a valid artifact directory with dummy graphs
//   fsq-cross seeds DIR                      seed corpus for the fuzzer (golden file, a few valid files)
//
// fsq::Error -> its message on stderr, exit 2.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "helpers.hpp"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::vector<char> read_all(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw fsq::Error("fsq-cross: cannot read '" + path.string() + "'");
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

template <typename T>
std::vector<T> read_raw(const fs::path& path) {
    const std::vector<char> bytes = read_all(path);
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
}

template <typename T>
void write_raw(const fs::path& path, const std::vector<T>& values) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
}

json read_json(const fs::path& path) {
    const std::vector<char> text = read_all(path);
    return json::parse(text.begin(), text.end());
}

void write_json(const fs::path& path, const json& j) {
    std::ofstream out(path);
    out << j.dump(1) << "\n";
}

int run(const std::vector<std::string>& a) {
    const std::string cmd = a.empty() ? "" : a[0];
    if (cmd == "read" && a.size() == 3) {
        // Every *.fsq in the directory: its header and indices (raw int32 beside OUT), or its error.
        std::vector<fs::path> paths;
        for (const auto& entry : fs::directory_iterator(a[1])) {
            if (entry.path().extension() == ".fsq") paths.push_back(entry.path());
        }
        std::sort(paths.begin(), paths.end());
        json results = json::array();
        for (const fs::path& path : paths) {
            try {
                const fsq::Bitstream b = fsq::Bitstream::load(path);
                const fsq::Header& h = b.header;
                fs::path indices = fs::path(a[2]).parent_path() / path.filename();
                indices.replace_extension(".cpp.i32");
                write_raw(indices, b.indices);
                results.push_back({{"file", path.string()},
                                   {"model_hash", fsq::to_hex(h.model_hash)},
                                   {"image_height", h.image_height},
                                   {"image_width", h.image_width},
                                   {"patch_size", h.patch_size},
                                   {"grid_rows", h.grid_rows},
                                   {"grid_cols", h.grid_cols},
                                   {"levels", h.levels},
                                   {"indices_file", indices.string()}});
            } catch (const fsq::Error& e) {
                results.push_back({{"file", path.string()}, {"error", e.what()}});
            }
        }
        write_json(a[2], results);
        return 0;
    }
    if (cmd == "write" && a.size() == 4) {
        // SPECS: a list of {name, model_hash, image_height, image_width, patch_size, levels,
        // indices_file}; each is written to OUTDIR/name, or its error reported in RESULT.
        json results = json::array();
        for (const json& spec : read_json(a[1])) {
            const std::string name = spec.at("name").get<std::string>();
            try {
                fsq::Bitstream b;
                b.header = fsq::Header::for_image(
                    fsq::hash_from_hex(spec.at("model_hash").get<std::string>()),
                    spec.at("image_height").get<std::uint64_t>(), spec.at("image_width").get<std::uint64_t>(),
                    spec.at("patch_size").get<std::uint64_t>(), spec.at("levels").get<fsq::Levels>());
                b.indices = read_raw<std::int32_t>(spec.at("indices_file").get<std::string>());
                b.save(fs::path(a[2]) / name);
                results.push_back({{"name", name}});
            } catch (const fsq::Error& e) {
                results.push_back({{"name", name}, {"error", e.what()}});
            }
        }
        write_json(a[3], results);
        return 0;
    }
    if (cmd == "patches" && a.size() == 6) {
        fsq::Image image{static_cast<std::uint32_t>(std::stoul(a[2])), static_cast<std::uint32_t>(std::stoul(a[3])),
                         read_raw<std::uint8_t>(a[1])};
        write_raw(a[5], fsq::to_patches(image, static_cast<std::uint32_t>(std::stoul(a[4]))));
        return 0;
    }
    if (cmd == "stitch" && a.size() == 8) {
        const std::vector<float> patches = read_raw<float>(a[1]);
        auto u = [&](std::size_t i) { return static_cast<std::uint32_t>(std::stoul(a[i])); };
        write_raw(a[7], fsq::from_patches(patches.data(), u(2), u(3), u(4), u(5), u(6)).rgb);
        return 0;
    }
    if (cmd == "manifest" && a.size() == 3) {
        const fsq::Manifest m = fsq::Manifest::load(a[1]);
        json files = json::object();
        for (const auto& [name, entry] : m.files) files[name] = {{"sha256", entry.sha256}, {"size", entry.size}};
        write_json(a[2], {{"model_id", m.model_id},
                          {"levels", m.levels},
                          {"latent_dim", m.latent_dim},
                          {"code_width", m.code_width},
                          {"image_size", m.image_size},
                          {"stages", m.stages},
                          {"temperature", m.temperature},
                          {"opset", m.opset},
                          {"files", files},
                          {"engines", m.engine_files()}});
        return 0;
    }
    if (cmd == "make-art" && a.size() == 2) {
        fsq::test::make_art(a[1]);
        return 0;
    }
    if (cmd == "seeds" && a.size() == 2) {
        fs::create_directories(a[1]);
        fsq::test::write_bytes(fs::path(a[1]) / "golden.fsq", fsq::test::from_hex(fsq::test::kGoldenHex));
        const std::vector<fsq::Levels> levels = {{8, 5, 5, 5}, {2}, {65535, 3}, fsq::Levels(16, 8), {7, 7, 7, 7, 7}};
        std::uint32_t seed = 1;
        for (std::size_t k = 0; k < levels.size(); ++k) {
            fsq::Bitstream b;
            b.header = fsq::Header::for_image(fsq::test::golden_hash(), 3 + k, 5 + 2 * k, 2 + k, levels[k]);
            for (std::uint64_t i = 0; i < b.header.num_patches() * levels[k].size(); ++i) {
                seed = seed * 1103515245u + 12345u;
                b.indices.push_back(static_cast<std::int32_t>(
                    (seed >> 8) % static_cast<std::uint32_t>(levels[k][i % levels[k].size()])));
            }
            b.save(fs::path(a[1]) / ("valid" + std::to_string(k) + ".fsq"));
        }
        return 0;
    }
    std::cerr << "usage: fsq-cross read|write|patches|stitch|manifest|make-art|seeds ... (see cross_tool.cpp)\n";
    return 64;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(std::vector<std::string>(argv + 1, argv + argc));
    } catch (const fsq::Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
