#!/usr/bin/env bash
# README's second command: installs missing packages, builds, runs the whole test suite with ctest.
# Exits non-zero on any failure. GPU tests skip (with a message) when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
ops/build.sh
cd "${TESSERA_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 900
