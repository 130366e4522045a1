// fsq-minimal [ART] [OUT.fsq]: the smallest app around the codec, and runtime/cpp/README.md's usage
// example (the tests build and run it, so the README cannot drift from the API). Works on both
// architectures: whole images for any artifact, patch batches for the paper model.
#include <fsq/fsq.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    try {
        fsq::Codec codec = fsq::Codec::open(argc > 1 ? argv[1] : "art");  // checks every sha256, loads graphs
        const char* out = argc > 2 ? argv[2] : "frame.fsq";

        fsq::Image frame{480, 640, std::vector<std::uint8_t>(480 * 640 * 3, 128)};  // 8-bit RGB, interleaved
        codec.compress(frame).save(out, codec.prior());  // entropy-coded (conv); written whole or not at all

        fsq::Bitstream stored = fsq::Bitstream::load(out, codec.prior());  // damage -> fsq::Error, never UB
        fsq::Image back = codec.decompress(stored);                         // refuses another model's file
        std::printf("%ux%u image, %llu cells of %u pixels, coding %u, via %s\n", back.width, back.height,
                    static_cast<unsigned long long>(stored.header.num_cells()), unsigned{stored.header.cell_size},
                    unsigned{stored.header.coding}, codec.backend().name().c_str());

        if (!codec.manifest().spatial()) {  // the paper model also codes batches of S x S patches
            const std::int64_t s = codec.image_size(), w = static_cast<std::int64_t>(codec.code_width());
            std::vector<float> patches(4 * 3 * s * s, 0.5f);                          // float [N, 3, S, S] in [0, 1]
            std::vector<std::int32_t> indices = codec.encode(patches, {4, 3, s, s});  // int32 [N, W]
            std::vector<float> decoded = codec.decode(indices, {4, w});               // float [N, 3, S, S]
            std::printf("4 patches of %lld pixels -> %zu indices -> %zu floats\n", static_cast<long long>(s),
                        indices.size(), decoded.size());
        }
    } catch (const fsq::Error& e) {  // one line: component, what was wrong, what to do
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
