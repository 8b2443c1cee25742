#!/usr/bin/env bash
# Multi-host serving against one process, in one run (docs/benchmarks.md, "Multi-host"):
#  (m) 16 concurrent streams: a 2-stage pipeline on two namespace hosts (1 engine thread per
#      stage, the head on a third host) vs `troupe serve` with 1 stage x 1 thread: aggregate tok/s;
#  (s) one stream: the same cluster vs `troupe serve` with 2 stages x 1 thread in one process.
# Synthetic stories110M-shape f32 model (troupe model synth). Rounds are interleaved (cluster,
# then the one-process server, each round); the script prints every round and the medians.
# Needs root (scripts/netns-hosts). Usage: scripts/bench-cluster.sh [--rounds N] [--prompt-len L]
#   [--gen-len G] [--streams S] [--micro-batches M]
# --micro-batches M: the cluster's [batching] micro_batches (in flight per replica; default 0 =
# one per stage).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
troupe="$root/build/bin/troupe"
rounds=3 prompt_len=64 gen_len=128 streams=16 micro_batches=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --prompt-len) prompt_len="$2"; shift 2 ;;
    --gen-len) gen_len="$2"; shift 2 ;;
    --streams) streams="$2"; shift 2 ;;
    --micro-batches) micro_batches="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bench-cluster.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$troupe" ] || { echo "bench-cluster.sh: build first" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "bench-cluster.sh: needs root (network namespaces)" >&2; exit 2; }
models=/tmp/troupe-synth
mkdir -p "$models"
m110="$models/troupe-synth-stories110M-f32-seed0.gguf"
[ -f "$m110" ] || "$troupe" model synth --shape stories110M --dtype f32 --out "$m110" >/dev/null

dir=/run/troupe-netns-bench
opts=(--prefix tbc --subnet 10.245.0 --dir "$dir")
work=$(mktemp -d /tmp/troupe-bench-cluster.XXXXXX)
server_pid=""
stop_server() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; fi; }
cleanup() {
  stop_server
  [ -f "$work/c.toml" ] && scripts/cluster down "$work/c.toml" --troupe "$troupe" >/dev/null 2>&1 || true
  scripts/netns-hosts down "${opts[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "flags: $(grep -m1 -o 'avx512[a-z_]*\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "model: $m110 (f32), prompt $prompt_len, gen $gen_len, $streams streams, $rounds rounds, micro_batches $micro_batches"

scripts/netns-hosts up 3 "${opts[@]}" --model "$m110" --stages 2 --threads 1 --troupe "$troupe" \
  >"$work/c.toml" 2>"$work/hosts.err" || { cat "$work/hosts.err" >&2; exit 1; }
sed -i "s/^\[listen\]/[batching]\nmax_running = 64\nmicro_batches = $micro_batches\n\n[listen]/" "$work/c.toml"
scripts/cluster up "$work/c.toml" --troupe "$troupe" >"$work/up.out" 2>&1 || { cat "$work/up.out" >&2; exit 1; }
grep -E '^(stage|client)' "$work/up.out"
head_host=$(sed -n 's/^client: \([0-9.]*\):.*/\1/p' "$work/up.out")
head_port=$(sed -n 's/^client: [0-9.]*:\([0-9]*\).*/\1/p' "$work/up.out")

start_server() {  # troupe serve ARGS on 127.0.0.1, an ephemeral port: sets $port
  local out="$work/serve.out"
  "$troupe" serve --host 127.0.0.1 --port 0 "$@" >"$out" 2>/dev/null &
  server_pid=$!
  for _ in $(seq 1 600); do
    grep -q "listening on" "$out" && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-cluster.sh: troupe serve $* exited" >&2; exit 1; }
    sleep 0.1
  done
  port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$out")
}
field() { sed -n "s/.*\"$2\": *\([0-9.eE+-]*\).*/\1/p" <<<"$1"; }
load() {  # HOST PORT CONCURRENCY REQUESTS [flags]: bench serve's JSON
  local h=$1 p=$2 c=$3 r=$4
  shift 4
  "$troupe" bench serve --host "$h" --port "$p" --concurrency "$c" --requests "$r" --prompt-len "$prompt_len" \
    --gen-len "$gen_len" --timeout-s 600 --json "$@"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# CPU seconds (user + system) a process has used so far; the load generator's through `times`.
clk=$(getconf CLK_TCK)
cpu_s() { awk -v t="$clk" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# children_s VAR: VAR = the CPU seconds of this shell's finished children (the load generator).
# `times` runs in this shell (a subshell would see no children); its second line is theirs.
children_s() {
  times >"$work/times"
  printf -v "$1" '%s' "$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%.2f", s }' "$work/times")"
}
# The node processes' pids from their pid files (scripts/cluster keeps them current; the keeper
# loop around each node has the same command line, so pgrep would find the loop).
run_dir=$(sed -n 's/^run_dir *= *"\(.*\)"/\1/p' "$work/c.toml" | head -1)
node_pid() { cat "$run_dir/$1.pid" 2>/dev/null || echo 0; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
pids=("$(node_pid h1)" "$(node_pid h2)" "$(node_pid h3)")

multi=() single=()
for round in $(seq 1 "$rounds"); do
  # (m) with the CPU each process used during it: where the second core goes.
  b=(); for p in "${pids[@]}"; do b+=("$(cpu_s "$p")"); done; children_s bl; t0=$(date +%s.%N)
  c16=$(load "$head_host" "$head_port" "$streams" "$streams" --warmup 1)
  t1=$(date +%s.%N); children_s al; a=(); for p in "${pids[@]}"; do a+=("$(cpu_s "$p")"); done
  start_server --model "$m110" --stages 1 --threads 1 --max-waiting 256
  sb=$(cpu_s "$server_pid"); children_s pbl; pt0=$(date +%s.%N)
  p16=$(load 127.0.0.1 "$port" "$streams" "$streams" --warmup 1)
  pt1=$(date +%s.%N); children_s pal; sa=$(cpu_s "$server_pid")
  stop_server
  echo "round $round: (m) CPU seconds during the run: cluster wall $(diff_s "$t0" "$t1") s: head $(diff_s "${b[0]}" "${a[0]}")," \
       "stage 0 node $(diff_s "${b[1]}" "${a[1]}"), stage 1 node $(diff_s "${b[2]}" "${a[2]}"), load generator $(diff_s "$bl" "$al");" \
       "one process wall $(diff_s "$pt0" "$pt1") s: server $(diff_s "$sb" "$sa"), load generator $(diff_s "$pbl" "$pal")"
  c1=$(load "$head_host" "$head_port" 1 4 --warmup 1)
  start_server --model "$m110" --stages 2 --threads 1
  p1=$(load 127.0.0.1 "$port" 1 4 --warmup 1)
  stop_server
  rm_=$(awk -v a="$(field "$c16" gen_tok_s)" -v b="$(field "$p16" gen_tok_s)" 'BEGIN { printf "%.2f", a / b }')
  rs=$(awk -v a="$(field "$c1" gen_tok_s)" -v b="$(field "$p1" gen_tok_s)" 'BEGIN { printf "%.2f", a / b }')
  multi+=("$rm_")
  single+=("$rs")
  echo "round $round: (m) $streams streams: cluster 2 hosts x 1 thread $(field "$c16" gen_tok_s) tok/s vs one process" \
       "1 stage x 1 thread $(field "$p16" gen_tok_s) tok/s: ratio $rm_"
  echo "round $round: (s) 1 stream: cluster $(field "$c1" gen_tok_s) tok/s (ITL p50 $(field "$c1" itl_ms_p50) ms) vs" \
       "one process 2 stages $(field "$p1" gen_tok_s) tok/s (ITL p50 $(field "$p1" itl_ms_p50) ms): ratio $rs"
done
echo "(m) median ratio over $rounds rounds: $(printf '%s\n' "${multi[@]}" | median) (target >= 1.7)"
echo "(s) median ratio over $rounds rounds: $(printf '%s\n' "${single[@]}" | median) (target >= 0.9)"
