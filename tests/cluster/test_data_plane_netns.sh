#!/usr/bin/env bash
# The data plane between two test hosts (network namespaces from scripts/netns-hosts): an echo
# end on h1, the measuring end on h2, over UCX's TCP transport on the veths. Every ping-pong must
# come back (the bench fails otherwise) and a decode-sized message must take well under the
# ~1 s that a lost wake-up would cost (shared memory across namespaces did exactly that).
# Exit 77 (CTest: Skipped) where namespaces cannot be made.
set -euo pipefail
troupe=${1:?usage: test_data_plane_netns.sh TROUPE_BINARY}
source "$(dirname "$0")/netns_common.sh"
netns_setup trd 10.233.0

cleanup() { "$hosts" down "${opts[@]}" >/dev/null 2>&1 || true; }
trap cleanup EXIT
timeout 60 "$hosts" up 2 "${opts[@]}" >/dev/null

"$hosts" exec h1 timeout 90 "$troupe" bench data-plane --serve --host 10.233.0.11 --port 9300 \
  --net-devices eth0 --duration-s 80 > "$TROUPE_NETNS_DIR/echo.log" 2>&1 &
for _ in $(seq 1 100); do grep -q "echo listening" "$TROUPE_NETNS_DIR/echo.log" && break; sleep 0.1; done
grep -q "echo listening" "$TROUPE_NETNS_DIR/echo.log" || { echo "FAIL: the echo end did not start"; cat "$TROUPE_NETNS_DIR/echo.log"; exit 1; }

out=$("$hosts" exec h2 timeout 60 "$troupe" bench data-plane --connect 10.233.0.11:9300 --host 10.233.0.12 \
  --net-devices eth0 --rounds 50 --json 2>/dev/null | tail -n 1) || { echo "FAIL: the measuring end failed"; exit 1; }
echo "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
sizes = {s["name"]: s for s in r["sizes"]}
dec = sizes["decode 1 x dim"]
pre = sizes["prefill 512 x dim"]
assert dec["bytes"] == 768 * 4 and pre["bytes"] == 512 * 768 * 4, r
# A lost wake-up costs ~1 s per message; a working one costs tens of microseconds.
assert dec["one_way_us_p50"] < 20000, f"decode message one-way p50 {dec['one_way_us_p50']} us"
assert pre["one_way_us_p50"] < 200000, f"prefill message one-way p50 {pre['one_way_us_p50']} us"
print("PASS: data plane across namespaces, decode p50 %.0f us, prefill p50 %.0f us" %
      (dec["one_way_us_p50"], pre["one_way_us_p50"]))
PY
