#!/usr/bin/env bash
# Metrics check: `promtool check metrics` (Debian's prometheus) on tessera-server's /metrics after HTTP
# API traffic, scraped with an admin key (see ops/check_metrics.py). Standard-library Python only.
# Builds nothing: pass the build directory (default build/). Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
exec python3 ops/check_metrics.py "$BUILD" "${@:2}"
