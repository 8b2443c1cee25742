#!/usr/bin/env bash
# HTTP API vs client protocol (TCP) overhead, in one run against one `troupe serve` that listens
# on both (docs/benchmarks-serve.md): `troupe bench serve` closed loop, 1 stream and 32 streams,
# TCP and HTTP interleaved round by round (the first of the two alternating); prints the median of each and the HTTP/TCP ratios.
# Usage: scripts/bench-http.sh [--model PATH] [--rounds N] [--requests-1 M] [--requests-32 M]
#                              [--prompt-len L] [--gen-len G] [--tls]
# --tls: the HTTP API over HTTPS (a self-signed certificate made here with openssl; the bench client
# verifies it), against the plain client protocol.
set -euo pipefail
cd "$(dirname "$0")/.."
troupe=build/bin/troupe
model=../shared/models/TinyStories-656K-Q8_0.gguf
rounds=5 req1=128 req32=256 prompt_len=32 gen_len=128 tls=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --requests-1) req1="$2"; shift 2 ;;
    --requests-32) req32="$2"; shift 2 ;;
    --prompt-len) prompt_len="$2"; shift 2 ;;
    --gen-len) gen_len="$2"; shift 2 ;;
    --tls) tls=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bench-http.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$troupe" ] || { echo "bench-http.sh: build first (scripts/build.sh)" >&2; exit 2; }
out=$(mktemp)
work=$(mktemp -d)
tls_serve=() tls_bench=() scheme=http
if [ "$tls" = 1 ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  tls_serve=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
  tls_bench=(--https --cacert "$work/cert.pem")
  scheme=https
fi
"$troupe" serve --model "$model" --host 127.0.0.1 --port 0 --http-port 0 --threads 1 "${tls_serve[@]}" >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$out" "$work"' EXIT
tcp="" http=""
for _ in $(seq 1 600); do
  tcp=$(sed -n 's|.*listening on 127\.0\.0\.1:\([0-9]*\).*|\1|p' "$out")
  http=$(sed -n "s|.*HTTP API on $scheme://127\.0\.0\.1:\([0-9]*\).*|\1|p" "$out")
  [ -n "$tcp" ] && [ -n "$http" ] && break
  sleep 0.1
done
[ -n "$http" ] || { echo "bench-http.sh: the server did not start" >&2; exit 1; }
echo "model: $model | prompt $prompt_len tokens, max_tokens $gen_len, greedy | rounds: $rounds | HTTP over $scheme"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"
results=$(mktemp)
for c in 1 32; do
  n=$([ "$c" = 1 ] && echo "$req1" || echo "$req32")
  for r in $(seq 1 "$rounds"); do
    # Alternate which protocol goes first (ABBA), so neither always runs on a warmer server.
    order=(tcp http)
    [ $((r % 2)) = 1 ] || order=(http tcp)
    for proto in "${order[@]}"; do
      port=$([ "$proto" = tcp ] && echo "$tcp" || echo "$http")
      flags=()
      [ "$proto" = http ] && flags=(--http "${tls_bench[@]}")
      j=$("$troupe" bench serve --port "$port" "${flags[@]}" --concurrency "$c" --requests "$n" --prompt-len "$prompt_len" \
          --gen-len "$gen_len" --warmup 2 --timeout-s 600 --json)
      echo "$c $proto $j" >>"$results"
    done
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c, proto, j = line.split(" ", 2)
    rows.setdefault((int(c), proto), []).append(json.loads(j))
keys = ["gen_tok_s", "req_s", "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99"]
print(f"{'streams':>7} {'proto':>5} " + " ".join(f"{k:>12}" for k in keys) + "   (medians)")
med = {}
for (c, proto), js in sorted(rows.items()):
    med[(c, proto)] = {k: statistics.median(j[k] for j in js) for k in keys}
    errors = sum(j["errors"] for j in js)
    print(f"{c:>7} {proto:>5} " + " ".join(f"{med[(c, proto)][k]:>12.2f}" for k in keys) + (f"   errors={errors}" if errors else ""))
for c in sorted({c for c, _ in rows}):
    t, h = med[(c, "tcp")], med[(c, "http")]
    per_round = [hj["gen_tok_s"] / tj["gen_tok_s"] for tj, hj in zip(rows[(c, "tcp")], rows[(c, "http")])]
    print(f"{c} stream(s): HTTP/TCP gen tok/s {h['gen_tok_s'] / t['gen_tok_s']:.3f} (per round: "
          + ", ".join(f"{x:.3f}" for x in per_round) + f"), TTFT p50 {h['ttft_ms_p50'] / t['ttft_ms_p50']:.2f}x")
PY
rm -f "$results"
