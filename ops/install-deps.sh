#!/usr/bin/env bash
# Installs the Debian 12 packages Tessera builds and runs with, only those missing. Works as root or
# through sudo. nvcc/cuBLAS (CUDA Toolkit) are used when present under /usr/local/cuda; without them the
# build is CPU-only. chromium + chromium-driver run the web console's browser check (ops/check-console.sh),
# prometheus brings promtool (ops/check-metrics.sh), clang-14 + libclang-rt-14-dev build and run the
# libFuzzer targets (ops/fuzz.sh).
set -euo pipefail

PACKAGES=(
  cmake g++ make ninja-build pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libsqlite3-dev libpq-dev postgresql libopenblas-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libutf8proc-dev
  libcpp-httplib-dev libcurl4-openssl-dev libssl-dev
  chromium chromium-driver prometheus
  openssl
  clang-14 libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
