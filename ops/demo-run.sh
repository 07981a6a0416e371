#!/usr/bin/env bash
# The Tessera demo (called by ops/demo.sh with the build directory as $1):
# a server on a fresh data dir, two tenants with their own synthetic tasks, a fine-tune each with live
# progress, before/after exact-match accuracy, isolation (one tenant's new version leaves the other's
# answers unchanged), a rollback with the next query served by the previous version, and a summary.
# Tunables (environment): DEMO_STEPS (default 120), DEMO_DEVICE (cpu), DEMO_DTYPE (f32 or bf16),
# DEMO_BACKBONE (builtin:tiny), DEMO_DECODE_ROUTING (host or device: tessera-server --decode-routing).
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
BIN="$BUILD/services"
STEPS=${DEMO_STEPS:-120}
DEVICE=${DEMO_DEVICE:-cpu}
DTYPE=${DEMO_DTYPE:-f32}
BACKBONE=${DEMO_BACKBONE:-builtin:tiny}
ROUTING=${DEMO_DECODE_ROUTING:-host}
for b in tessera-server tessera-admin tessera tessera-datagen; do
  [[ -x "$BIN/$b" ]] || { echo "demo: $BIN/$b not built (run ops/build.sh)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/tessera-demo.XXXXXX)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -INT "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
field() { grep -o "\"$1\":\"\\{0,1\\}[^\",}]*" | head -1 | sed 's/.*:"\{0,1\}//'; }  # tiny JSON getter

say "Starting tessera-server ($BACKBONE on $DEVICE, $DTYPE, decode routing: $ROUTING) on a fresh data dir: $WORK/data"
"$BIN/tessera-server" --data-dir "$WORK/data" --listen 127.0.0.1:0 --backbone "$BACKBONE" --device "$DEVICE" --dtype "$DTYPE" \
  --decode-routing "$ROUTING" \
  --metrics-listen 127.0.0.1:0 --max-concurrent-jobs 1 >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  grep -q "listening on port" "$WORK/server.out" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "demo: server failed:" >&2; tail -3 "$WORK/server.log" >&2; exit 1; }
  sleep 0.2
done
PORT=$(grep -o "listening on port [0-9]*" "$WORK/server.out" | awk '{print $4}')
MPORT=$(grep -o "metrics on port [0-9]*" "$WORK/server.out" | awk '{print $4}')
sed 's/\(tsk_[A-Za-z0-9]\{6\}\)[A-Za-z0-9_]*/\1.../' "$WORK/server.out"
export TESSERA_ADMIN_KEY=$(cat "$WORK/data/admin.key")
S=(--server "127.0.0.1:$PORT")
ADMIN() { "$BIN/tessera-admin" "${S[@]}" "$@"; }

say "Two tenants"
declare -A KEY TASK SECRET
TASK[acme]=cipher; SECRET[acme]=11
TASK[globex]=cipher; SECRET[globex]=22   # same format, another secret mapping
for t in acme globex; do
  KEY[$t]=$(ADMIN --json tenants create "$t" --display-name "$t demo" | field secret)
  echo "created tenant $t (task ${TASK[$t]}), API key ${KEY[$t]:0:10}..."
done
T() { local t=$1; shift; TESSERA_API_KEY=${KEY[$t]} "$BIN/tessera" "${S[@]}" --tenant "$t" "$@"; }

say "Each tenant's own task data (synthetic, secret per tenant)"
for t in acme globex; do
  "$BIN/tessera-datagen" --task "${TASK[$t]}" --secret "${SECRET[$t]}" --count 800 --seed 1 >"$WORK/$t-train.jsonl"
  "$BIN/tessera-datagen" --task "${TASK[$t]}" --secret "${SECRET[$t]}" --count 40 --seed 777 >"$WORK/$t-eval.jsonl"
  echo "$t: $(head -1 "$WORK/$t-train.jsonl")"
  T "$t" datasets upload "$WORK/$t-train.jsonl" --name "${TASK[$t]}-train"
done
DS_acme=$(T acme --json datasets list | field dataset_id)
DS_globex=$(T globex --json datasets list | field dataset_id)

acc() { T "$1" --json eval "$WORK/$1-eval.jsonl" --max-tokens 12 "${@:2}" | field accuracy; }
pct() { awk -v a="$1" 'BEGIN { printf "%.0f%%", 100 * a }'; }
say "Before fine-tuning (base experts): exact match on 40 held-out prompts"
declare -A BEFORE AFTER
for t in acme globex; do
  BEFORE[$t]=$(acc "$t")
  echo "$t: $(pct "${BEFORE[$t]}")"
done
PROBE="$(head -1 "$WORK/acme-eval.jsonl" | field prompt)"
GLOBEX_BEFORE=$(T globex --json generate "$PROBE" --max-tokens 12 | field text)
GLOBEX_SCORE_BEFORE=$(T globex --json score "$PROBE" | field total_logprob)

run_job() {
  local t=$1 ds=$2
  say "Fine-tuning $t: $STEPS steps, auto expert selection, auto-promote (live progress)"
  local t0=$SECONDS
  T "$t" jobs create --dataset "$ds" --max-steps "$STEPS" --batch-size 16 --seq-len 64 --learning-rate 0.01 \
    --warmup-steps 10 --max-experts 16 --relevance-threshold 0.3 --auto-promote --watch \
    | awk '/^step / { n++; if (n % 10 != 1 && $2 !~ /^([0-9]+)\/\1$/) next } { print; fflush() }'
  JOB_SECONDS[$t]=$((SECONDS - t0))
}
declare -A JOB_SECONDS
run_job acme "$DS_acme"

say "Isolation: acme's new version does not change globex's answers (same prompt, both tenants)"
GLOBEX_AFTER=$(T globex --json generate "$PROBE" --max-tokens 12 | field text)
GLOBEX_SCORE_AFTER=$(T globex --json score "$PROBE" | field total_logprob)
echo "globex on \"$PROBE\": before \"$GLOBEX_BEFORE\" / after \"$GLOBEX_AFTER\"; logprob $GLOBEX_SCORE_BEFORE / $GLOBEX_SCORE_AFTER"
if [[ "$GLOBEX_BEFORE" == "$GLOBEX_AFTER" && "$GLOBEX_SCORE_BEFORE" == "$GLOBEX_SCORE_AFTER" ]]; then ISOLATED=yes; else ISOLATED=NO; fi
echo "unchanged: $ISOLATED   (acme now answers \"$(T acme --json generate "$PROBE" --max-tokens 12 | field text)\"; acme's reference \"$(head -1 "$WORK/acme-eval.jsonl" | field completion)\")"

run_job globex "$DS_globex"

say "After fine-tuning: exact match on the same held-out prompts"
for t in acme globex; do
  AFTER[$t]=$(acc "$t")
  echo "$t: $(pct "${BEFORE[$t]}") -> $(pct "${AFTER[$t]}")"
done
ADMIN versions list --tenant acme

say "Rollback: acme goes back to its previous live version"
ADMIN rollback --tenant acme
SERVED=$(T acme --json generate "$(head -1 "$WORK/acme-eval.jsonl" | field prompt)" --max-tokens 8 | field expert_version)
echo "next acme query served by version $SERVED"
ROLLED=$(acc acme)
echo "acme accuracy after rollback: $(pct "$ROLLED")"

say "Runtime status and a few metrics"
ADMIN status
if command -v curl >/dev/null; then
  curl -s "http://127.0.0.1:$MPORT/metrics" | grep -E '^tessera_(jobs\{|job_queue_depth|resident_bytes|rpc_requests_total\{method="Inference/Generate")' | head -12
fi

say "Stopping the server"
kill -INT "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""

say "Summary"
printf '%-8s %-13s %-10s %-10s %-9s %s\n' TENANT TASK BEFORE AFTER JOB_SEC NOTE
printf '%-8s %-13s %-10s %-10s %-9s %s\n' acme "cipher#${SECRET[acme]}" "$(pct "${BEFORE[acme]}")" "$(pct "${AFTER[acme]}")" \
  "${JOB_SECONDS[acme]}" "rolled back -> served by v$SERVED, $(pct "$ROLLED")"
printf '%-8s %-13s %-10s %-10s %-9s %s\n' globex "cipher#${SECRET[globex]}" "$(pct "${BEFORE[globex]}")" \
  "$(pct "${AFTER[globex]}")" "${JOB_SECONDS[globex]}" "unchanged by acme's version: $ISOLATED"
echo "(data dir and logs: $WORK)"
