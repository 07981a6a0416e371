#!/usr/bin/env bash
# Builds and tests Tessera as a machine without the CUDA Toolkit would (-DTESSERA_ENABLE_CUDA=OFF: the
# CUDA backend's factory and setters report FAILED_PRECONDITION, the emulation test is left out). CI has
# nvcc, so this is the check that the CPU-only build still configures, links and passes; session 5 broke
# it unnoticed.  ops/cpu-only-check.sh [BUILD_DIR]   default build-cpu (git-ignored); ~6 min on 2 cores cold
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-cpu}
TESSERA_BUILD_DIR="$BUILD" ops/build.sh -DTESSERA_ENABLE_CUDA=OFF
cd "$BUILD"
ctest --output-on-failure -j "$(nproc)" --timeout 900
echo "cpu-only-check: OK"
