#!/usr/bin/env bash
# The chaos test (ops/chaos/chaos.cc): SIGKILLs a real tessera-server at random moments while jobs train,
# versions publish, live pointers move and clients query, checking the registry's invariants after every
# kill. Default: the full run (200 kills; figures in ops/bench/RESULTS.md); ops/test.sh runs
# `ops/chaos.sh --kills 20`. Extra arguments go to tessera-chaos (see --help). Needs a build (ops/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TESSERA_BUILD_DIR:-build}
BIN="$BUILD_DIR/ops/chaos/tessera-chaos"
if [[ ! -x "$BIN" ]]; then
  echo "ops/chaos.sh: $BIN not built (run ops/build.sh)" >&2
  exit 2
fi
exec "$BIN" --server-bin "$BUILD_DIR/services/tessera-server" "$@"
