#!/usr/bin/env bash
# Runs every GPU test binary and benchmark of a bundle made by ops/gpu-bundle.sh, on a machine with an
# NVIDIA GPU (CUDA 13 runtime + cuBLAS and driver >= 580 installed there), and prints a table.
# Exit status: 0 when every test passed and every benchmark ran; non-zero otherwise (including tests
# that skipped because no GPU was usable, and libraries that could not be found).
#
# How a future session runs it (no GPU needed to build):
#   1. here:   ops/gpu-bundle.sh                    -> ./gpu-bundle (git-ignored, < 64 MiB)
#   2. device tool, ONE call with everything (a session may get only one: see ops/bench/RESULTS.md);
#      `timeout` keeps the tarball if the run is cut off, and $OUT brings back at most 8 files:
#        run(command="cd gpu-bundle && timeout 540 ./gpu-check.sh --out /tmp/r/d --demo-bf16 --demo-device-routing --serve --logits --peer
#                     --e2e --e2e-args '--bf16 --profile'; tar -czf $OUT/logs.tgz -C /tmp r",
#            carry=["gpu-bundle"], timeout_s=590)
#      (the peer needs the image's PyTorch 2.11 / transformers 5.x; --e2e-args "--config=builtin:small"
#      and --peer-args "--hidden 1024 ..." make a quicker smoke run)
#   3. copy the printed table and the numbers into ops/bench/RESULTS.md with the command and the device.
#
#   ./gpu-check.sh [--out DIR] [--no-tests] [--quick] [--serve] [--demo] [--demo-bf16] [--demo-device-routing] [--logits] [--peer] [--e2e] [--peer-args "..."] [--e2e-args "..."]
#     --serve: bench_serve against tessera-server --device cuda (builtin:tiny), with phase 4 (serving
#     while a fine-tune job trains): its `serve_during_train` and last lines.
#     --demo: the product demo (demo-run.sh: tessera-server --device cuda, two tenants fine-tune and are
#     served, isolation, rollback) with the bundle's services/ and backbones/builtin-tiny.
#     --demo-bf16: the same demo with --dtype bf16 (bf16 weights, overlays and KV caches; f32 masters).
#     --demo-device-routing: the bf16 demo with --decode-routing device (MoE grouping on the GPU).
#     --quick: tests only.  --logits: transformers writes a small Qwen3-MoE (hidden 1024, 4 layers, 16
#     experts top-4, width 384) as safetensors plus its logits in bf16 and in f32; Tessera loads the
#     same files and compares its logits (f32 reference: rel L2 <= 1e-3; bf16 reference: <= 5e-2; and
#     Tessera with bf16 weights (--bf16) against the bf16 reference: <= 5e-2).
#     --peer: run bench/torch_peer.py.  --e2e: run bin/bench_gpu_e2e after the peer, fed with
#     the peer's JSON and bench_gpu_grouped_gemm's grouped_vs_dense (its last line is the issue's
#     `train_speedup=... decode_speedup=... tenants64_ratio=... grouped_vs_dense=...`).
#   Order: tests, benchmarks, --peer, --e2e, then --serve, the demos, --logits: a run cut off by its
#     `timeout` keeps the headline numbers, and the summary (printed on TERM too) ends with a KILLED row.
#   Benchmarks: every bin/bench_gpu_* but bench_gpu_e2e, after the tests. bench_gpu_attention (first of
#     them) times both CUDA attention implementations and checks the tiled tensor-core kernels against
#     the row-wise ones; when it fails, times out (120 s) or its last line lacks `tiled_ok=1`, every later
#     step (the other benchmarks, --serve, the demos, --logits, --e2e) runs with
#     TESSERA_CUDA_ATTENTION=rowwise, and the summary says so in a `TESSERA_CUDA_ATTENTION` row.
#   Logs: DIR/<name>.log for every step, DIR/summary.txt (the table). DIR defaults to ./results.
set -uo pipefail
# The table of every step so far, also into $OUTDIR/summary.txt. A run cut off by `timeout` (TERM to the
# whole process group) still writes the table of what finished, with a last row saying where it stopped.
PrintSummary() {
  {
    echo
    printf '%-34s %-6s %8s  %s\n' "step" "status" "seconds" "result"
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo "gpu-check: $([[ $FAIL == 0 ]] && echo OK || echo FAILED)"
  } | tee "$OUTDIR/summary.txt"
}
trap 'FAIL=1; ROWS+=("$(printf "%-34s %-6s %8s  %s" "(cut off)" KILLED - "a signal stopped the run here")"); PrintSummary; exit 124' TERM INT
HERE=$(cd "$(dirname "$0")" && pwd)
OUTDIR="$HERE/results"
RUN_PEER=0
RUN_LOGITS=0
RUN_DEMO=0
RUN_DEMO_BF16=0
RUN_DEMO_ROUTING=0
RUN_SERVE=0
RUN_E2E=0
RUN_TESTS=1
QUICK=0
PEER_ARGS=${TESSERA_PEER_ARGS:-"--reps 3"}
E2E_ARGS=${TESSERA_E2E_ARGS:-""}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUTDIR=$2; shift 2 ;;
    --peer) RUN_PEER=1; shift ;;
    --logits) RUN_LOGITS=1; shift ;;
    --demo) RUN_DEMO=1; shift ;;
    --demo-bf16) RUN_DEMO_BF16=1; shift ;;
    --demo-device-routing) RUN_DEMO_ROUTING=1; shift ;;
    --serve) RUN_SERVE=1; shift ;;
    --quick) QUICK=1; shift ;;
    --no-tests) RUN_TESTS=0; shift ;;
    --e2e) RUN_E2E=1; shift ;;
    --peer-args) PEER_ARGS=$2; shift 2 ;;
    --e2e-args) E2E_ARGS=$2; shift 2 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
if (( QUICK && (RUN_SERVE || RUN_DEMO || RUN_DEMO_BF16 || RUN_DEMO_ROUTING || RUN_LOGITS || RUN_PEER || RUN_E2E) )); then
  echo "gpu-check: --quick runs the tests only; drop it to run --serve/--demo/--logits/--peer/--e2e" >&2
  exit 2
fi
mkdir -p "$OUTDIR"

# Our libraries first; then the CUDA 13 runtime libraries, which the bundle does not carry.
if [[ ! -d "$HERE/lib" && -f "$HERE/lib.tar.xz" ]]; then tar -C "$HERE" -xJf "$HERE/lib.tar.xz"; fi
if [[ ! -d "$HERE/bin" && -f "$HERE/bin.tar.xz" ]]; then tar -C "$HERE" -xJf "$HERE/bin.tar.xz"; fi
LIBPATH="$HERE/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d "$d" ]] && LIBPATH="$LIBPATH:$d"
done
if ! ls /usr/local/cuda/lib64/libcublasLt.so.13 >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so.13'; then
  # PyTorch's cu13 wheels ship cuBLAS and the runtime (nvidia/cu13/lib or nvidia/cublas/lib).
  PYLIB=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pat in ("nvidia/*/lib", "nvidia/cu13/lib"):
        for d in glob.glob(os.path.join(sp, pat)):
            if glob.glob(os.path.join(d, "libcublas*.so.13")) or glob.glob(os.path.join(d, "libcudart.so.13")):
                dirs.add(d)
print(":".join(sorted(dirs)))
PY
)
  [[ -n "$PYLIB" ]] && LIBPATH="$LIBPATH:$PYLIB"
fi
export LD_LIBRARY_PATH="$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TESSERA_SOURCE_DIR="$HERE"

echo "== gpu-check $(cat "$HERE/BUILD_INFO" 2>/dev/null | tr '\n' ' ')"
echo "== nvidia-smi"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
  --format=csv 2>&1 | tee "$OUTDIR/nvidia-smi.txt"
HAVE_GPU=0
nvidia-smi -L >/dev/null 2>&1 && HAVE_GPU=1

FAIL=0
ROWS=()
# Seconds since $1 (from `date +%s%N`), one decimal, without bc (not on every image).
elapsed() { local d=$(( ($(date +%s%N) - $1) / 100000000 )); echo "$((d / 10)).$((d % 10))"; }
row() { ROWS+=("$(printf '%-34s %-6s %8s  %s' "$1" "$2" "$3" "$4")"); }

# Unresolved libraries make every binary fail in confusing ways: report them first.
for f in "$HERE"/bin/*; do
  missing=$(ldd "$f" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
  if [[ -n "$missing" ]]; then
    row "$(basename "$f") (libraries)" FAIL - "missing: $missing"
    FAIL=1
  fi
done

for f in "$HERE"/bin/*_test; do
  [[ -x "$f" ]] || continue
  (( RUN_TESTS )) || break
  name=$(basename "$f")
  log="$OUTDIR/$name.log"
  t0=$(date +%s%N)
  "$f" --gtest_color=no >"$log" 2>&1
  rc=$?
  secs=$(elapsed "$t0")
  passed=$(grep -c '^\[       OK \]' "$log")
  failed=$(grep -c '^\[  FAILED  \].*(.*ms)' "$log")
  skipped=$(grep -c '^\[  SKIPPED \].*(.*ms)' "$log")
  status=PASS
  if (( rc != 0 || failed > 0 )); then status=FAIL; FAIL=1;
  elif (( passed == 0 && skipped > 0 )); then status=SKIP; (( HAVE_GPU )) && FAIL=1; fi
  detail="passed=$passed failed=$failed skipped=$skipped rc=$rc"
  (( skipped > 0 )) && detail="$detail ($(grep -m1 -o 'no CUDA device:.*' "$log" | cut -c1-80))"
  row "$name" "$status" "$secs" "$detail"
  (( failed > 0 )) && grep '^\[  FAILED  \].*(.*ms)' "$log" | head -20 | sed 's/^/    /'
done

if (( ! QUICK )); then
  for f in "$HERE"/bin/bench_gpu_*; do
    [[ -x "$f" ]] || continue
    name=$(basename "$f")
    [[ "$name" == bench_gpu_e2e ]] && continue  # runs last, after the peer
    log="$OUTDIR/$name.log"
    t0=$(date +%s%N)
    if [[ "$name" == bench_gpu_attention ]] && command -v timeout >/dev/null; then
      # Its tiled kernels are new: a hung kernel must not take the rest of the run with it.
      timeout -k 10 120 "$f" >"$log" 2>&1
    else
      "$f" >"$log" 2>&1
    fi
    rc=$?
    secs=$(elapsed "$t0")
    last=$(tail -1 "$log")
    status=PASS
    if (( rc != 0 )); then status=FAIL; FAIL=1; fi
    if grep -q '^SKIP' "$log"; then status=SKIP; (( HAVE_GPU )) && FAIL=1; fi
    row "$name" "$status" "$secs" "$last"
    grep -E '^(device|check|grouped|attn|note|FAILED) ' "$log" | sed 's/^/    /'
    if [[ "$name" == bench_gpu_attention ]] && { (( rc != 0 )) || [[ "$last" != *tiled_ok=1* ]]; }; then
      # The tiled attention kernels failed their check (or the benchmark did not finish): every later
      # step's CUDA backends (read at creation) use the row-wise kernels instead.
      export TESSERA_CUDA_ATTENTION=rowwise
      why="rc=$rc"
      (( rc == 124 || rc == 137 )) && why="$why (timed out)"
      [[ "$last" == *tiled_ok=0* ]] && why="$why, tiled_ok=0"
      [[ "$last" != *tiled_ok=* ]] && why="$why, no tiled_ok line"
      echo "    bench_gpu_attention: $why -> TESSERA_CUDA_ATTENTION=rowwise for every later step"
      row "TESSERA_CUDA_ATTENTION" NOTE - "=rowwise for every later step: bench_gpu_attention $why"
    fi
  done
  if (( RUN_PEER )); then
    log="$OUTDIR/torch_peer.log"
    t0=$(date +%s%N)
    # Without our LD_LIBRARY_PATH: PyTorch brings its own libraries and must not pick up ours.
    env -u LD_LIBRARY_PATH PYTHONUNBUFFERED=1 python3 "$HERE/bench/torch_peer.py" $PEER_ARGS --json-out "$OUTDIR/torch_peer.json" >"$log" 2>&1
    rc=$?
    secs=$(elapsed "$t0")
    status=PASS
    (( rc != 0 )) && { status=FAIL; FAIL=1; }
    row "torch_peer.py" "$status" "$secs" "$(grep '^peer_summary' "$log" | tail -1)"
    grep '^peer ' "$log" | sed 's/^/    /'
    (( rc != 0 )) && tail -20 "$log" | sed 's/^/    /'
  fi
  if (( RUN_E2E )) && [[ -x "$HERE/bin/bench_gpu_e2e" ]]; then
    log="$OUTDIR/bench_gpu_e2e.log"
    gvd=$(grep -h '^grouped_vs_dense=' "$OUTDIR/bench_gpu_grouped_gemm.log" 2>/dev/null | tail -1 | cut -d= -f2)
    peer_json=""
    [[ -f "$OUTDIR/torch_peer.json" ]] && peer_json="--peer-json=$OUTDIR/torch_peer.json"
    t0=$(date +%s%N)
    "$HERE/bin/bench_gpu_e2e" $peer_json --grouped-vs-dense="${gvd:-0}" $E2E_ARGS >"$log" 2>&1
    rc=$?
    secs=$(elapsed "$t0")
    status=PASS
    (( rc != 0 )) && { status=FAIL; FAIL=1; }
    if grep -q '^SKIP' "$log"; then status=SKIP; (( HAVE_GPU )) && FAIL=1; fi
    row "bench_gpu_e2e" "$status" "$secs" "$(tail -1 "$log")"
    grep '^e2e ' "$log" | sed 's/^/    /'
    (( rc != 0 )) && tail -20 "$log" | sed 's/^/    /'
  fi
  # The product checks after the headline numbers: if a run is cut off, the peer and e2e numbers exist.
  if (( RUN_SERVE )); then
    log="$OUTDIR/bench_serve_cuda.log"
    t0=$(date +%s%N)
    TESSERA_BACKBONE_PATH="$HERE/backbones" "$HERE/bin/bench_serve" --server-bin "$HERE/services/tessera-server" \
      --device cuda --backbone builtin:tiny --train-load-steps 3000 >"$log" 2>&1
    rc=$?
    status=PASS
    (( rc != 0 )) && { status=FAIL; FAIL=1; tail -15 "$log" | sed 's/^/    /'; }
    row "bench_serve (--device cuda)" "$status" "$(elapsed "$t0")" "$(tail -1 "$log")"
    grep -E '^serve_during_train|^  (1|8|64) |without the job|with the job|job: ' "$log" | sed 's/^/    /'
  fi
  demos=()  # dtype:decode-routing
  (( RUN_DEMO )) && demos+=(f32:host)
  (( RUN_DEMO_BF16 )) && demos+=(bf16:host)
  (( RUN_DEMO_ROUTING )) && demos+=(bf16:device)
  for demo in "${demos[@]}"; do
    dt=${demo%%:*}
    routing=${demo##*:}
    log="$OUTDIR/demo_cuda_${dt}_${routing}.log"
    t0=$(date +%s%N)
    TESSERA_BACKBONE_PATH="$HERE/backbones" DEMO_DEVICE=cuda DEMO_DTYPE=$dt DEMO_DECODE_ROUTING=$routing \
      bash "$HERE/demo-run.sh" "$HERE" >"$log" 2>&1
    rc=$?
    status=PASS
    (( rc != 0 )) && { status=FAIL; FAIL=1; tail -25 "$log" | sed 's/^/    /'; }
    row "demo (cuda --dtype $dt --decode-routing $routing)" "$status" "$(elapsed "$t0")" "rc=$rc"
    (( rc == 0 )) && sed -n '/Summary/,$p' "$log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /' | head -30
  done
  if (( RUN_LOGITS )); then
    wdir="$OUTDIR/logits-model"
    log="$OUTDIR/logits_peer.log"
    t0=$(date +%s%N)
    env -u LD_LIBRARY_PATH PYTHONUNBUFFERED=1 python3 "$HERE/bench/torch_peer.py" --hidden 1024 --layers 4 --experts 16 \
      --topk 4 --expert-width 384 --heads 8 --kv-heads 2 --head-dim 128 --vocab 32000 --skip-train --skip-generate \
      --save-dir "$wdir" --logits-out "$wdir/logits_bf16.f32" --logits-f32-out "$wdir/logits_f32.f32" >"$log" 2>&1
    rc=$?
    status=PASS
    (( rc != 0 )) && { status=FAIL; FAIL=1; tail -20 "$log" | sed 's/^/    /'; }
    row "logits: transformers writes" "$status" "$(elapsed "$t0")" "$(grep -m1 '^peer device' "$log" | cut -c1-90)"
    if (( rc == 0 )); then
      # Tessera-f32 vs transformers-f32 and -bf16; Tessera-bf16 (--bf16 weights) vs transformers-bf16.
      for ref in f32:1e-3:f32 bf16:5e-2:f32 bf16:5e-2:bf16; do
        IFS=: read -r name tol ours <<<"$ref"
        flag=""
        [[ $ours == bf16 ]] && flag=--bf16
        log="$OUTDIR/logits_${ours}_vs_$name.log"
        t0=$(date +%s%N)
        "$HERE/bin/bench_gpu_e2e" --config="$wdir/config.json" --weights="$wdir" --logits-ref="$wdir/logits_$name.f32" \
          --logits-tol="$tol" --logits-only $flag >"$log" 2>&1
        rc=$?
        status=PASS
        (( rc != 0 )) && { status=FAIL; FAIL=1; tail -5 "$log" | sed 's/^/    /'; }
        row "logits $ours vs transformers-$name" "$status" "$(elapsed "$t0")" "$(grep '^e2e logits' "$log" | cut -c12-)"
      done
    fi
    rm -rf "$wdir"
  fi
fi

PrintSummary
exit $FAIL
