#!/usr/bin/env bash
# The serving measurements of docs/benchmarks-serve.md, in one run:
#  (a) one stream through `troupe serve` vs `troupe bench engine` single-stream (stories15M, f32);
#  (b) 32 concurrent streams vs one on stories110M (f32), one stage, 2 engine threads;
#  (c) the same with a 2-stage pipeline (1 engine thread per stage: 2 threads in all).
# Every server is started here on 127.0.0.1 with an ephemeral port and stopped afterwards.
# Usage: scripts/bench-serve.sh [--prompt-len L] [--gen-len G] [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
troupe=build/bin/troupe
prompt_len=128 gen_len=128 rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt-len) prompt_len="$2"; shift 2 ;;
    --gen-len) gen_len="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "bench-serve.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$troupe" ] || { echo "bench-serve.sh: build first (scripts/build.sh)" >&2; exit 2; }
models=/tmp/troupe-synth
mkdir -p "$models"
for shape in stories15M stories110M; do
  f="$models/troupe-synth-$shape-f32-seed0.gguf"
  [ -f "$f" ] || "$troupe" model synth --shape "$shape" --dtype f32 --out "$f" >/dev/null
done
m15="$models/troupe-synth-stories15M-f32-seed0.gguf"
m110="$models/troupe-synth-stories110M-f32-seed0.gguf"

server_pid=""
stop_server() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; fi; }
trap stop_server EXIT

# start_server ARGS...: starts troupe serve, sets $port from its "listening on" line.
start_server() {
  local out; out=$(mktemp)
  "$troupe" serve --host 127.0.0.1 --port 0 "$@" >"$out" 2>/dev/null &
  server_pid=$!
  for _ in $(seq 1 600); do
    if grep -q "listening on" "$out"; then break; fi
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-serve.sh: troupe serve $* exited" >&2; exit 1; }
    sleep 0.1
  done
  port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$out")
  rm -f "$out"
  [ -n "$port" ] || { echo "bench-serve.sh: no port from troupe serve $*" >&2; exit 1; }
}

# field JSON NAME: a number from a one-line JSON object.
field() { sed -n "s/.*\"$2\": *\([0-9.eE+-]*\).*/\1/p" <<<"$1"; }

serve_load() {  # CONCURRENCY REQUESTS [extra flags]: prints bench serve's JSON
  local c="$1" r="$2"; shift 2
  "$troupe" bench serve --host 127.0.0.1 --port "$port" --concurrency "$c" --requests "$r" \
    --prompt-len "$prompt_len" --gen-len "$gen_len" --timeout-s 500 --json "$@"
}

echo "== (a) one stream, stories15M f32, 2 threads: serve vs engine (prompt $prompt_len, gen $gen_len) =="
for round in $(seq 1 "$rounds"); do
  start_server --model "$m15" --threads 2
  s=$(serve_load 1 8 --warmup 1)
  stop_server
  e=$("$troupe" bench engine --model "$m15" --batch 1 --threads 2 --prompt-len "$prompt_len" --gen-len "$gen_len" --runs 3 --json)
  st=$(field "$s" gen_tok_s) et=$(field "$e" decode_tok_s) ep=$(field "$e" prefill_tok_s)
  # The engine's single-stream figure on the same terms as the client's (prefill + decode time):
  ee=$(awk -v p="$prompt_len" -v g="$gen_len" -v pf="$ep" -v d="$et" 'BEGIN { printf "%.1f", g / (p / pf + g / d) }')
  echo "round $round: serve gen_tok_s $st (ITL p50 $(field "$s" itl_ms_p50) ms, TTFT p50 $(field "$s" ttft_ms_p50) ms);" \
       "engine decode $et tok/s, prefill $ep tok/s, end to end $ee tok/s;" \
       "ratio serve/engine(end to end) $(awk -v a="$st" -v b="$ee" 'BEGIN { printf "%.2f", a / b }')"
done

run_scaling() {  # LABEL serve-args...
  local label="$1"; shift
  for round in $(seq 1 "$rounds"); do
    start_server "$@"
    one=$(serve_load 1 4 --warmup 1)
    many=$(serve_load 32 32)
    stop_server
    echo "$label round $round:"
    echo "  1 stream:   $one"
    echo "  32 streams: $many"
    echo "  aggregate ratio 32/1: $(awk -v a="$(field "$many" gen_tok_s)" -v b="$(field "$one" gen_tok_s)" 'BEGIN { printf "%.2f", a / b }')"
  done
}

echo "== (b) 32 streams vs 1, stories110M f32, one stage, 2 threads (prompt $prompt_len, gen $gen_len) =="
run_scaling "(b)" --model "$m110" --threads 2
echo "== (c) the same with 2 pipeline stages x 1 thread =="
run_scaling "(c)" --model "$m110" --stages 2 --threads 1
