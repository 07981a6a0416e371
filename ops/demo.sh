#!/usr/bin/env bash
# README's first command: installs missing packages, builds, runs the product's demo.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
ops/build.sh
exec ops/demo-run.sh "${TESSERA_BUILD_DIR:-build}"
