#!/usr/bin/env bash
# CTest http/openai_sdk: starts `troupe serve --http-port 0` on 127.0.0.1 and runs openai_sdk.mjs
# (the official openai npm package) against it. Exits 77 (CTest: skipped, loudly) when node or
# the package is missing: scripts/setup.sh installs both.
# Usage: run_openai_sdk.sh TROUPE_BINARY MODEL.gguf
set -uo pipefail
bin=$1
model=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! command -v node >/dev/null; then
  echo "SKIPPED: node is not installed (run scripts/setup.sh)"
  exit 77
fi
if [ ! -f "$here/node_modules/openai/package.json" ]; then
  echo "SKIPPED: the openai npm package is not in $here/node_modules (run scripts/setup.sh)"
  exit 77
fi
if [ ! -f "$model" ]; then
  echo "FAILED: the model $model is missing"
  exit 1
fi
out=$(mktemp)
"$bin" serve --model "$model" --port 0 --http-port 0 --threads 1 >"$out" 2>"$out.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out" "$out.err"' EXIT
port=""
for _ in $(seq 1 600); do  # at most 60 s
  port=$(sed -n 's|.*HTTP API on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$out")
  [ -n "$port" ] && break
  if ! kill -0 $pid 2>/dev/null; then
    echo "FAILED: troupe serve exited"; cat "$out" "$out.err"; exit 1
  fi
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "FAILED: no 'HTTP API on' line from troupe serve"; cat "$out"; exit 1
fi
id=$(basename "$model"); id=${id%.*}
reference=$("$bin" generate --model "$model" --prompt "Once upon a time" -n 32 --threads 1 2>/dev/null)
node "$here/openai_sdk.mjs" "http://127.0.0.1:$port/v1" "$id" "$reference"
