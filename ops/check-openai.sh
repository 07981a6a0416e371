#!/usr/bin/env bash
# OpenAI compatibility check: the official `openai` Python client (pinned in ops/requirements-ops.txt)
# against tessera-server --http-listen: models, completions, chat (plain and streamed), errors, files and
# a fine-tuning job to succeeded (see ops/check_openai.py). Builds nothing: pass the build directory
# (default build/). Python: $TESSERA_PYTHON, else the venv of ops/py-env.sh.
# Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PY=${TESSERA_PYTHON:-$(ops/py-env.sh)}
exec "$PY" ops/check_openai.py "$BUILD" "${@:2}"
