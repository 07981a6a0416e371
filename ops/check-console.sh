#!/usr/bin/env bash
# Web console check in a real browser: Debian's chromium (headless) + chromium-driver, driven by Selenium
# from the pinned venv (ops/requirements-ops.txt): log in, a job's live loss curve, promote and roll back,
# the heat map, the playground, tenant isolation by URL (see ops/check_console.py). Builds nothing: pass
# the build directory (default build/). Python: $TESSERA_PYTHON, else the venv of ops/py-env.sh.
# Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PY=${TESSERA_PYTHON:-$(ops/py-env.sh)}
exec "$PY" ops/check_console.py "$BUILD" "${@:2}"
