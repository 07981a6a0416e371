#!/usr/bin/env bash
# Scale-out proof on one machine (issue 21): PostgreSQL, one control plane, two inference replicas and
# two trainers as separate tessera-server processes on loopback; two tenants' jobs, promote/rollback
# under client load, a trainer killed mid-job and a replica killed mid-load (ops/scale_out_proof.py
# says what is checked). Builds nothing: pass the build directory (default build/); --short is the CI
# form (< 2 minutes), --keep keeps every process's log. Standard-library Python only.
# Exit status 0 only when every check passed; the last line is "scale-out proof: PASS|FAIL (...)".
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
exec python3 ops/scale_out_proof.py "$BUILD" "${@:2}"
