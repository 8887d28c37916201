#!/usr/bin/env bash
# Builds the WebAssembly parts (src/**/wasm/*.c) into dist/, beside the compiled TypeScript
# that loads them. Needs clang and wasm-ld (Debian: clang-14 lld-14; scripts/setup.sh installs
# them). Without them the TypeScript fallbacks run, slower, and the test that requires the
# WebAssembly matcher fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cc=$(command -v clang-14 || command -v clang || true)
if [ -z "$cc" ]; then echo "build-wasm: clang not found (run scripts/setup.sh): WebAssembly parts not built" >&2; exit 0; fi
for src in $(find src -path '*/wasm/*.c'); do
  out="dist/${src%.c}.wasm"
  mkdir -p "$(dirname "$out")"
  "$cc" --target=wasm32 -O3 -msimd128 -mbulk-memory -nostdlib -Wall -Werror -Wl,--no-entry -Wl,-z,stack-size=65536 -o "$out" "$src"
done
