#!/usr/bin/env bash
# Tokenizer/chat compatibility check against freshly trained tokenizers (see ops/check_tokenizers.py).
# Builds nothing: pass the build directory (default build/). Python: $TESSERA_PYTHON, else the venv of
# ops/py-env.sh. Exit status 0 only when every comparison agreed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PY=${TESSERA_PYTHON:-$(ops/py-env.sh)}
exec "$PY" ops/check_tokenizers.py "$BUILD" "${@:2}"
