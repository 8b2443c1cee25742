#!/usr/bin/env bash
# troupe against llama.cpp on this machine: the same synthetic GGUF files (stories110M shape,
# written by `troupe model synth`), the same thread count, interleaved rounds (per figure, troupe
# then llama.cpp in odd rounds, llama.cpp then troupe in even ones, so that neither always runs
# first on a machine whose speed drifts), medians with min/max, as a ratio table troupe / llama.cpp:
#   decode batch 1      troupe bench engine (prompt 1)      vs llama-bench -n G (tg)
#   prefill 512         troupe bench engine (prompt 512)    vs llama-bench -p 512 (pp)
#   decode batch 8, 32  troupe bench engine (prompt 128)    vs llama-batched-bench -npp 128 -npl 8,32 (S_TG)
#   serving 1, 32       troupe serve --http-port            vs llama-server -np 32 (/completion), one load
#                       generator (below) sending both the same token prompts, greedy, G tokens each
# Single-stream decode is memory-bound, so a second table sets it against the memory: weight bytes
# read per token (the file less its token embedding) x tok/s, against `troupe bench memory`'s read
# bandwidth measured in every round.
# DIR is a llama.cpp build made outside this repository from its public source (bin/llama-bench,
# bin/llama-batched-bench, bin/llama-server); nothing is downloaded or vendored here.
# Usage: scripts/bench-peers.sh --llama-cpp DIR [--rounds N] [--threads T] [--dtypes "f32 q8_0 q4_0"]
#          [--gen-len G] [--only engine|serve] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
troupe=build/bin/troupe
llama="" rounds=3 threads=2 dtypes="f32 q8_0 q4_0" gen_len=64 only="engine serve" out=bench-peers.md
while [ $# -gt 0 ]; do
  case "$1" in
    --llama-cpp) llama="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --dtypes) dtypes="$2"; shift 2 ;;
    --gen-len) gen_len="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench-peers.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$llama" ] || { echo "bench-peers.sh: --llama-cpp DIR is required (a llama.cpp build directory)" >&2; exit 2; }
bin="$llama/bin"
for b in llama-bench llama-batched-bench llama-server; do
  [ -x "$bin/$b" ] || { echo "bench-peers.sh: $bin/$b missing: build llama.cpp's $b target in $llama" >&2; exit 2; }
done
[ -x "$troupe" ] || { echo "bench-peers.sh: build troupe first (scripts/build.sh)" >&2; exit 2; }
models=/tmp/troupe-synth
mkdir -p "$models"
work=$(mktemp -d)
server_pid=""
stop_server() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; fi; }
trap 'stop_server; rm -rf "$work"' EXIT

# field JSON NAME: a number from a one-line JSON object.
field() { sed -n "s/.*\"$2\": *\([0-9.eE+-]*\).*/\1/p" <<<"$1" | head -1; }
record() { echo "$1 $2 $3" >>"$work/samples"; }  # FIGURE SIDE VALUE

# ---- the load generator: N concurrent streams, the same token prompts for both servers ----------
cat >"$work/load.py" <<'EOF'
import json, sys, threading, time, urllib.request
kind, port, conc, n_req, plen, glen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def prompt(i):  # deterministic ids away from the special ones
    return [1] + [3 + (i * 7919 + j * 104729) % 31000 for j in range(plen - 1)]
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        return json.loads(r.read())
model = None
if kind == "troupe":
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=60) as r:
        model = json.loads(r.read())["data"][0]["id"]
def one(i):
    if kind == "troupe":
        r = post("/v1/completions", {"model": model, "prompt": prompt(i), "max_tokens": glen, "temperature": 0})
        return r["usage"]["completion_tokens"]
    r = post("/completion", {"prompt": prompt(i), "n_predict": glen, "temperature": 0, "top_k": 1,
                             "ignore_eos": True, "cache_prompt": False})
    return r["tokens_predicted"]
one(10**6)  # warm-up
lock, nxt, toks = threading.Lock(), [0], [0]
def worker():
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= n_req: return
        t = one(i)
        with lock: toks[0] += t
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts: t.start()
for t in ts: t.join()
print(f"{toks[0] / (time.time() - t0):.2f}")
EOF

wait_http() {  # PORT: until the server answers /health
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-peers.sh: server exited" >&2; exit 1; }
    sleep 0.25
  done
  echo "bench-peers.sh: server on port $1 did not come up" >&2; exit 1
}

serve_side() {  # SIDE MODEL DTYPE: one server, 1 then 32 streams
  local side="$1" m="$2" dt="$3" port=$((20000 + RANDOM % 20000)) ctx
  ctx=$((32 * (128 + gen_len)))
  if [ "$side" = troupe ]; then
    "$troupe" serve --model "$m" --threads "$threads" --host 127.0.0.1 --port 0 --http-port "$port" >/dev/null 2>&1 &
  else
    "$bin/llama-server" -m "$m" -t "$threads" -tb "$threads" -np 32 -c "$ctx" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
  fi
  server_pid=$!; wait_http "$port"
  for c in 1 32; do record "serve_${c}_$dt" "$side" "$(python3 "$work/load.py" "$side" "$port" "$c" "$c" 128 "$gen_len")"; done
  stop_server
}

single_side() {  # SIDE MODEL DTYPE: decode batch 1 and prefill 512
  local side="$1" m="$2" dt="$3" j
  if [ "$side" = troupe ]; then
    j=$("$troupe" bench engine --model "$m" --batch 1 --threads "$threads" --prompt-len 1 --gen-len "$gen_len" --runs 1 --json)
    record "decode_1_$dt" troupe "$(field "$j" decode_tok_s)"
    j=$("$troupe" bench engine --model "$m" --batch 1 --threads "$threads" --prompt-len 512 --gen-len 1 --runs 1 --json)
    record "prefill_512_$dt" troupe "$(field "$j" prefill_tok_s)"
  else
    j=$("$bin/llama-bench" -m "$m" -t "$threads" -p 512 -n "$gen_len" -r 1 -o jsonl 2>/dev/null)
    record "prefill_512_$dt" llama "$(field "$(grep '"n_prompt": 512' <<<"$j")" avg_ts)"
    record "decode_1_$dt" llama "$(field "$(grep "\"n_gen\": $gen_len" <<<"$j")" avg_ts)"
  fi
}

batched_side() {  # SIDE MODEL DTYPE: decode batch 8 and 32 after 128-token prompts
  local side="$1" m="$2" dt="$3" b
  if [ "$side" = troupe ]; then
    "$troupe" bench engine --model "$m" --batch 8,32 --threads "$threads" --prompt-len 128 --gen-len "$gen_len" --runs 1 \
      --json >"$work/t.jsonl"
    for b in 8 32; do record "decode_${b}_$dt" troupe "$(field "$(grep "\"batch\":$b," "$work/t.jsonl")" decode_tok_s)"; done
  else
    "$bin/llama-batched-bench" -m "$m" -t "$threads" -tb "$threads" -c $((32 * (128 + gen_len))) -npp 128 -ntg "$gen_len" \
      -npl 8,32 --output-format jsonl >"$work/l.jsonl" 2>/dev/null
    for b in 8 32; do record "decode_${b}_$dt" llama "$(field "$(grep "\"pl\": $b," "$work/l.jsonl")" speed_tg)"; done
  fi
}

: >"$work/samples"
for dt in $dtypes; do
  f="$models/troupe-synth-stories110M-$dt-seed0.gguf"
  [ -f "$f" ] || "$troupe" model synth --shape stories110M --dtype "$dt" --seed 0 --quiet --out "$f"
done
# weight_bytes FILE: bytes a decode step reads, the file less its token embedding (one row of
# which a token reads); the q4_0x16 copy that Q4_0 decodes from is the same size.
weight_bytes() {
  local size embd
  size=$(stat -c %s "$1")
  # The embedding's bytes: from its offset to the next tensor's (or the file's end).
  embd=$("$troupe" model info "$1" | awk -v end="$size" '
    /^  [^ ]+ +[a-z0-9_]+ +\[/ && $NF ~ /^[0-9]+$/ { off[$1] = $NF }
    END { o = off["token_embd.weight"]; n = end; for (k in off) if (off[k] > o && off[k] < n) n = off[k]; print n - o }')
  echo $((size - embd))
}
for round in $(seq 1 "$rounds"); do
  j=$("$troupe" bench memory --threads "$threads" --json)
  record membw troupe "$(field "$j" read_gb_s)"
  order="troupe llama"
  [ $((round % 2)) -eq 0 ] && order="llama troupe"
  for dt in $dtypes; do
    f="$models/troupe-synth-stories110M-$dt-seed0.gguf"
    echo "bench-peers.sh: round $round/$rounds $dt (first: ${order%% *})" >&2
    if [[ $only == *engine* ]]; then
      for side in $order; do single_side "$side" "$f" "$dt"; done
      for side in $order; do batched_side "$side" "$f" "$dt"; done
    fi
    if [[ $only == *serve* ]]; then
      for side in $order; do serve_side "$side" "$f" "$dt"; done
    fi
  done
done

# ---- the table: per figure, median (min-max) of each side and the ratio of the medians -----------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|avx512_bf16|avx512_fp16|amx_int8)$' | tr '\n' ' ')
kernels=$("$troupe" bench engine --help >/dev/null 2>&1; "$troupe" bench engine --model "$models/troupe-synth-stories110M-$(set -- $dtypes; echo "$1")-seed0.gguf" --batch 1 --threads 1 --prompt-len 1 --gen-len 1 --runs 1 --json | sed -n 's/.*"kernels":"\([^"]*\)".*/\1/p')
{
  echo "CPU: $cpu; flags: $flags; troupe kernels: $kernels; threads: $threads; rounds: $rounds (interleaved, the side that goes first alternating);"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the end; > $threads means the cores were shared)"
  echo
  echo "| figure (tok/s, stories110M) | troupe median (min-max) | llama.cpp median (min-max) | troupe / llama.cpp |"
  echo "|---|---:|---:|---:|"
  for dt in $dtypes; do echo "$dt $(weight_bytes "$models/troupe-synth-stories110M-$dt-seed0.gguf")"; done >"$work/bytes"
  python3 - "$work/samples" "$work/bytes" <<'EOF'
import sys, statistics as st
from collections import defaultdict
d = defaultdict(lambda: defaultdict(list))
order = []
for line in open(sys.argv[1]):
    fig, side, v = line.split()
    if fig not in order: order.append(fig)
    try: d[fig][side].append(float(v))
    except ValueError: pass
names = {"decode_1": "decode, batch 1", "prefill_512": "prefill, 512 tokens", "decode_8": "decode, batch 8",
         "decode_32": "decode, batch 32", "serve_1": "serving, 1 stream", "serve_32": "serving, 32 streams"}
for fig in order:
    if fig == "membw": continue
    parts = fig.split("_")  # FIGURE_N_DTYPE, the dtype itself may hold "_" (q8_0)
    base, dt = "_".join(parts[:2]), "_".join(parts[2:])
    t, l = d[fig]["troupe"], d[fig]["llama"]
    cell = lambda v: f"{st.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "n/a"
    ratio = f"{st.median(t) / st.median(l):.2f}x" if t and l else "n/a"
    print(f"| {names.get(base, base)} {dt} | {cell(t)} | {cell(l)} | {ratio} |")
bw = st.median(d["membw"]["troupe"])
print()
print(f"Single-stream decode against the memory: `troupe bench memory --threads` read {bw:.1f} GB/s (median of the rounds)")
print()
print("| dtype | weight bytes / token | troupe GB/s (% of read) | llama.cpp GB/s (% of read) |")
print("|---|---:|---:|---:|")
for line in open(sys.argv[2]):
    dt, nbytes = line.split()
    t, l = d[f"decode_1_{dt}"]["troupe"], d[f"decode_1_{dt}"]["llama"]
    gb = lambda v: f"{st.median(v) * int(nbytes) / 1e9:.1f} ({100 * st.median(v) * int(nbytes) / 1e9 / bw:.0f} %)" if v else "n/a"
    print(f"| {dt} | {int(nbytes) / 1e6:.1f} MB | {gb(t)} | {gb(l)} |")
EOF
} | tee "$out"
echo "bench-peers.sh: table written to $out" >&2
