// A main() for the fuzz target where libFuzzer is not available (GCC): runs every file given, or
// every file in every directory given, through LLVMFuzzerTestOneInput once. ctest uses it to keep
// the seed corpus and any past crash inputs passing under the sanitizers.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

void run_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(data.data(), data.size());
    // Every prefix too: truncations are the commonest damage.
    for (std::size_t n = 0; n < data.size() && n < 4096; ++n) LLVMFuzzerTestOneInput(data.data(), n);
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t count = 0;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg(argv[i]);
        if (std::filesystem::is_directory(arg)) {
            for (const auto& entry : std::filesystem::directory_iterator(arg)) {
                if (entry.is_regular_file()) {
                    run_file(entry.path());
                    ++count;
                }
            }
        } else {
            run_file(arg);
            ++count;
        }
    }
    std::printf("replayed %zu inputs (and their prefixes)\n", count);
    return count ? 0 : 1;
}
