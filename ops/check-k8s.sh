#!/usr/bin/env bash
# Kubernetes manifests check without a cluster (see ops/check_k8s.py): renders ops/k8s/overlays/* and
# ops/k8s/secrets-example with `kubectl kustomize`, validates every object offline in strict mode against
# the Kubernetes 1.29 and 1.37 OpenAPI schemas, and asserts the project's invariants (resources, gRPC
# probes, non-root, roles and their flags, GPUs only in the cuda overlay, PDBs, placeholder-only Secrets,
# the Containerfile's runtime packages), and runs the dev overlay's pod, and (with a server that has the
# roles) the cpu overlay's control/inference/trainer pods on a throwaway PostgreSQL, as rendered against
# the build's tessera-server with the kubelet's gRPC health checks.
# Python and the kubectl/kubernetes-validate wheels: the venv of `ops/py-env.sh k8s` (pinned in
# ops/requirements-k8s.txt), or $TESSERA_K8S_PYTHON. Pass the build directory (default build/) so flag
# names are checked against its tessera-server --help (skipped with a message without one).
# Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PY=${TESSERA_K8S_PYTHON:-$(ops/py-env.sh k8s)}
exec "$PY" ops/check_k8s.py "$BUILD" "${@:2}"
