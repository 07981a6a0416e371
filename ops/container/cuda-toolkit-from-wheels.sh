#!/usr/bin/env bash
# Lays out a CUDA 13.0 toolkit under PREFIX (e.g. /usr/local/cuda-13.0) from NVIDIA's PyPI wheels
# (pinned in ops/container/cuda-wheels.txt): the wheels' nvidia/cu13/ trees merged (bin/nvcc, nvvm/,
# include/ with cccl/, lib/), plus what a toolkit from NVIDIA's installer has and the wheels lack: the
# unversioned lib*.so links the linker wants, lib64 -> lib, and targets/x86_64-linux/{include,lib},
# where nvcc.profile and CMake's FindCUDAToolkit look. Used by ops/container/Containerfile with
# --build-arg TESSERA_CUDA=1; needs python3 with venv (downloads only: nothing is pip-installed).
# Usage: ops/container/cuda-toolkit-from-wheels.sh PREFIX
set -euo pipefail
PREFIX=${1:?usage: cuda-toolkit-from-wheels.sh PREFIX}
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$TMP/wheels" -r "$HERE/cuda-wheels.txt"
n=$(ls "$TMP"/wheels/*.whl | wc -l)
want=$(grep -c '^nvidia-' "$HERE/cuda-wheels.txt")
[[ "$n" == "$want" ]] || { echo "cuda-toolkit-from-wheels: got $n wheels, want $want" >&2; exit 1; }
for w in "$TMP"/wheels/*.whl; do
  python3 -m zipfile -e "$w" "$TMP/tree"
done
mkdir -p "$PREFIX"
cp -a "$TMP/tree/nvidia/cu13/." "$PREFIX/"
# zipfile does not keep the executable bits.
chmod 0755 "$PREFIX"/bin/* "$PREFIX"/nvvm/bin/* 2>/dev/null || true
find "$PREFIX/bin" "$PREFIX/nvvm/bin" -type d -exec chmod 0755 {} +
for so in "$PREFIX"/lib/lib*.so.*; do
  base=${so%%.so.*}.so
  [[ -e "$base" ]] || ln -s "$(basename "$so")" "$base"
done
[[ -e "$PREFIX/lib64" ]] || ln -s lib "$PREFIX/lib64"
mkdir -p "$PREFIX/targets/x86_64-linux"
[[ -e "$PREFIX/targets/x86_64-linux/include" ]] || ln -s ../../include "$PREFIX/targets/x86_64-linux/include"
[[ -e "$PREFIX/targets/x86_64-linux/lib" ]] || ln -s ../../lib "$PREFIX/targets/x86_64-linux/lib"
"$PREFIX/bin/nvcc" --version | tail -2
