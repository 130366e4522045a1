#!/usr/bin/env bash
# CI for the C++ runtime (runtime/cpp), on a Debian machine as root:
#   1. install what is missing (compilers, CMake, nlohmann json, OpenSSL, zlib, GoogleTest, libFuzzer);
#   2. GCC build with -Wall -Werror, ctest (unit tests, Python <-> C++ cross check, examples, find_package);
#   3. clang build with AddressSanitizer + UndefinedBehaviorSanitizer (and -Werror), ctest again;
#   4. the libFuzzer target on the bitstream reader for FSQ_FUZZ_SECONDS (default 60), printing
#      executions and crashes.
# Exits non-zero on any failure. TensorRT does not exist on these machines, so no build has its
# backend. The GCC build has the ONNX Runtime backend, against the SDK scripts/ort_sdk.sh assembles
# (npm's libonnxruntime.so + the vendored headers); the sanitizer build stays backend-free, since
# libonnxruntime.so is not instrumented (runtime/cpp/README.md says what that leaves uncompiled).
#
# Environment: FSQ_PYTHON (a Python that imports fsqdeploy; default: python3 on PATH),
# FSQ_CPP_BUILD_ROOT (default: $TMPDIR/fsqdeploy-cpp), FSQ_FUZZ_SECONDS, FSQ_REQUIRE_CROSS=0 to let
# the cross check skip when fsqdeploy is not importable.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
root="${FSQ_CPP_BUILD_ROOT:-${TMPDIR:-/tmp}/fsqdeploy-cpp}"
fuzz_seconds="${FSQ_FUZZ_SECONDS:-60}"
jobs="$(nproc 2>/dev/null || echo 2)"

step() { printf '\n== cpp: %s (%ds)\n' "$*" "$((SECONDS - start))"; }

# -- 1. packages ---------------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
install_missing() {
  local missing=()
  for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
step "packages"
install_missing cmake ninja-build g++ clang nlohmann-json3-dev libssl-dev zlib1g-dev libgtest-dev
clang_major="$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n1)"
install_missing "libclang-rt-${clang_major}-dev"  # libFuzzer and the sanitizer runtimes for this clang
echo "g++ $(g++ -dumpversion), clang ${clang_major}, $(cmake --version | head -n1)"

python="${FSQ_PYTHON:-$(command -v python3 || command -v python || true)}"
if [ "${FSQ_REQUIRE_CROSS:-1}" != "0" ]; then export FSQ_REQUIRE_CROSS=1; else unset FSQ_REQUIRE_CROSS; fi
configure_common=(-G Ninja -DFSQ_WERROR=ON -DPython3_EXECUTABLE="$python")

# -- 2. GCC, -Wall -Werror, with the ONNX Runtime backend ------------------------------------------
# npm is not installed from apt here: the machines' Node.js comes from elsewhere and Debian's npm
# conflicts with it. Without npm the build is backend-free and says so (the ORT tests then skip).
ort=(-DFSQ_WITH_ONNXRUNTIME=OFF)
if command -v npm >/dev/null; then
  step "ONNX Runtime C/C++ SDK (scripts/ort_sdk.sh)"
  bash scripts/ort_sdk.sh "$root/ort-sdk"
  ort=(-DFSQ_WITH_ONNXRUNTIME=ON -DONNXRUNTIME_ROOT="$root/ort-sdk")
else
  echo "cpp: NOTE no npm on this machine: no ONNX Runtime SDK, the GCC build is backend-free"
fi
step "GCC build (-Wall -Wextra -Werror, ${ort[0]})"
rm -rf "$root/gcc"
CXX=g++ cmake -S runtime/cpp -B "$root/gcc" "${configure_common[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${ort[@]}" >/dev/null
cmake --build "$root/gcc" --parallel "$jobs"
step "GCC ctest"
ctest --test-dir "$root/gcc" --output-on-failure --parallel "$jobs"

# -- 3. clang, ASan + UBSan (+ the fuzz target) ------------------------------------------------------
step "clang build (AddressSanitizer + UndefinedBehaviorSanitizer, -Werror, libFuzzer target)"
rm -rf "$root/asan"
CXX=clang++ cmake -S runtime/cpp -B "$root/asan" "${configure_common[@]}" -DCMAKE_BUILD_TYPE=Debug \
  -DFSQ_SANITIZE=address,undefined -DFSQ_BUILD_FUZZERS=ON -DFSQ_WITH_ONNXRUNTIME=OFF >/dev/null
cmake --build "$root/asan" --parallel "$jobs"
step "clang ASan+UBSan ctest"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$root/asan" --output-on-failure --parallel "$jobs"

# -- 4. fuzz ---------------------------------------------------------------------------------------
step "fuzzing the bitstream reader for ${fuzz_seconds}s"
corpus="$root/fuzz-corpus"
rm -rf "$corpus" && mkdir -p "$corpus"
cp "$root/asan/tests/seeds/"*.fsq "$corpus/"  # golden file + valid files, written by ctest's fuzz_seeds
fuzz_log="$root/fuzz.log"
set +e
"$root/asan/fuzz/fuzz_bitstream" -max_total_time="$fuzz_seconds" -print_final_stats=1 -timeout=10 \
  -rss_limit_mb=2048 -artifact_prefix="$root/fuzz-crash-" "$corpus" >"$fuzz_log" 2>&1
fuzz_status=$?
set -e
executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$fuzz_log" | tail -n1)"
crashes="$(find "$root" -maxdepth 1 -name 'fuzz-crash-*' | wc -l)"
inputs="$(find "$corpus" -type f | wc -l)"
echo "fuzz: ${executions:-?} executions in ${fuzz_seconds}s, ${crashes} crashes (corpus grew to ${inputs} inputs)"
if [ "$fuzz_status" -ne 0 ] || [ "$crashes" -ne 0 ] || [ -z "$executions" ]; then
  tail -n 60 "$fuzz_log"
  echo "cpp: the fuzzer found a problem (exit $fuzz_status); inputs: $root/fuzz-crash-*" >&2
  exit 1
fi

step "done"
echo "cpp: all passed in $((SECONDS - start))s; builds in $root"
echo "cpp: pytest tests/cpp can reuse fsq-cpp with FSQ_CPP_BUILD_DIR=$root/gcc"
