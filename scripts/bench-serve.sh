#!/usr/bin/env bash
# The serving measurements of docs/benchmarks-serve.md, in one run:
#  (a) one stream through `troupe serve` vs `troupe bench engine` single-stream (stories15M, f32);
#  (b) 32 concurrent streams vs one on stories110M (f32), one stage, 2 engine threads;
#  (c) the same with a 2-stage pipeline (1 engine thread per stage: 2 threads in all).
# Every server is started here on 127.0.0.1 with an ephemeral port and stopped afterwards.
# Usage: scripts/bench-serve.sh [--prompt-len L] [--gen-len G] [--rounds N] [--only a|b|c]
set -euo pipefail
cd "$(dirname "$0")/.."
troupe=build/bin/troupe
prompt_len=128 gen_len=128 rounds=1 only=abc
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt-len) prompt_len="$2"; shift 2 ;;
    --gen-len) gen_len="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
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

# The engine's single-stream figure on the same terms as the client's (prefill + decode time):
engine_e2e() {  # bench engine JSON -> end-to-end tok/s
  awk -v p="$prompt_len" -v g="$gen_len" -v pf="$(field "$1" prefill_tok_s)" -v d="$(field "$1" decode_tok_s)" \
    'BEGIN { printf "%.1f", g / (p / pf + g / d) }'
}
run_engine_15m() {
  "$troupe" bench engine --model "$m15" --batch 1 --threads 2 --prompt-len "$prompt_len" --gen-len "$gen_len" --runs 3 --json
}

if [[ $only == *a* ]]; then
echo "== (a) one stream, stories15M f32, 2 threads: serve vs engine (prompt $prompt_len, gen $gen_len) =="
# Each round sandwiches the server between two engine runs and compares it with their mean, so
# that a drift in the machine's speed during the round (other tenants) does not bias the ratio.
ratios=()
for round in $(seq 1 "$rounds"); do
  e1=$(run_engine_15m)
  start_server --model "$m15" --threads 2
  s=$(serve_load 1 8 --warmup 1)
  stop_server
  e2=$(run_engine_15m)
  st=$(field "$s" gen_tok_s) a=$(engine_e2e "$e1") b=$(engine_e2e "$e2")
  ee=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (a + b) / 2 }')
  ratio=$(awk -v a="$st" -v b="$ee" 'BEGIN { printf "%.2f", a / b }')
  ratios+=("$ratio")
  echo "round $round: serve gen_tok_s $(printf %.1f "$st") (ITL p50 $(field "$s" itl_ms_p50) ms, TTFT p50 $(field "$s" ttft_ms_p50) ms);" \
       "engine before/after: decode $(field "$e1" decode_tok_s)/$(field "$e2" decode_tok_s) tok/s," \
       "end to end $a/$b tok/s; ratio serve/engine(end to end) $ratio"
done
echo "(a) median ratio over $rounds rounds: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')"
fi

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

if [[ $only == *b* ]]; then
echo "== (b) 32 streams vs 1, stories110M f32, one stage, 2 threads (prompt $prompt_len, gen $gen_len) =="
run_scaling "(b)" --model "$m110" --threads 2
fi
if [[ $only == *c* ]]; then
echo "== (c) the same with 2 pipeline stages x 1 thread =="
run_scaling "(c)" --model "$m110" --stages 2 --threads 1
fi
