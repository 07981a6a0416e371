#!/usr/bin/env bash
# Builds Tessera's GPU test and benchmark binaries for sm_90 (H100/H200) and packs a self-contained folder
# that a bare GPU machine can run with ops/gpu-check.sh (copied into it).
#
#   ops/gpu-bundle.sh [BUNDLE_DIR]        default BUNDLE_DIR: ./gpu-bundle (git-ignored)
#   env: TESSERA_GPU_BUILD_DIR (default build-gpu), TESSERA_JOBS (default 2),
#        TESSERA_GPU_EXTRA_TARGETS (more test/bench targets to include, space separated)
#
# Layout of the bundle:
#   bin.tar.xz      bin/: the test binaries (*_test), GPU benchmarks (bench_gpu_*) and bench_serve, stripped;
#                   services/: tessera-server, tessera-admin, tessera, tessera-datagen (for --demo);
#                   gpu-check.sh unpacks it
#   demo-run.sh, backbones/builtin-tiny   the product demo and the backbone it serves
#   lib.tar.xz      shared libraries the binaries need that a bare GPU machine lacks (see below);
#                   gpu-check.sh unpacks it into lib/ (xz keeps the folder under the device tool's 64 MiB)
#   tests/fixtures  test fixtures (TESSERA_SOURCE_DIR points at the bundle)
#   bench/          the PyTorch peer script(s)
#   gpu-check.sh    runs everything and prints a table
#
# Which shared libraries travel (decided from `ldd` of every binary):
#   - copied: everything that is not the C runtime, the compiler runtime or CUDA: Abseil, OpenBLAS (+
#     libgfortran/libquadmath), gRPC/protobuf/SQLite when linked, ... The GPU machine's image has no
#     Debian -dev packages, so these are missing there.
#   - not copied: glibc pieces (libc, libm, libdl, libpthread, librt, ld-linux) and libstdc++/libgcc_s:
#     the GPU image (Ubuntu 24.04, newer glibc and GCC) provides compatible, newer ones, and loading our
#     older libstdc++ ahead of them could break libraries that need the newer one (cuBLAS, PyTorch).
#   - not copied: libcuda (the driver's, must match the kernel module: 580 there) and the CUDA 13
#     runtime libraries libcudart.so.13 / libcublas.so.13 / libcublasLt.so.13: the GPU machine has CUDA
#     13.0 (same major and minor as our nvcc 13.0, so the sonames match), and libcublasLt alone is
#     ~500 MB, far beyond what the device tool can carry. gpu-check.sh finds them under
#     /usr/local/cuda/lib64 or in PyTorch's nvidia-* wheels, and fails with a clear message if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUNDLE=${1:-gpu-bundle}
BUILD=${TESSERA_GPU_BUILD_DIR:-build-gpu}
JOBS=${TESSERA_JOBS:-2}

GEN=()
command -v ninja >/dev/null && [[ ! -f "$BUILD/CMakeCache.txt" || -f "$BUILD/build.ninja" ]] && GEN=(-G Ninja)
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
# GPU test binaries and benchmarks; only the targets that exist in this checkout.
WANT=(core_backend_cuda_test core_model_cuda_test core_backend_test services_model_host_test bench_serve
      ${TESSERA_GPU_EXTRA_TARGETS:-})
AVAILABLE=$(cmake --build "$BUILD" --target help | sed -n 's/^\([A-Za-z0-9_]*\): .*/\1/p')
if ! echo "$AVAILABLE" | grep -q '^bench_gpu_'; then
  # The bench_gpu_* targets exist only when CMake found nvcc (TESSERA_HAVE_CUDA).
  echo "gpu-bundle: this build has no CUDA (CMake found no nvcc); a GPU bundle needs /usr/local/cuda" >&2
  exit 1
fi
TARGETS=()
for t in "${WANT[@]}" $(echo "$AVAILABLE" | grep '^bench_gpu_' || true); do
  if echo "$AVAILABLE" | grep -qx "$t"; then TARGETS+=("$t"); else echo "gpu-bundle: no target $t here, skipped" >&2; fi
done
SERVICES=(tessera-server tessera-admin tessera tessera-datagen)
echo "gpu-bundle: building ${TARGETS[*]} ${SERVICES[*]} in $BUILD (-j$JOBS)"
cmake --build "$BUILD" --target "${TARGETS[@]}" "${SERVICES[@]}" -j "$JOBS"

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" "$BUNDLE/bench" "$BUNDLE/tests" "$BUNDLE/services" "$BUNDLE/backbones"
for t in "${SERVICES[@]}"; do
  cp "$BUILD/services/$t" "$BUNDLE/services/$t"
  strip --strip-unneeded "$BUNDLE/services/$t" 2>/dev/null || true
done
cp -r ops/backbones/builtin-tiny "$BUNDLE/backbones/"
cp ops/demo-run.sh "$BUNDLE/demo-run.sh"
for t in "${TARGETS[@]}"; do
  f=$(find "$BUILD" -type f -name "$t" -perm -u+x | head -1)
  [[ -n "$f" ]] || { echo "gpu-bundle: built $t but cannot find its binary" >&2; exit 1; }
  cp "$f" "$BUNDLE/bin/$t"
  strip --strip-unneeded "$BUNDLE/bin/$t" 2>/dev/null || true
done

SKIP_RE='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libnvidia)'
for f in "$BUNDLE"/bin/* "$BUNDLE"/services/*; do
  ldd "$f" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if [[ "$name" =~ $SKIP_RE ]]; then continue; fi
    [[ -f "$BUNDLE/lib/$name" ]] || cp -L "$path" "$BUNDLE/lib/$name"
  done
  if ldd "$f" | grep -q 'not found'; then
    echo "gpu-bundle: $f has unresolved libraries here:" >&2
    ldd "$f" | grep 'not found' >&2
    exit 1
  fi
done
(cd "$BUNDLE" && tar -cJf lib.tar.xz lib && rm -rf lib)
# Every binary links the backend's fatbins (~6 MiB each, 50 MiB in all): xz packs them ~10x, which keeps
# the bundle far under the carry limit. gpu-check.sh unpacks bin/ and services/ as it does lib/.
(cd "$BUNDLE" && tar -cJf bin.tar.xz bin services && rm -rf bin services)

[[ -d tests/fixtures ]] && cp -r tests/fixtures "$BUNDLE/tests/fixtures"
cp ops/bench/torch_peer.py "$BUNDLE/bench/"
cp ops/gpu-check.sh "$BUNDLE/gpu-check.sh"
chmod +x "$BUNDLE/gpu-check.sh"
{
  echo "commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nvcc=$(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1)"
  echo "targets=${TARGETS[*]} ${SERVICES[*]}"
} > "$BUNDLE/BUILD_INFO"

SIZE=$(du -sb "$BUNDLE" | cut -f1)
echo "gpu-bundle: $BUNDLE is $((SIZE / 1024 / 1024)) MiB (${#TARGETS[@]} binaries + ${#SERVICES[@]} services)"
if (( SIZE > 56 * 1024 * 1024 )); then
  echo "gpu-bundle: WARNING: over 56 MiB; with the repository it may exceed the device tool's 64 MiB carry limit" >&2
fi
