#!/usr/bin/env bash
# An ONNX Runtime C/C++ SDK (include/ + lib/libonnxruntime.so) from what a registry-only machine can
# reach, for building runtime/cpp's ONNX Runtime backend (-DONNXRUNTIME_ROOT=OUT):
#   lib/     libonnxruntime.so from the npm package onnxruntime-node (its CPU library is inside the
#            tarball; `npm pack` fetches it without running the package's postinstall script, which
#            would try NuGet for CUDA libraries), sha256 checked for the pinned version;
#   include/ the vendored headers, runtime/cpp/third_party/onnxruntime (README there: which version).
# Usage: scripts/ort_sdk.sh OUT    (ORT_NPM_VERSION overrides the pinned library version; its
# sha256 is then not checked). Prints OUT/SDK_INFO.txt. Exits non-zero on any failure, leaving no OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then echo "usage: scripts/ort_sdk.sh OUT" >&2; exit 2; fi
out="$1"
pinned=1.31.1
pinned_sha256=f19a4da48c4c65e0cdccff82354482f657fa91a3455b66174195b94ca55b0e6f
version="${ORT_NPM_VERSION:-$pinned}"
headers=runtime/cpp/third_party/onnxruntime
command -v npm >/dev/null || { echo "ort_sdk: npm is not installed (apt-get install npm)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/ort-sdk.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "onnxruntime-node@$version" >/dev/null)
so=package/bin/napi-v6/linux/x64/libonnxruntime.so.1
tar -xzf "$work/onnxruntime-node-$version.tgz" -C "$work" "$so"
if [ "$version" = "$pinned" ]; then echo "$pinned_sha256  $work/$so" | sha256sum -c --quiet -; fi

# The headers ask the library for API ORT_API_VERSION: a library older than that returns none.
api="$(sed -n 's/^#define ORT_API_VERSION \([0-9]*\).*/\1/p' "$headers/include/onnxruntime_c_api.h")"
minor="$(echo "$version" | cut -d. -f2)"
if [ "$api" -gt "$minor" ]; then
  echo "ort_sdk: the vendored headers need ONNX Runtime >= 1.$api, onnxruntime-node $version is older" >&2
  exit 1
fi

stage="$work/sdk"
mkdir -p "$stage/include" "$stage/lib"
cp "$headers/include/"*.h "$stage/include/"
cp "$headers/LICENSE" "$stage/LICENSE"
install -m 0755 "$work/$so" "$stage/lib/libonnxruntime.so.$version"
ln -s "libonnxruntime.so.$version" "$stage/lib/libonnxruntime.so.1"
ln -s libonnxruntime.so.1 "$stage/lib/libonnxruntime.so"
printf 'library: onnxruntime-node %s (libonnxruntime.so.%s)\nheaders: %s, ORT_API_VERSION %s\n' \
  "$version" "$version" "$headers" "$api" >"$stage/SDK_INFO.txt"
rm -rf "$out" && mkdir -p "$(dirname "$out")" && mv "$stage" "$out"
cat "$out/SDK_INFO.txt"
