// ART/manifest.json: fields, every file's sha256 checked before use, malformed manifests refused,
// engine selection and sidecar checks (the parts of the TensorRT backend that need no GPU).
#include <gtest/gtest.h>

#include "backends.hpp"
#include "helpers.hpp"

namespace fsq::test {
namespace {

using nlohmann::json;

void rewrite(const fs::path& dir, const std::function<void(json&)>& change) {
    std::ifstream in(dir / "manifest.json");
    json m = json::parse(in);
    change(m);
    write_text(dir / "manifest.json", m.dump(2));
}

TEST(Sha256, KnownVectors) {
    EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    TempDir dir;
    std::string big(3 << 20, 'x');  // spans several 1 MiB reads
    write_text(dir / "big", big);
    EXPECT_EQ(sha256_file(dir / "big"), sha256_hex(big.data(), big.size()));
    EXPECT_FSQ_ERROR(sha256_file(dir / "nope"), "artifact: cannot read");
}

TEST(Manifest, LoadsAVerifiedArtifact) {
    TempDir dir;
    const json written = make_art(dir.path(), {8, 5, 5, 5, 8, 5, 5, 5}, 64, 2);
    const Manifest m = Manifest::load(dir.path());
    EXPECT_EQ(m.model_id, written["model_id"].get<std::string>());
    EXPECT_EQ(to_hex(m.model_hash), m.model_id);
    EXPECT_EQ(m.levels, (Levels{8, 5, 5, 5, 8, 5, 5, 5}));
    EXPECT_EQ(m.latent_dim, 4);
    EXPECT_EQ(m.code_width, 8);
    EXPECT_EQ(m.stages, 2);
    EXPECT_EQ(m.image_size, 64);
    EXPECT_EQ(m.opset, 18);
    EXPECT_DOUBLE_EQ(m.temperature, 0.1);
    EXPECT_EQ(m.files.size(), 3u);
    EXPECT_EQ(m.files.at("checkpoint/model.safetensors").size,
              std::string("dummy bytes of checkpoint/model.safetensors").size());
    EXPECT_EQ(m.graph_io("encoder").inputs.at(0).name, "images");
    EXPECT_EQ(m.graph_io("encoder").inputs.at(0).shape, (std::vector<std::int64_t>{-1, 3, 64, 64}));
    EXPECT_EQ(m.graph_io("decoder").inputs.at(0).shape, (std::vector<std::int64_t>{-1, 8}));
    EXPECT_EQ(m.file("encoder.onnx"), dir.path() / "encoder.onnx");
    EXPECT_FSQ_ERROR(m.file("nope.onnx"), "lists no 'nope.onnx'");
    EXPECT_TRUE(m.verify_files().empty());
}

TEST(Manifest, RefusesFilesThatDoNotMatch) {
    TempDir dir;
    make_art(dir.path());
    write_text(dir / "encoder.onnx", "dummy bytes of encoder.onnY");  // same size, one byte changed
    EXPECT_FSQ_ERROR(Manifest::load(dir.path()),
                     "failed verification: encoder.onnx: sha256 differs from the manifest. Note: the directory "
                     "changed after export; export again");
    EXPECT_NO_THROW(Manifest::read(dir.path()));  // read() alone does not hash

    write_text(dir / "decoder.onnx", "short");
    const std::vector<std::string> problems = Manifest::read(dir.path()).verify_files();
    ASSERT_EQ(problems.size(), 2u);
    EXPECT_EQ(problems[0], "decoder.onnx: size 5 != 27 in the manifest");
    EXPECT_EQ(problems[1], "encoder.onnx: sha256 differs from the manifest");
    EXPECT_FSQ_ERROR(Manifest::load(dir.path()), "decoder.onnx: size 5 != 27 in the manifest (and 1 more)");

    fs::remove(dir / "checkpoint" / "model.safetensors");
    EXPECT_EQ(Manifest::read(dir.path()).verify_files()[0], "checkpoint/model.safetensors: missing");
}

TEST(Manifest, RefusesAWrongHashInTheManifest) {
    TempDir dir;
    make_art(dir.path());
    rewrite(dir.path(), [](json& m) { m["files"]["decoder.onnx"]["sha256"] = std::string(64, 'a'); });
    EXPECT_FSQ_ERROR(Manifest::load(dir.path()), "decoder.onnx: sha256 differs from the manifest");
}

TEST(Manifest, RefusesMissingOrMalformedManifests) {
    TempDir dir;
    EXPECT_FSQ_ERROR(Manifest::load(dir / "nope"),
                     "artifact: directory '" + (dir / "nope").string() + "' does not exist");
    EXPECT_FSQ_ERROR(Manifest::load(dir.path()), "manifest.json' is missing. Note: is '");
    write_text(dir / "manifest.json", "{\"format\": ");
    EXPECT_FSQ_ERROR(Manifest::load(dir.path()), "manifest.json' is not valid JSON (parse error at line 1");

    struct Case {
        std::function<void(json&)> change;
        std::string reason;
    };
    const std::vector<Case> cases = {
        {[](json& m) { m["format"] = "other"; }, "is not an fsqdeploy artifact manifest"},
        {[](json& m) { m = json::array(); }, "is not an fsqdeploy artifact manifest"},
        {[](json& m) { m["format_version"] = 2; }, "has format version 2, this reader knows 1"},
        {[](json& m) {
             m.erase("levels");
             m.erase("io");
         },
         "lacks ['levels', 'io']. Note: export again"},
        {[](json& m) { m["model_id"] = "abc"; }, "has model_id 'abc', expected 64 hex characters"},
        {[](json& m) {
             m["levels"] = {8, 1, 5, 5};
         },
         "has a level 1 outside [2, 65535]"},
        {[](json& m) {
             m["levels"] = {8, 5.5, 5, 5};
         },
         "has a level 5.5 outside [2, 65535]"},
        {[](json& m) { m["levels"] = json::array(); }, "has levels = [], expected a non-empty list of ints"},
        {[](json& m) { m["code_width"] = 5; }, "has code_width 5, 4 levels, stages 1 and latent_dim 4"},
        {[](json& m) { m["image_size"] = 70000; }, "has image_size = 70000, expected an int in [1, 65535]"},
        {[](json& m) { m["image_size"] = true; }, "has image_size = true, expected an int"},
        {[](json& m) { m["temperature"] = "hot"; }, "has temperature = \"hot\", expected a number"},
        {[](json& m) {
             m["files"]["x"] = {{"sha256", "zz"}, {"size", 1}};
         },
         "malformed 'files' table (entry 'x')"},
        {[](json& m) {
             m["files"]["x"] = {{"sha256", std::string(64, 'a')}, {"size", -1}};
         },
         "entry 'x'"},
        {[](json& m) { m["files"]["../secret"] = m["files"]["encoder.onnx"]; },
         "lists '../secret', which is not a file inside the artifact directory"},
        {[](json& m) { m["files"]["/etc/passwd"] = m["files"]["encoder.onnx"]; }, "lists '/etc/passwd'"},
        {[](json& m) { m["files"]["manifest.json"] = m["files"]["encoder.onnx"]; }, "lists 'manifest.json'"},
        {[](json& m) { m["io"].erase("decoder"); }, "has no io.decoder"},
        {[](json& m) {
             m["io"]["encoder"]["inputs"][0]["shape"] = {"batch", 3, 32, 31};
         },
         "has io.encoder.inputs 'images' float32 [batch, 3, 32, 31], expected float32 [batch, 3, 32, 32]"},
        {[](json& m) { m["io"]["decoder"]["inputs"][0]["dtype"] = "int64"; },
         "has io.decoder.inputs 'indices' int64 [batch, 4], expected int32 [batch, 4]"},
        {[](json& m) { m["io"]["decoder"]["outputs"] = json::array(); }, "lists 0 io.decoder.outputs, expected 1"},
        {[](json& m) { m["io"]["encoder"]["inputs"][0].erase("name"); }, "malformed io.encoder.inputs entry"},
    };
    for (const Case& c : cases) {
        make_art(dir.path());
        rewrite(dir.path(), c.change);
        EXPECT_FSQ_ERROR(Manifest::load(dir.path()), c.reason);
    }
}

TEST(Manifest, ArchDefaultsToPaperAndConvHasTheSpatialContract) {
    TempDir dir;
    make_art(dir.path(), {8, 5, 5, 5}, 32, 1, {}, "");  // written before the conv codec: no arch, no downsample
    const Manifest old = Manifest::load(dir.path());
    EXPECT_EQ(old.arch, "paper");
    EXPECT_EQ(old.downsample, 16);
    EXPECT_FALSE(old.spatial());

    make_art(dir.path(), {8, 8, 8, 5, 5, 5}, 64, 1, {}, "conv");
    const Manifest conv = Manifest::load(dir.path());
    EXPECT_EQ(conv.arch, "conv");
    EXPECT_EQ(conv.downsample, 8);
    EXPECT_TRUE(conv.spatial());
    EXPECT_EQ(conv.image_size, 64);  // the training crop; any multiple of f encodes
    const TensorInfo& images = conv.graph_io("encoder").inputs.at(0);
    EXPECT_EQ(images.shape, (std::vector<std::int64_t>{-1, 3, -1, -1}));
    EXPECT_EQ(images.symbols, (std::vector<std::string>{"batch", "", "height", "width"}));
    const TensorInfo& indices = conv.graph_io("decoder").inputs.at(0);
    EXPECT_EQ(indices.dtype, "int32");
    EXPECT_EQ(indices.shape, (std::vector<std::int64_t>{-1, 6, -1, -1}));
    EXPECT_EQ(indices.symbols, (std::vector<std::string>{"batch", "", "grid_height", "grid_width"}));
}

TEST(Manifest, RefusesAnUnknownArchAndAContractOfTheOtherArch) {
    TempDir dir;
    struct Case {
        std::string arch;
        std::function<void(json&)> change;
        std::string reason;
    };
    const std::vector<Case> cases = {
        {"paper", [](json& m) { m["arch"] = "transformer"; },
         "artifact: '" + (dir / "manifest.json").string() +
             "' has arch 'transformer', which this reader does not know (paper, conv). Note: use the fsqdeploy C++ "
             "runtime that matches the exporter"},
        {"paper", [](json& m) { m["arch"] = 5; }, "has arch = 5, expected a string. Note: export again"},
        {"conv", [](json& m) { m["downsample"] = 0; }, "has downsample = 0, expected an int in [1, 65535]"},
        {"conv", [](json& m) { m["downsample"] = 65536; }, "has downsample = 65536, expected an int in [1, 65535]"},
        {"conv", [](json& m) { m["io"] = io_contract(32, 4, false); },
         "has io.encoder.inputs 'images' float32 [batch, 3, 32, 32], expected float32 [batch, 3, height, width] (a "
         "conv model)"},
        {"paper", [](json& m) { m["io"] = io_contract(32, 4, true); },
         "has io.encoder.inputs 'images' float32 [batch, 3, height, width], expected float32 [batch, 3, 32, 32] (a "
         "paper model)"},
        {"conv",
         [](json& m) {
             m["io"]["encoder"]["inputs"][0]["shape"] = {"batch", 3, "h", "w"};
         },
         "[batch, 3, h, w], expected float32 [batch, 3, height, width]"},
        {"conv",
         [](json& m) {
             m["io"]["encoder"]["outputs"][0]["shape"] = {"batch", 5, "grid_height", "grid_width"};
         },
         "has io.encoder.outputs 'indices' int32 [batch, 5, grid_height, grid_width], expected int32 [batch, 4, "
         "grid_height, grid_width]"},
        {"conv",
         [](json& m) {
             m["io"]["decoder"]["inputs"][0]["shape"] = {"batch", 4};
         },
         "has io.decoder.inputs 'indices' int32 [batch, 4], expected int32 [batch, 4, grid_height, grid_width]"},
    };
    for (const Case& c : cases) {
        make_art(dir.path(), {8, 5, 5, 5}, 32, 1, {}, c.arch);
        EXPECT_NO_THROW(Manifest::load(dir.path()));
        rewrite(dir.path(), c.change);
        EXPECT_FSQ_ERROR(Manifest::load(dir.path()), c.reason);
    }
}

TEST(Engines, SelectionByNameAndPrecision) {
    TempDir dir;
    make_art(dir.path(), {8, 5, 5, 5}, 32, 1,
             {"encoder.fp16.plan", "decoder.fp16.plan", "encoder.fp32.plan", "decoder.fp32.plan", "notes.txt"});
    const Manifest m = Manifest::load(dir.path());
    EXPECT_EQ(m.engine_files(), (std::vector<std::string>{"decoder.fp16.plan", "decoder.fp32.plan", "encoder.fp16.plan",
                                                          "encoder.fp32.plan"}));
    EXPECT_EQ(detail::graph_file(m, "encoder", "", true, "fp16"), "encoder.fp16.plan");
    EXPECT_EQ(detail::graph_file(m, "decoder", "", true, "fp32"), "decoder.fp32.plan");
    EXPECT_EQ(detail::graph_file(m, "decoder", "decoder.fp16.plan", true, ""), "decoder.fp16.plan");
    EXPECT_EQ(detail::graph_file(m, "encoder", "", false, ""), "encoder.onnx");
    EXPECT_EQ(detail::graph_file(m, "encoder", "", false, "fp32"), "encoder.onnx");
    EXPECT_FSQ_ERROR(detail::graph_file(m, "decoder", "", false, "int8"), "lists no 'decoder.int8.onnx'");
    EXPECT_FSQ_ERROR(detail::graph_file(m, "encoder", "", true, ""),
                     "lists several encoder engines (encoder.fp16.plan, encoder.fp32.plan). Note: choose one");
    EXPECT_FSQ_ERROR(detail::graph_file(m, "encoder", "", true, "int8"), "lists no encoder engine for int8");
    EXPECT_FSQ_ERROR(detail::graph_file(m, "encoder", "other.plan", true, ""), "lists no 'other.plan'");
}

TEST(Engines, SidecarChecksLikeTheirPythonTwin) {
    TempDir dir;
    write_text(dir / "encoder.fp16.plan.json",
               R"({"tensorrt_version": "10.7.0.23", "cuda_version": "12.6", "gpu_name": "NVIDIA L4",
                   "compute_capability": "8.9", "precision": "fp16", "onnx_sha256": "ABCDEF",
                   "profile": {"min": 1, "opt": 64, "max": 256}})");
    const EngineSidecar s = EngineSidecar::load(dir / "encoder.fp16.plan");
    EXPECT_EQ(s.tensorrt_version, "10.7.0.23");
    EXPECT_EQ(s.compute_capability, "8.9");
    EXPECT_EQ(s.precision, "fp16");
    EXPECT_EQ(s.onnx_sha256, "abcdef");
    EXPECT_FALSE(s.engine_sha256.has_value());
    EXPECT_FALSE(s.version_compatible);
    EXPECT_EQ(version_tuple("10.13.0.35"), (std::vector<long long>{10, 13, 0, 35}));
    EXPECT_EQ(version_tuple("11.0.0b2.1"), (std::vector<long long>{11, 0}));  // a part that is not a number ends it
    EXPECT_TRUE(version_tuple("").empty());

    const DeviceFacts l4{"10.7.0.23", "NVIDIA L4", "8.9"};
    EXPECT_NO_THROW(check_sidecar("e.plan", s, l4));
    EXPECT_NO_THROW(check_sidecar("e.plan", s, l4, "fp16"));
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", s, l4, "fp32"),
                     "tensorrt: 'e.plan' is a fp16 engine, fp32 was asked for. Note: rebuild it with fsqdeploy export "
                     "RUN --out ART --trt on this machine --precision fp32");
    // C++ only: a runtime that reports no build number (TensorRT 8.6) is compared on major.minor.patch.
    EXPECT_NO_THROW(check_sidecar("e.plan", s, {"10.7.0", "NVIDIA L4", "8.9"}));  // build number ignored
    EXPECT_FSQ_ERROR(
        check_sidecar("e.plan", s, {"10.8.0", "NVIDIA L4", "8.9"}),
        "tensorrt: 'e.plan' was built with TensorRT 10.7.0.23, this is TensorRT 10.8.0 (or build it with "
        "--version-compatible). Note: rebuild it with fsqdeploy export RUN --out ART --trt on this machine");
    // TensorRT 10+ reports the build, as Python's tensorrt.__version__: then it must match too.
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", s, {"10.7.0.24", "NVIDIA L4", "8.9"}),
                     "was built with TensorRT 10.7.0.23, this is TensorRT 10.7.0.24 (or build it with");
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", s, {"10.7.0.23", "NVIDIA A100", "8.0"}),
                     "tensorrt: 'e.plan' was built for NVIDIA L4 (sm 8.9), this GPU is NVIDIA A100 (sm 8.0) (or build "
                     "it with --hardware-compatible)");

    // Where C++ and Python used to differ. Version-compatible: this or a later TensorRT, never an older one.
    EngineSidecar portable = s;
    portable.version_compatible = portable.hardware_compatible = true;
    EXPECT_NO_THROW(check_sidecar("e.plan", portable, {"10.9.1", "NVIDIA A100", "8.0"}));
    EXPECT_NO_THROW(check_sidecar("e.plan", portable, {"10.7.0.23", "NVIDIA H100", "9.0"}));
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", portable, {"10.5.0.18", "NVIDIA A100", "8.0"}),
                     "tensorrt: 'e.plan' was built with TensorRT 10.7.0.23, this is TensorRT 10.5.0.18 (a "
                     "version-compatible engine runs on TensorRT 10.x from 10.7.0.23 on or TensorRT 11.x)");
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", portable, {"10.7.0.22", "NVIDIA A100", "8.0"}),
                     "this is TensorRT 10.7.0.22");
    EXPECT_NO_THROW(check_sidecar("e.plan", portable, {"11.0.0", "NVIDIA A100", "8.0"}));  // 10 -> 11, as documented
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", portable, {"12.0.0", "NVIDIA A100", "8.0"}), "was built with TensorRT");
    // Hardware-compatible: Ampere (sm 8.0) and newer only.
    EXPECT_FSQ_ERROR(check_sidecar("e.plan", portable, {"10.7.0.23", "Tesla T4", "7.5"}),
                     "tensorrt: 'e.plan' is hardware-compatible for Ampere and newer (sm 8.0+), this GPU is Tesla T4 "
                     "(sm 7.5). Note: rebuild it");
    // The engine must be the one its sidecar describes, when the sidecar records its sha256.
    write_text(dir / "encoder.fp16.plan", "serialized engine");
    const std::string recorded = R"({"tensorrt_version": "10.7.0.23", "gpu_name": "NVIDIA L4",
        "compute_capability": "8.9", "precision": "fp16", "profile": {}, "engine_sha256": ")" +
                                 sha256_hex("serialized engine", 17) + "\"}";
    write_text(dir / "encoder.fp16.plan.json", recorded);
    EXPECT_EQ(check_engine(dir / "encoder.fp16.plan", l4, "fp16").engine_sha256, sha256_hex("serialized engine", 17));
    write_text(dir / "encoder.fp16.plan", "serialized enginf");
    EXPECT_FSQ_ERROR(check_engine(dir / "encoder.fp16.plan", l4),
                     "tensorrt: 'encoder.fp16.plan' is not the engine its sidecar describes (sha256 differs). Note: "
                     "rebuild it");
    fs::remove(dir / "encoder.fp16.plan");
    EXPECT_FSQ_ERROR(check_engine(dir / "encoder.fp16.plan", l4), "encoder.fp16.plan' is missing. Note: rebuild");

    EXPECT_FSQ_ERROR(EngineSidecar::load(dir / "decoder.plan"), "decoder.plan.json' is missing. Note: rebuild");
    write_text(dir / "bad.plan.json", "[1,");
    EXPECT_FSQ_ERROR(EngineSidecar::load(dir / "bad.plan"), "bad.plan.json' is not valid JSON");
    write_text(dir / "bad.plan.json", R"({"tensorrt_version": "10.7.0.23", "precision": "fp16"})");
    EXPECT_FSQ_ERROR(EngineSidecar::load(dir / "bad.plan"),
                     "bad.plan.json' lacks gpu_name, compute_capability, profile");
}

// The C++ half of runtime/cpp/tests/sidecar_cases.json (the Python half: tests/cpp/test_sidecar_twins.py):
// every case's verdict and message, word for word.
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
        s.replace(at, from.size(), to);
    }
    return s;
}

fs::path write_case(const fs::path& dir, const json& spec, const json& c) {
    const fs::path engine = dir / spec.at("engine_file").get<std::string>();
    const std::string bytes = spec.at("engine").get<std::string>();
    write_text(engine, bytes);
    json sidecar = spec.at("sidecar");
    if (c.value("record_hash", true)) sidecar["engine_sha256"] = sha256_hex(bytes.data(), bytes.size());
    const json changes = c.value("sidecar", json::object()), drop = c.value("drop", json::array());
    for (const auto& [key, value] : changes.items()) sidecar[key] = value;
    for (const json& key : drop) sidecar.erase(key.get<std::string>());
    fs::path path = engine;
    path += ".json";
    write_text(path, c.contains("sidecar_text") ? c.at("sidecar_text").get<std::string>() : sidecar.dump());
    if (c.contains("engine_after")) write_text(engine, c.at("engine_after").get<std::string>());
    const std::string remove = c.value("remove", "");
    if (remove == "engine") fs::remove(engine);
    if (remove == "sidecar") fs::remove(path);
    return engine;
}

TEST(Engines, SidecarTableSharedWithPython) {
    std::ifstream in(fs::path(FSQ_TESTS_SOURCE_DIR) / "sidecar_cases.json");
    ASSERT_TRUE(in) << "runtime/cpp/tests/sidecar_cases.json";
    const json spec = json::parse(in);
    ASSERT_GE(spec.at("cases").size(), 20u);
    for (const json& c : spec.at("cases")) {
        SCOPED_TRACE(c.at("name").get<std::string>());
        TempDir dir;
        const fs::path engine = write_case(dir.path(), spec, c);
        json here = spec.at("here");
        const json changes = c.value("here", json::object());
        for (const auto& [key, value] : changes.items()) here[key] = value;
        const DeviceFacts facts{here.at("tensorrt_version").get<std::string>(), here.at("gpu_name").get<std::string>(),
                                here.at("compute_capability").get<std::string>()};
        const json asked = c.value("precision", json());  // null: any precision
        const std::string precision = asked.is_string() ? asked.get<std::string>() : std::string();
        const std::string refused = c.at("refused").is_string() ? c.at("refused").get<std::string>() : std::string();
        if (refused.empty()) {
            EXPECT_EQ(check_engine(engine, facts, precision).precision, "fp16");
            continue;
        }
        try {
            check_engine(engine, facts, precision);
            ADD_FAILURE() << "accepted, expected: " << refused;
        } catch (const Error& e) {
            EXPECT_EQ(std::string(e.what()), replace_all(refused, "{dir}", dir.path().string()));
        }
    }
}

}  // namespace
}  // namespace fsq::test
