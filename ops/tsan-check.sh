#!/usr/bin/env bash
# Builds the CPU code with ThreadSanitizer (CUDA off) and runs the concurrency-heavy tests under it:
# the thread pool, the runtime (RCU expert table, overlay cache, continuous batching, prefix cache), hot swap and the
# Hugging Face tokenizer (shared BPE word cache, per-thread regex state).
# It found the ParallelFor region race (session 2) that crashed tessera-server about once in 20 runs.
#   ops/tsan-check.sh [BUILD_DIR]      default build-tsan (git-ignored); ~10 min on 2 cores the first time
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-tsan}
TESTS=(tests/core/util/core_util_test tests/core/runtime/core_runtime_test tests/core/runtime/core_runtime_hot_swap_test
       tests/core/runtime/core_runtime_prefix_cache_test tests/core/runtime/core_runtime_overlay_tiers_test
       tests/core/runtime/core_runtime_paged_kv_test
       tests/core/tokenizer/core_tokenizer_hf_components_test)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_ENABLE_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
cmake --build "$BUILD" --target core_util_test core_runtime_test core_runtime_hot_swap_test \
  core_runtime_prefix_cache_test core_runtime_overlay_tiers_test core_runtime_paged_kv_test core_tokenizer_hf_components_test -j "${TESSERA_JOBS:-2}"
export TSAN_OPTIONS="halt_on_error=1 suppressions=$(pwd)/ops/tsan.supp"
for t in "${TESTS[@]}"; do
  echo "== $t (under ThreadSanitizer, 3 repeats)"
  "$BUILD/$t" --gtest_repeat=3 --gtest_brief=1
done
echo "tsan-check: OK"
