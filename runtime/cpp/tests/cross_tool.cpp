// fsq-cross: the C++ side of tests/cross_check.py (Python <-> C++ on files made during the run),
// and a maker of fixtures for the other ctest entries.
//
//   fsq-cross read DIR OUT.json              every DIR/*.fsq: header, or error; indices as raw int32 beside OUT
//                                            (and a latent grid's cells_to_grid [1, D, rows, cols] too); X.fsq
//                                            is read with the prior X.prior.json beside it, when there is one
//   fsq-cross write SPECS.json OUTDIR RESULT.json   each spec {name, version, layout, model_hash, image_height,
//                                            image_width, cell_size, levels, indices_file (raw int32 [N, D]) or
//                                            grid_file (raw int32 [1, D, rows, cols], through grid_to_cells)}
//                                            -> OUTDIR/name (version 1: Header::for_image; 2: for_patches or for_grid;
//                                            with "prior_file", coding 1 or 2 over that prior.json)
//   fsq-cross rans-time PRIOR.json INDICES.i32 CELLS REPEATS OUT.json [ROWS COLS]   encode and decode the
//                                            indices REPEATS times (coding 2 over a ROWS x COLS grid when given):
//                                            best milliseconds of each, payload bytes, its sha256
//   fsq-cross patches IMAGE.u8 H W P OUT.f32     to_patches of a raw interleaved RGB image
//   fsq-cross stitch PATCHES.f32 R C H W P OUT.u8  from_patches
//   fsq-cross manifest ART OUT.json          Manifest::load (verified) summary
//   fsq-cross make-art ART                   a valid artifact directory with dummy graphs
//   fsq-cross seeds DIR                      seed corpus for the fuzzer (the golden files, valid v1 and v2 files,
//                                            grey ones, coding-1 and coding-2 files over the golden priors, which
//                                            the fuzz target reads with)
//
// fsq::Error -> its message on stderr, exit 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
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

// The header a spec asks for: the factory of its version and layout.
fsq::Header header_for(const json& spec) {
    const auto version = spec.at("version").get<unsigned>(), layout = spec.at("layout").get<unsigned>();
    const fsq::ModelHash hash = fsq::hash_from_hex(spec.at("model_hash").get<std::string>());
    const auto height = spec.at("image_height").get<std::uint64_t>(),
               width = spec.at("image_width").get<std::uint64_t>();
    const auto cell = spec.at("cell_size").get<std::uint64_t>();
    fsq::Levels levels = spec.at("levels").get<fsq::Levels>();
    if (version == 1) return fsq::Header::for_image(hash, height, width, cell, std::move(levels));
    if (layout == fsq::kLayoutGrid) return fsq::Header::for_grid(hash, height, width, cell, std::move(levels));
    return fsq::Header::for_patches(hash, height, width, cell, std::move(levels));
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
                fs::path prior_path = path;
                prior_path.replace_extension(".prior.json");
                std::optional<fsq::Prior> prior;
                if (fs::exists(prior_path)) prior = fsq::Prior::load(prior_path);
                const fsq::Bitstream b = fsq::Bitstream::load(path, prior ? &*prior : nullptr);
                const fsq::Header& h = b.header;
                fs::path indices = fs::path(a[2]).parent_path() / path.filename();
                indices.replace_extension(".cpp.i32");
                write_raw(indices, b.indices);
                json grid = nullptr;
                if (h.spatial()) {
                    fs::path grid_path = indices;
                    grid_path.replace_extension(".grid.i32");
                    write_raw(grid_path, fsq::cells_to_grid(h, b.indices));
                    grid = grid_path.string();
                }
                results.push_back({{"file", path.string()},
                                   {"grid_file", grid},
                                   {"model_hash", fsq::to_hex(h.model_hash)},
                                   {"version", h.version},
                                   {"layout", h.layout},
                                   {"coding", h.coding},
                                   {"prior_hash", fsq::to_hex(h.prior_hash)},
                                   {"image_height", h.image_height},
                                   {"image_width", h.image_width},
                                   {"cell_size", h.cell_size},
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
        // SPECS: a list of specs (see the top); each is written to OUTDIR/name, or its error
        // reported in RESULT.
        json results = json::array();
        for (const json& spec : read_json(a[1])) {
            const std::string name = spec.at("name").get<std::string>();
            try {
                fsq::Bitstream b;
                b.header = header_for(spec);
                std::optional<fsq::Prior> prior;
                if (spec.contains("prior_file")) {
                    prior = fsq::Prior::load(spec.at("prior_file").get<std::string>());
                    b.header = b.header.with_prior(*prior);
                }
                if (spec.contains("grid_file")) {
                    b.indices = fsq::grid_to_cells(read_raw<std::int32_t>(spec.at("grid_file").get<std::string>()),
                                                   b.header.levels.size(), b.header.grid_rows, b.header.grid_cols);
                } else {
                    b.indices = read_raw<std::int32_t>(spec.at("indices_file").get<std::string>());
                }
                b.save(fs::path(a[2]) / name, prior ? &*prior : nullptr);
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
                          {"arch", m.arch},
                          {"downsample", m.downsample},
                          {"spatial", m.spatial()},
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
    if (cmd == "rans-time" && (a.size() == 6 || a.size() == 8)) {
        // The coder alone, as benchmarks/entropy_coding.py times Python's: best of REPEATS runs;
        // with ROWS COLS, coding 2 over that grid.
        const fsq::Prior prior = fsq::Prior::load(a[1]);
        const std::vector<std::int32_t> indices = read_raw<std::int32_t>(a[2]);
        const std::uint64_t cells = std::stoull(a[3]);
        const int repeats = std::stoi(a[4]);
        const bool context = a.size() == 8;
        const std::uint64_t rows = context ? std::stoull(a[6]) : 0, cols = context ? std::stoull(a[7]) : 0;
        using clock = std::chrono::steady_clock;
        double best_encode = 1e30, best_decode = 1e30;
        std::vector<std::uint8_t> payload;
        std::vector<std::int32_t> back;
        for (int r = 0; r < repeats; ++r) {
            const auto t0 = clock::now();
            payload = context ? prior.encode_context(indices.data(), rows, cols) : prior.encode(indices.data(), cells);
            const auto t1 = clock::now();
            const std::string problem = context ? prior.decode_context(payload.data(), payload.size(), rows, cols, back)
                                                : prior.decode(payload.data(), payload.size(), cells, back);
            const auto t2 = clock::now();
            if (!problem.empty() || back != indices) throw fsq::Error("fsq-cross: rans round trip failed: " + problem);
            best_encode = std::min(best_encode, std::chrono::duration<double, std::milli>(t1 - t0).count());
            best_decode = std::min(best_decode, std::chrono::duration<double, std::milli>(t2 - t1).count());
        }
        write_json(a[5], {{"encode_ms", best_encode},
                          {"decode_ms", best_decode},
                          {"bytes", payload.size()},
                          {"sha256", fsq::to_hex(fsq::sha256(payload.data(), payload.size()))}});
        return 0;
    }
    if (cmd == "make-art" && a.size() == 2) {
        fsq::test::make_art(a[1]);
        return 0;
    }
    if (cmd == "seeds" && a.size() == 2) {
        fs::create_directories(a[1]);
        fsq::test::write_bytes(fs::path(a[1]) / "golden.fsq", fsq::test::from_hex(fsq::test::kGoldenHex));
        fsq::test::write_bytes(fs::path(a[1]) / "golden_v2_grid.fsq", fsq::test::from_hex(fsq::test::kGoldenV2GridHex));
        fsq::test::write_bytes(fs::path(a[1]) / "golden_v2_patches.fsq",
                               fsq::test::from_hex(fsq::test::kGoldenV2PatchesHex));
        const std::vector<fsq::Levels> levels = {{8, 5, 5, 5}, {2}, {65535, 3}, fsq::Levels(16, 8), {7, 7, 7, 7, 7}};
        std::uint32_t seed = 1;
        // Each level set as v1 patches, v2 patches and a v2 latent grid.
        for (std::size_t k = 0; k < levels.size(); ++k) {
            for (int kind = 0; kind < 3; ++kind) {
                const std::uint64_t h = 3 + k, w = 5 + 2 * k, cell = 2 + k;
                fsq::Bitstream b;
                b.header = kind == 0   ? fsq::Header::for_image(fsq::test::golden_hash(), h, w, cell, levels[k])
                           : kind == 1 ? fsq::Header::for_patches(fsq::test::golden_hash(), h, w, cell, levels[k])
                                       : fsq::Header::for_grid(fsq::test::golden_hash(), h, w, cell, levels[k]);
                for (std::uint64_t i = 0; i < b.header.num_cells() * levels[k].size(); ++i) {
                    seed = seed * 1103515245u + 12345u;
                    b.indices.push_back(static_cast<std::int32_t>(
                        (seed >> 8) % static_cast<std::uint32_t>(levels[k][i % levels[k].size()])));
                }
                const char* names[] = {"valid", "valid_v2_patches", "valid_v2_grid"};
                b.save(fs::path(a[1]) / (names[kind] + std::to_string(k) + ".fsq"));
                if (kind == 2) {  // the grey flag (flags bit 0) set, so the fuzzer starts from both values
                    b.header.grey = true;
                    b.save(fs::path(a[1]) / ("valid_v2_grid_grey" + std::to_string(k) + ".fsq"));
                }
            }
        }
        // Coding 1 over the golden prior (what the fuzz target reads with): the golden file, and files
        // from one cell to several lanes (K = 1, 1, 3, 5), grids and patches.
        const fsq::Prior prior = fsq::test::golden_prior();
        fsq::test::write_bytes(fs::path(a[1]) / "golden_rans.fsq", fsq::test::from_hex(fsq::test::kGoldenRansHex));
        const std::uint64_t sides[][2] = {{1, 1}, {9, 13}, {180, 200}, {200, 280}};
        for (std::size_t k = 0; k < std::size(sides); ++k) {
            fsq::Bitstream b;
            b.header = (k % 2 ? fsq::Header::for_patches : fsq::Header::for_grid)(
                           fsq::test::golden_hash(), sides[k][0], sides[k][1], 4, fsq::test::kGoldenLevels)
                           .with_prior(prior);
            for (std::uint64_t i = 0; i < b.header.num_cells() * 3; ++i) {
                seed = seed * 1103515245u + 12345u;
                const std::uint32_t u = (seed >> 16) & 0xFFFF;  // skewed towards 0, as codec indices are
                b.indices.push_back(static_cast<std::int32_t>((u * u >> 16) * static_cast<std::uint32_t>(
                                                                  fsq::test::kGoldenLevels[i % 3]) >> 16));
            }
            b.save(fs::path(a[1]) / ("valid_rans" + std::to_string(k) + ".fsq"), &prior);
        }
        // Coding 2 over the coding-2 golden prior (the fuzz target's other prior): the golden file and
        // grids from one cell to several lanes (K = 1, 1, 2, 3).
        const fsq::Prior context = fsq::test::golden_context_prior();
        fsq::test::write_bytes(fs::path(a[1]) / "golden_context.fsq",
                               fsq::test::from_hex(fsq::test::kGoldenContextHex));
        for (std::size_t k = 0; k < std::size(sides); ++k) {
            fsq::Bitstream b;
            b.header = fsq::Header::for_grid(fsq::test::golden_hash(), sides[k][0], sides[k][1], 4,
                                             fsq::test::kGoldenContextLevels)
                           .with_prior(context);
            for (std::uint64_t i = 0; i < b.header.num_cells() * 2; ++i) {
                seed = seed * 1103515245u + 12345u;
                const std::uint32_t u = (seed >> 16) & 0xFFFF;
                b.indices.push_back(static_cast<std::int32_t>((u * u >> 16) * static_cast<std::uint32_t>(
                                                                  fsq::test::kGoldenContextLevels[i % 2]) >> 16));
            }
            b.save(fs::path(a[1]) / ("valid_context" + std::to_string(k) + ".fsq"), &context);
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
