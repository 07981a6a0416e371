#!/usr/bin/env bash
# Real-checkpoint check: a Hugging Face checkpoint directory served, chatted with, fine-tuned on a chat
# dataset and exported by Tessera, compared with transformers (see ops/check_real_checkpoint.py). Builds
# nothing: pass the build directory (default build/). Python: $TESSERA_PYTHON, else the venv of
# ops/py-env.sh. Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PY=${TESSERA_PYTHON:-$(ops/py-env.sh)}
exec "$PY" ops/check_real_checkpoint.py "$BUILD" "${@:2}"
