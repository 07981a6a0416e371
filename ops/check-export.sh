#!/usr/bin/env bash
# Export compatibility check: a version exported by Tessera loads in Hugging Face transformers and
# decodes greedily exactly as Tessera serves it (see ops/check_export.py). Builds nothing: pass the
# build directory (default build/). Python: $TESSERA_PYTHON, else the venv of ops/py-env.sh.
# Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PY=${TESSERA_PYTHON:-$(ops/py-env.sh)}
exec "$PY" ops/check_export.py "$BUILD" "${@:2}"
