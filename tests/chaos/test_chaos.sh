#!/usr/bin/env bash
# One chaos scenario (scripts/chaos/run) on a 2-stage stories260K cluster of namespace hosts with a
# spare, under 8 concurrent streams whose every token is checked against the engine: the report
# must be green (every request completes, no token differs from `troupe generate`'s; kill: the
# streams' next tokens within 1 s; stop/partition: the hang or cut detected within 1.5 s; healthy:
# no restart at all; disconnect: 200 clients drop their connections mid-stream, then no KV block is
# held and a verified request is served). Exit 77 (CTest: Skipped) where namespaces or the models
# are missing. TROUPE_CHAOS_LIMIT_S (150): the run's time limit.
set -euo pipefail
troupe=${1:?usage: test_chaos.sh TROUPE_BINARY MODELS_DIR SCENARIO PREFIX SUBNET [OPTIONS...]}
models=${TROUPE_MODELS_DIR:-${2:?}}
scenario=${3:?} prefix=${4:?} subnet=${5:?}
shift 5
source "$(dirname "$0")/../cluster/netns_common.sh"
netns_setup "$prefix" "$subnet"
for f in stories260K.bin tok512.bin; do
  [ -f "$models/$f" ] || { echo "SKIP: $models/$f missing (TROUPE_MODELS_DIR)"; exit 77; }
done
command -v python3 >/dev/null || { echo "SKIP: python3 missing (scripts/setup.sh installs it)"; exit 77; }
out=$(mktemp -d "/tmp/troupe-chaos-test-$scenario.XXXXXX")
trap 'rm -rf "$out"' EXIT
rc=0
timeout "${TROUPE_CHAOS_LIMIT_S:-150}" "$src/scripts/chaos/run" --troupe "$troupe" --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --out "$out" --prefix "$prefix" --subnet "$subnet" "$@" "$scenario" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FAIL: scenario $scenario is not green (exit $rc)"
  cat "$out/report.json" 2>/dev/null || true
  for l in "$out/work/$scenario"/*.log "$out/work/$scenario"/load.err; do
    [ -f "$l" ] && { echo "==> $l"; grep -E "warn|error|recover|rebuil|lost" "$l" | tail -n 20; }
  done
  exit 1
fi
echo "PASS: $scenario"
