#!/usr/bin/env bash
# Everything csreg and its tests need on a fresh Debian 12 machine: the real container tools
# (the tests compare against them; containerd and Docker as registry clients besides them), Go
# and the klauspost sources (the compressor oracles are small Go programs built in test setup),
# clang and wasm-ld for the WebAssembly matcher (npm run build), python3 (the fixtures' layer
# re-compressor, the zlib oracle, and evicting files from the page cache), util-linux-extra
# (fincore: whether that worked), gpg (a signing key for the signature tests), then the npm
# dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(skopeo podman buildah containers-storage docker-registry containerd docker.io busybox-static zstd attr curl
      golang-go golang-github-klauspost-pgzip-dev golang-github-klauspost-compress-dev gzip apache2-utils openssl
      clang-14 lld-14 python3 util-linux-extra uidmap fuse-overlayfs procps gpg gpg-agent)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund
