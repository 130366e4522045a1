// fsq-minimal [ART]: the smallest app around the codec, and runtime/cpp/README.md's usage example
// (ctest builds and runs it, so the README cannot drift from the API).
#include <fsq/fsq.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    try {
        fsq::Codec codec = fsq::Codec::open(argc > 1 ? argv[1] : "art");  // checks every sha256, loads graphs
        const std::int64_t s = codec.image_size(), w = static_cast<std::int64_t>(codec.code_width());

        std::vector<float> patches(4 * 3 * s * s, 0.5f);                          // float [N, 3, S, S] in [0, 1]
        std::vector<std::int32_t> indices = codec.encode(patches, {4, 3, s, s});  // int32 [N, W]
        std::vector<float> decoded = codec.decode(indices, {4, w});               // float [N, 3, S, S]

        fsq::Image frame{480, 640, std::vector<std::uint8_t>(480 * 640 * 3, 128)};  // 8-bit RGB, interleaved
        codec.compress(frame).save("frame.fsq");  // tile, encode, pack; written whole or not at all

        fsq::Bitstream stored = fsq::Bitstream::load("frame.fsq");  // damage -> fsq::Error, never UB
        fsq::Image back = codec.decompress(stored);                  // refuses another model's file
        std::printf("%ux%u image, %llu patches, via %s\n", back.width, back.height,
                    static_cast<unsigned long long>(stored.header.num_patches()), codec.backend().name().c_str());
    } catch (const fsq::Error& e) {  // one line: component, what was wrong, what to do
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
