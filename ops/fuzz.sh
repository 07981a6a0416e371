#!/usr/bin/env bash
# Builds the libFuzzer targets of ops/fuzz/ with clang-14 (ASan + UBSan, UB aborts) into build-fuzz/ (only
# the libraries they need; no CUDA) and runs each from its committed seed corpus (ops/fuzz/corpus/<target>/,
# read-only) with its dictionary (ops/fuzz/dicts/<target>.dict) when there is one. Exits non-zero when a
# target finds a crash, leak, UB or timeout; the input is left in build-fuzz/artifacts/ (add it to the seed
# corpus and as a regression test).
#
# Two modes, because a gate must not fail on a bug it happened to find today in code nobody touched:
#  - replay (default, what ops/test.sh and CI run): libFuzzer seed TESSERA_FUZZ_SEED (default 1), a fresh
#    work corpus, and at most RUNS[target] executions (about 8 s of CI's machine) or TESSERA_FUZZ_SECONDS
#    (default 30), whichever comes first. The input sequence is then a function of the commit (bar the
#    server targets' thread scheduling): a run that passed here replays the same inputs, or a prefix of
#    them, anywhere else.
#  - explore (TESSERA_FUZZ_SEED=random): a random seed, no run cap, new inputs kept in build-fuzz/corpus/
#    across runs. Use it to hunt: TESSERA_FUZZ_SEED=random TESSERA_FUZZ_SECONDS=600 ops/fuzz.sh config_fuzz
# Usage: ops/fuzz.sh [target...]   (default: every target). TESSERA_FUZZ_BUILD_ONLY=1 only builds.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TESSERA_FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${TESSERA_JOBS:-$(nproc)}
SECONDS_EACH=${TESSERA_FUZZ_SECONDS:-30}
SEED=${TESSERA_FUZZ_SEED:-1}
# Replay-mode execution caps: about 8 s of each target on CI's 2-core machine (its logged rates; halved from
# 15 s to keep CI's whole run well under 30 minutes; the replayed inputs are a prefix of the longer run's).
declare -A RUNS=([safetensors_fuzz]=150000 [config_fuzz]=60000 [tokenizer_fuzz]=4000 [jsonl_fuzz]=40000
                 [chat_template_fuzz]=12500 [http_fuzz]=30000 [grpc_fuzz]=6000)
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
TARGETS=(safetensors_fuzz config_fuzz tokenizer_fuzz jsonl_fuzz chat_template_fuzz http_fuzz grpc_fuzz)
(($# > 0)) && TARGETS=("$@")

GEN=()
command -v ninja >/dev/null && [[ ! -f "$BUILD_DIR/CMakeCache.txt" || -f "$BUILD_DIR/build.ninja" ]] && GEN=(-G Ninja)
cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DTESSERA_FUZZ=ON -DTESSERA_ENABLE_CUDA=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"
[[ "${TESSERA_FUZZ_BUILD_ONLY:-0}" == 1 ]] && exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$BUILD_DIR/artifacts"
# The server targets (http_fuzz, grpc_fuzz) keep their registry under this dir (in memory where /dev/shm
# exists); it goes when the script ends, also after a crash that skipped the targets' own cleanup.
parent=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && parent=/dev/shm
TESSERA_FUZZ_TMPDIR=$(mktemp -d "$parent/tessera_fuzz_run.XXXXXX")
export TESSERA_FUZZ_TMPDIR
trap 'rm -rf "$TESSERA_FUZZ_TMPDIR"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
  args=(-max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=3072 -max_len=65536 -print_final_stats=1
        -artifact_prefix="$BUILD_DIR/artifacts/$t-")
  runs=${RUNS[$t]:-20000}
  if [[ "$SEED" == random ]]; then
    work="$BUILD_DIR/corpus/$t"
  else
    work="$TESSERA_FUZZ_TMPDIR/corpus/$t"
    args+=(-seed="$SEED" -runs="$runs")
  fi
  mkdir -p "$work"
  [[ -f ops/fuzz/dicts/$t.dict ]] && args+=(-dict=ops/fuzz/dicts/$t.dict)
  log="$BUILD_DIR/$t.log"
  started=$SECONDS
  if "$BUILD_DIR/ops/fuzz/$t" "${args[@]}" "$work" "ops/fuzz/corpus/$t" >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    capped=""
    [[ "$SEED" != random && "$execs" != "$runs" ]] && capped=" (stopped by the ${SECONDS_EACH} s cap)"
    echo "fuzz: $t ok: seed $SEED, $execs executions in $((SECONDS - started)) s$capped, $cov"
  else
    echo "fuzz: $t FAILED (log: $log, input: $BUILD_DIR/artifacts/$t-*)"
    tail -40 "$log"
    failed+=("$t")
  fi
done
((${#failed[@]} == 0)) || { echo "fuzz: failures: ${failed[*]}"; exit 1; }
