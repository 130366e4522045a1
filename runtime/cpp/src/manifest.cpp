// ART/manifest.json and engine sidecars: nlohmann::json to parse, OpenSSL EVP for sha256.
#include "fsq/manifest.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fsq/error.hpp"

namespace fsq {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kFormat = "fsqdeploy-artifact";
constexpr int kFormatVersion = 1;
constexpr const char* kExportAgain = "Note: export again";
const char* const kRequired[] = {"model_id", "levels",      "latent_dim", "code_width", "image_size",
                                 "stages",   "temperature", "opset",      "io",         "files"};

std::string quoted(const fs::path& p) {
    return "'" + p.string() + "'";
}

std::string read_text(const fs::path& path, const std::string& component) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    if (in) text << in.rdbuf();
    if (!in) {
        throw Error(component + ": cannot read " + quoted(path) + ". Note: check the file's permissions");
    }
    return text.str();
}

json parse_json(const std::string& text, const fs::path& path, const std::string& component, const char* note) {
    try {
        return json::parse(text);
    } catch (const json::parse_error& e) {
        // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 2: ...".
        std::string why = e.what();
        const std::size_t bracket = why.find("] ");
        if (bracket != std::string::npos) why = why.substr(bracket + 2);
        throw Error(component + ": " + quoted(path) + " is not valid JSON (" + why + "). " + note);
    }
}

// Field readers: every type mismatch is one "artifact: ... field 'x' must be ..." line.
class Fields {
public:
    Fields(const json& root, fs::path path) : root_(root), path_(std::move(path)) {}

    [[noreturn]] void bad(const std::string& what) const {
        throw Error("artifact: " + quoted(path_) + " " + what + ". " + kExportAgain);
    }

    const json& get(const char* key) const { return root_.at(key); }

    int integer(const char* key, long long lo, long long hi) const {
        const json& v = get(key);
        if (!v.is_number_integer() || v.get<long long>() < lo || v.get<long long>() > hi) {
            bad("has " + std::string(key) + " = " + v.dump() + ", expected an int in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "]");
        }
        return static_cast<int>(v.get<long long>());
    }

    double number(const char* key) const {
        const json& v = get(key);
        if (!v.is_number()) bad("has " + std::string(key) + " = " + v.dump() + ", expected a number");
        return v.get<double>();
    }

    std::string string(const char* key) const {
        const json& v = get(key);
        if (!v.is_string()) bad("has " + std::string(key) + " = " + v.dump() + ", expected a string");
        return v.get<std::string>();
    }

    const fs::path& path() const { return path_; }

private:
    const json& root_;
    fs::path path_;
};

// "arch" and "downsample", optional: a manifest from before the conv codec is a paper model.
void read_arch(const Fields& f, const json& root, Manifest& m) {
    if (root.contains("arch")) m.arch = f.string("arch");
    if (m.arch != kArchPaper && m.arch != kArchConv) {
        throw Error("artifact: " + quoted(f.path()) + " has arch '" + m.arch + "', which this reader does not know (" +
                    kArchPaper + ", " + kArchConv + "). Note: use the fsqdeploy C++ runtime that matches the exporter");
    }
    if (root.contains("downsample"))
        m.downsample = f.integer("downsample", 1, 0xFFFF);  // the bitstream's u16 cell_size
    // runtime/codec.py's _halo_cells: the "tiling" record when it holds both ints, else tile_halos
    m.encoder_halo = 3 * m.downsample;
    m.decoder_halo = 4;
    const auto tiling = root.find("tiling");
    if (tiling != root.end() && tiling->is_object()) {
        const auto enc = tiling->find("encoder_halo"), dec = tiling->find("decoder_halo");
        if (enc != tiling->end() && dec != tiling->end() && enc->is_number_integer() && dec->is_number_integer()) {
            m.encoder_halo = static_cast<int>(std::clamp<long long>(enc->get<long long>(), 0, 1 << 20));
            m.decoder_halo = static_cast<int>(std::clamp<long long>(dec->get<long long>(), 0, 1 << 20));
        }
    }
}

bool is_hex64(const std::string& s) {
    return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
           });
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return s;
}

// A listed name must stay inside ART: no absolute paths, no "..", not the manifest itself.
bool inside_art(const std::string& name) {
    const fs::path p(name);
    if (name.empty() || p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
    if (name == kManifestFile) return false;
    return std::none_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; });
}

// A shape as the manifest writes it, symbolic dimensions by name: [batch, 3, height, width].
std::string shape_text(const std::vector<std::int64_t>& shape, const std::vector<std::string>& symbols) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        s += (i ? ", " : "") + (shape[i] < 0 ? symbols[i] : std::to_string(shape[i]));
    }
    return s + "]";
}

std::vector<TensorInfo> read_tensors(const Fields& f, const json& list, const std::string& where) {
    if (!list.is_array()) f.bad("has a malformed io." + where + " (expected a list)");
    std::vector<TensorInfo> out;
    for (const json& t : list) {
        if (!t.is_object() || !t.contains("name") || !t.at("name").is_string() || !t.contains("dtype") ||
            !t.at("dtype").is_string() || !t.contains("shape") || !t.at("shape").is_array()) {
            f.bad("has a malformed io." + where + " entry (expected {\"name\", \"dtype\", \"shape\"})");
        }
        TensorInfo info{t.at("name").get<std::string>(), t.at("dtype").get<std::string>(), {}, {}};
        for (const json& dim : t.at("shape")) {
            if (dim.is_string()) {
                info.shape.push_back(-1);  // symbolic, e.g. "batch"
                info.symbols.push_back(dim.get<std::string>());
            } else if (dim.is_number_integer() && dim.get<long long>() >= 0) {
                info.shape.push_back(dim.get<std::int64_t>());
                info.symbols.emplace_back();
            } else {
                f.bad("has a malformed shape in io." + where + " (" + t.at("shape").dump() + ")");
            }
        }
        out.push_back(std::move(info));
    }
    return out;
}

// The contract of docs/artifacts.md (fsqdeploy.artifact.io_contract). Paper: encoder images
// float32 [batch, 3, S, S] -> indices int32 [batch, W]. Conv: images [batch, 3, height, width] ->
// indices channels-first [batch, W, grid_height, grid_width]. The decoder the reverse. Names are
// read from the manifest, not assumed; symbolic dimensions must carry the contract's names.
struct Shape {
    std::vector<std::int64_t> dims;    // -1: symbolic
    std::vector<std::string> symbols;  // its name, "" for a fixed dimension
};

Shape image_shape(const Manifest& m) {
    if (m.spatial()) return {{-1, 3, -1, -1}, {"batch", "", "height", "width"}};
    return {{-1, 3, m.image_size, m.image_size}, {"batch", "", "", ""}};
}

Shape index_shape(const Manifest& m) {
    if (m.spatial()) return {{-1, m.code_width, -1, -1}, {"batch", "", "grid_height", "grid_width"}};
    return {{-1, m.code_width}, {"batch", ""}};
}

void check_io(const Fields& f, const Manifest& m) {
    const Shape images = image_shape(m), indices = index_shape(m);
    struct Want {
        const char* graph;
        const char* side;
        const char* dtype;
        const Shape* shape;
    };
    const Want wants[] = {{"encoder", "inputs", "float32", &images},
                          {"encoder", "outputs", "int32", &indices},
                          {"decoder", "inputs", "int32", &indices},
                          {"decoder", "outputs", "float32", &images}};
    for (const Want& w : wants) {
        const auto graph = m.io.find(w.graph);
        if (graph == m.io.end()) f.bad("has no io." + std::string(w.graph));
        const auto& list = std::string(w.side) == "inputs" ? graph->second.inputs : graph->second.outputs;
        const std::string where = std::string("io.") + w.graph + "." + w.side;
        if (list.size() != 1) f.bad("lists " + std::to_string(list.size()) + " " + where + ", expected 1");
        const TensorInfo& t = list[0];
        if (t.dtype != w.dtype || t.shape != w.shape->dims || t.symbols != w.shape->symbols) {
            f.bad("has " + where + " '" + t.name + "' " + t.dtype + " " + shape_text(t.shape, t.symbols) +
                  ", expected " + w.dtype + " " + shape_text(w.shape->dims, w.shape->symbols) + " (a " + m.arch +
                  " model)");
        }
    }
}

struct EvpDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new()) {
        if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) {
            throw Error("artifact: OpenSSL could not start a sha256 digest");
        }
    }
    void update(const void* data, std::size_t size) {
        if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) throw Error("artifact: OpenSSL sha256 update failed");
    }
    std::string hex() {
        ModelHash digest{};  // a sha256 digest, whatever it hashes
        unsigned int length = 0;
        if (EVP_DigestFinal_ex(ctx_.get(), digest.data(), &length) != 1 || length != digest.size()) {
            throw Error("artifact: OpenSSL sha256 final failed");
        }
        return to_hex(digest);
    }

private:
    std::unique_ptr<EVP_MD_CTX, EvpDeleter> ctx_;
};

}  // namespace

std::string sha256_hex(const void* data, std::size_t size) {
    Sha256 h;
    h.update(data, size);
    return h.hex();
}

std::string sha256_file(const fs::path& path) {
    std::FILE* f = std::fopen(path.string().c_str(), "rb");
    if (!f) throw Error("artifact: cannot read " + quoted(path) + ": " + std::strerror(errno));
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(f, &std::fclose);
    Sha256 h;
    std::vector<unsigned char> buffer(1 << 20);
    for (std::size_t n = buffer.size(); n == buffer.size();) {
        n = std::fread(buffer.data(), 1, buffer.size(), f);
        if (std::ferror(f)) throw Error("artifact: cannot read " + quoted(path) + ": " + std::strerror(errno));
        h.update(buffer.data(), n);
    }
    return h.hex();
}

Manifest Manifest::read(const fs::path& art_dir) {
    std::error_code ec;
    if (!fs::is_directory(art_dir, ec)) {
        throw Error("artifact: directory " + quoted(art_dir) +
                    " does not exist. Note: create it with fsqdeploy export");
    }
    const fs::path path = art_dir / kManifestFile;
    if (!fs::is_regular_file(path, ec)) {
        throw Error("artifact: " + quoted(path) + " is missing. Note: is " + quoted(art_dir) +
                    " an fsqdeploy export directory?");
    }
    const json root = parse_json(read_text(path, "artifact"), path, "artifact", kExportAgain);
    if (!root.is_object() || !root.contains("format") || root.at("format") != kFormat) {
        throw Error("artifact: " + quoted(path) + " is not an fsqdeploy artifact manifest");
    }
    if (!root.contains("format_version") || root.at("format_version") != kFormatVersion) {
        throw Error("artifact: " + quoted(path) + " has format version " +
                    (root.contains("format_version") ? root.at("format_version").dump() : std::string("null")) +
                    ", this reader knows " + std::to_string(kFormatVersion) +
                    ". Note: use the fsqdeploy C++ runtime that matches the exporter");
    }
    std::vector<std::string> missing;
    for (const char* key : kRequired) {
        if (!root.contains(key)) missing.push_back(key);
    }
    if (!missing.empty()) {
        std::string list;
        for (const auto& k : missing) list += (list.empty() ? "'" : ", '") + k + "'";
        throw Error("artifact: " + quoted(path) + " lacks [" + list + "]. " + kExportAgain);
    }

    const Fields f(root, path);
    Manifest m;
    m.dir = art_dir;
    m.model_id = f.string("model_id");
    if (!is_hex64(m.model_id)) f.bad("has model_id '" + m.model_id + "', expected 64 hex characters (a sha256)");
    m.model_id = lower(m.model_id);
    m.model_hash = hash_from_hex(m.model_id);

    const json& levels = root.at("levels");
    if (!levels.is_array() || levels.empty() || levels.size() > kMaxLevels) {
        f.bad("has levels = " + levels.dump() + ", expected a non-empty list of ints");
    }
    for (const json& level : levels) {
        if (!level.is_number_integer() || level.get<long long>() < 2 || level.get<long long>() > kMaxLevel) {
            f.bad("has a level " + level.dump() + " outside [2, " + std::to_string(kMaxLevel) + "]");
        }
        m.levels.push_back(static_cast<int>(level.get<long long>()));
    }
    m.latent_dim = f.integer("latent_dim", 1, static_cast<long long>(kMaxLevels));
    m.code_width = f.integer("code_width", 1, static_cast<long long>(kMaxLevels));
    m.stages = f.integer("stages", 1, static_cast<long long>(kMaxLevels));
    m.image_size = f.integer("image_size", 1, 0xFFFF);  // the bitstream's patch_size is a u16
    m.opset = f.integer("opset", 1, 1000);
    m.temperature = f.number("temperature");
    read_arch(f, root, m);
    if (static_cast<std::size_t>(m.code_width) != m.levels.size() ||
        static_cast<long long>(m.stages) * m.latent_dim != m.code_width) {
        f.bad("has code_width " + std::to_string(m.code_width) + ", " + std::to_string(m.levels.size()) +
              " levels, stages " + std::to_string(m.stages) + " and latent_dim " + std::to_string(m.latent_dim) +
              " (expected code_width = len(levels) = stages * latent_dim)");
    }

    const json& files = root.at("files");
    if (!files.is_object()) f.bad("has a malformed 'files' table");
    for (const auto& [name, entry] : files.items()) {
        if (!entry.is_object() || !entry.contains("sha256") || !entry.at("sha256").is_string() ||
            !is_hex64(entry.at("sha256").get<std::string>()) || !entry.contains("size") ||
            !entry.at("size").is_number_unsigned()) {
            f.bad("has a malformed 'files' table (entry '" + name + "')");
        }
        if (!inside_art(name)) f.bad("lists '" + name + "', which is not a file inside the artifact directory");
        m.files[name] = FileEntry{lower(entry.at("sha256").get<std::string>()), entry.at("size").get<std::uint64_t>()};
    }

    const json& io = root.at("io");
    if (!io.is_object()) f.bad("has a malformed 'io' table");
    for (const auto& [graph, sides] : io.items()) {
        if (!sides.is_object() || !sides.contains("inputs") || !sides.contains("outputs")) {
            f.bad("has a malformed io." + graph + " (expected \"inputs\" and \"outputs\")");
        }
        m.io[graph] = GraphIo{read_tensors(f, sides.at("inputs"), graph + ".inputs"),
                              read_tensors(f, sides.at("outputs"), graph + ".outputs")};
    }
    check_io(f, m);
    return m;
}

Manifest Manifest::load(const fs::path& art_dir) {
    Manifest m = read(art_dir);
    const std::vector<std::string> problems = m.verify_files();
    if (!problems.empty()) {
        const std::string more =
            problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more)" : std::string();
        throw Error("artifact: " + quoted(art_dir) + " failed verification: " + problems[0] + more +
                    ". Note: the directory changed after export; export again");
    }
    return m;
}

std::vector<std::string> Manifest::verify_files() const {
    std::vector<std::string> problems;
    for (const auto& [name, entry] : files) {
        const fs::path path = dir / name;
        std::error_code ec;
        if (!fs::is_regular_file(path, ec)) {
            problems.push_back(name + ": missing");
            continue;
        }
        const std::uintmax_t size = fs::file_size(path, ec);
        if (ec) {
            problems.push_back(name + ": cannot be read (" + ec.message() + ")");
        } else if (size != entry.size) {
            problems.push_back(name + ": size " + std::to_string(size) + " != " + std::to_string(entry.size) +
                               " in the manifest");
        } else if (sha256_file(path) != entry.sha256) {
            problems.push_back(name + ": sha256 differs from the manifest");
        }
    }
    return problems;
}

fs::path Manifest::file(const std::string& name) const {
    if (files.find(name) == files.end()) {
        throw Error("artifact: " + quoted(dir) + " lists no '" + name + "'. Note: export it first");
    }
    return dir / name;
}

const GraphIo& Manifest::graph_io(const std::string& graph) const {
    const auto it = io.find(graph);
    if (it == io.end()) throw Error("artifact: " + quoted(dir / kManifestFile) + " has no io." + graph);
    return it->second;
}

std::vector<std::string> Manifest::engine_files() const {
    std::vector<std::string> out;
    auto ends_with = [](const std::string& s, const std::string& tail) {
        return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
    };
    for (const auto& entry : files) {
        if (ends_with(entry.first, ".plan") || ends_with(entry.first, ".engine")) out.push_back(entry.first);
    }
    return out;  // std::map keeps them sorted
}

// -- engine sidecars: fsqdeploy/backends/tensorrt.py's check_sidecar, message for message ----------

namespace {

constexpr const char* kRebuild = "Note: rebuild it with fsqdeploy export RUN --out ART --trt on this machine";
const char* const kSidecarKeys[] = {"tensorrt_version", "gpu_name", "compute_capability", "precision", "profile"};
constexpr long long kHardwareCompatibleMinMajor = 8;  // tensorrt_env.HARDWARE_COMPATIBLE_MIN_MAJOR: Ampere

}  // namespace

std::vector<long long> version_tuple(const std::string& version) {
    std::vector<long long> out;
    std::size_t start = 0;
    while (start <= version.size()) {
        const std::size_t dot = std::min(version.find('.', start), version.size());
        const std::string part = version.substr(start, dot - start);
        const bool digits = !part.empty() && part.size() <= 18 &&
                            std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!digits) break;
        out.push_back(std::stoll(part));
        start = dot + 1;
    }
    return out;
}

// fsqdeploy/backends/tensorrt.py: VERSION_COMPATIBLE_SINCE (8.6), VERSION_COMPATIBLE_LATER_MAJORS
// (8 -> 9 or 10, 10 -> 11) and version_compatible_runs / version_compatible_runtimes, as TensorRT's
// engine compatibility docs state them (cited there).
namespace {
const std::vector<long long>& version_compatible_since() {
    static const std::vector<long long> since = {8, 6};
    return since;
}
std::vector<long long> version_compatible_later_majors(long long major) {
    if (major == 8) return {9, 10};
    if (major == 10) return {11};
    return {};
}
std::string version_compatible_runtimes(const std::string& built) {
    const std::vector<long long> b = version_tuple(built);
    if (b.empty()) return "TensorRT ?.x from " + built + " on";
    if (b < version_compatible_since()) return "no TensorRT (version compatibility starts with TensorRT 8.6)";
    std::vector<std::string> places = {"TensorRT " + std::to_string(b[0]) + ".x from " + built + " on"};
    for (long long m : version_compatible_later_majors(b[0])) places.push_back("TensorRT " + std::to_string(m) + ".x");
    std::string out = places[0];
    for (std::size_t i = 1; i < places.size(); ++i) out += (i + 1 == places.size() ? " or " : ", ") + places[i];
    return out;
}
}  // namespace

bool version_compatible_runs(const std::vector<long long>& built, const std::vector<long long>& here) {
    if (built.empty() || here.empty() || built < version_compatible_since() || here < version_compatible_since()) {
        return false;
    }
    if (here[0] == built[0]) return here >= built;
    const std::vector<long long> later = version_compatible_later_majors(built[0]);
    return std::find(later.begin(), later.end(), here[0]) != later.end();
}

EngineSidecar EngineSidecar::load(const fs::path& engine_path) {
    fs::path path = engine_path;
    path += ".json";
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) throw Error("tensorrt: " + quoted(path) + " is missing. " + kRebuild);
    json root;
    try {
        root = json::parse(read_text(path, "tensorrt"));
    } catch (const json::parse_error&) {
        throw Error("tensorrt: " + quoted(path) + " is not valid JSON. " + kRebuild);
    }
    std::string missing;
    for (const char* key : kSidecarKeys) {
        if (!root.is_object() || !root.contains(key)) missing += (missing.empty() ? "" : ", ") + std::string(key);
    }
    if (!missing.empty()) throw Error("tensorrt: " + quoted(path) + " lacks " + missing + ". " + kRebuild);
    // Python formats the values with str(); a string is itself, anything else its JSON text.
    auto text = [&](const char* key) -> std::string {
        if (!root.contains(key)) return "?";
        return root.at(key).is_string() ? root.at(key).get<std::string>() : root.at(key).dump();
    };
    EngineSidecar s;
    s.tensorrt_version = text("tensorrt_version");
    s.cuda_version = text("cuda_version");
    s.gpu_name = text("gpu_name");
    s.compute_capability = text("compute_capability");
    s.precision = text("precision");
    s.onnx_sha256 = root.contains("onnx_sha256") && root.at("onnx_sha256").is_string()
                        ? lower(root.at("onnx_sha256").get<std::string>())
                        : "";
    if (root.contains("engine_sha256")) s.engine_sha256 = text("engine_sha256");  // compared as written
    // Python tests truthiness (sidecar.get(key)); export writes booleans.
    auto flag = [&](const char* key) {
        if (!root.contains(key)) return false;
        const json& v = root.at(key);
        return v.is_boolean() ? v.get<bool>() : !(v.is_null() || v == 0 || v == "" || v.empty());
    };
    s.version_compatible = flag("version_compatible");
    s.hardware_compatible = flag("hardware_compatible");
    return s;
}

void check_sidecar(const std::string& engine_name, const EngineSidecar& sidecar, const DeviceFacts& here,
                   const std::string& precision) {
    const std::string name = "'" + engine_name + "'";
    if (!precision.empty() && sidecar.precision != precision) {
        throw Error("tensorrt: " + name + " is a " + sidecar.precision + " engine, " + precision + " was asked for. " +
                    kRebuild + " --precision " + precision);
    }
    const std::string& built = sidecar.tensorrt_version;
    std::vector<long long> b = version_tuple(built);
    const std::vector<long long> h = version_tuple(here.tensorrt_version);
    // C++ only: a runtime that reports major.minor.patch and no build number (TensorRT 8.6's
    // getInferLibVersion) is compared on those three parts. TensorRT 10+ reports all four, as
    // Python's tensorrt.__version__ does, and then the rules are Python's exactly.
    const bool no_build_here = h.size() == 3 && b.size() > 3;
    if (no_build_here) b.resize(3);
    const bool same_version = sidecar.version_compatible ? version_compatible_runs(b, h)
                                                         : built == here.tensorrt_version || (no_build_here && b == h);
    if (!same_version) {
        const std::string allowed =
            sidecar.version_compatible
                ? " (a version-compatible engine runs on " + version_compatible_runtimes(built) + ")"
                : std::string(" (or build it with --version-compatible)");
        throw Error("tensorrt: " + name + " was built with TensorRT " + built + ", this is TensorRT " +
                    here.tensorrt_version + allowed + ". " + kRebuild);
    }
    if (sidecar.hardware_compatible) {
        const std::vector<long long> cc = version_tuple(here.compute_capability);
        if ((cc.empty() ? 0 : cc[0]) < kHardwareCompatibleMinMajor) {
            throw Error("tensorrt: " + name + " is hardware-compatible for Ampere and newer (sm 8.0+), this GPU is " +
                        here.gpu_name + " (sm " + here.compute_capability + "). " + kRebuild);
        }
    } else if (sidecar.compute_capability != here.compute_capability) {
        throw Error("tensorrt: " + name + " was built for " + sidecar.gpu_name + " (sm " + sidecar.compute_capability +
                    "), this GPU is " + here.gpu_name + " (sm " + here.compute_capability +
                    ") (or build it with --hardware-compatible). " + kRebuild);
    }
}

EngineSidecar check_engine(const fs::path& engine_path, const DeviceFacts& here, const std::string& precision) {
    std::error_code ec;
    if (!fs::is_regular_file(engine_path, ec)) {
        throw Error("tensorrt: " + quoted(engine_path) + " is missing. " + kRebuild);
    }
    const EngineSidecar sidecar = EngineSidecar::load(engine_path);
    const std::string name = engine_path.filename().string();
    if (sidecar.engine_sha256 && *sidecar.engine_sha256 != sha256_file(engine_path)) {
        throw Error("tensorrt: '" + name + "' is not the engine its sidecar describes (sha256 differs). " + kRebuild);
    }
    check_sidecar(name, sidecar, here, precision);
    return sidecar;
}

}  // namespace fsq
