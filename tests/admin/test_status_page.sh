#!/usr/bin/env bash
# The status page (GET / on the HTTP port) in headless Chromium against a live `troupe serve` with
# some traffic: the DOM shows both replicas, their stages and the charts; without the token the page
# asks for it. The screenshot is kept as an artifact: ARTIFACT_DIR/status_page.png.
set -euo pipefail
troupe=${1:?usage: test_status_page.sh TROUPE MODELS_DIR ARTIFACT_DIR}
models=${2:?}
artifacts=${3:?}
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || { echo "SKIP: chromium is not installed (scripts/setup.sh installs it)"; exit 77; }
work=$(mktemp -d /tmp/troupe-admin-page.XXXXXX)
source "$(dirname "$0")/admin_common.sh"
trap 'stop_serve; rm -rf "$work"' EXIT
mkdir -p "$artifacts"
start_serve "$troupe" "$models" --http-port 0
[ -n "$http_port" ] || fail "no HTTP port"
token=$(cat "$work/admin.token")

# Traffic, so that the replicas have throughput and latency to chart.
clients=()
for i in 1 2 3 4 5 6; do
  "$troupe" client --port "$port" --prompt "Once upon a time" -n 64 > /dev/null 2>&1 &
  clients+=($!)
done
for c in "${clients[@]}"; do wait "$c" || fail "a client failed"; done
sleep 2.5  # two history samples at least

browse() {  # browse URL OUT_FLAG...
  local url=$1
  shift
  timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$work/profile" --virtual-time-budget=6000 --window-size=1280,1100 "$@" "$url" 2> "$work/chromium.err"
}
url="http://127.0.0.1:$http_port/#token=$token"
browse "$url" --dump-dom > "$work/dom.html" || fail "chromium --dump-dom failed: $(tail -3 "$work/chromium.err")"
cp "$work/dom.html" "$artifacts/status_page.html"
for text in "replica 0" "replica 1" "stage 0.0" "stage 1.1" "stories260K.bin" "local" "<polyline"; do
  grep -qF "$text" "$work/dom.html" || fail "the page does not show '$text' (DOM in $artifacts/status_page.html)"
done
[ "$(grep -o 'class="l active">active' "$work/dom.html" | wc -l)" = 2 ] || fail "the page does not show 2 active replicas"
[ "$(grep -o 'class="l running" title="">running' "$work/dom.html" | wc -l)" = 2 ] || fail "the page does not show 2 running replicas"
# Every stage served, so each shows its measured step time (ms, 2 decimals), not "-".
for st in 0.0 0.1 1.0 1.1; do
  grep -qE "stage ${st%.*}\\.${st#*.}</td><td class=\"l\">local</td><td>\[[0-9], [0-9]\)</td><td>[0-9]+</td><td>[0-9]+\.[0-9]{2}</td><td>0</td>" \
    "$work/dom.html" || fail "the page shows no step time for stage $st (DOM in $artifacts/status_page.html)"
done
grep -qE '<td>0 ms ago</td>' "$work/dom.html" || fail "the page shows no heartbeat for the node"
browse "$url" --screenshot="$artifacts/status_page.png" > /dev/null || fail "chromium --screenshot failed"
[ -s "$artifacts/status_page.png" ] || fail "no screenshot"

# Without the token the page holds no data and asks for it; /admin/status answers 401.
browse "http://127.0.0.1:$http_port/" --dump-dom > "$work/dom-notoken.html" || fail "chromium failed"
grep -qF "this page needs the admin token" "$work/dom-notoken.html" || fail "the page without a token does not ask for it"
grep -qF "replica 0" "$work/dom-notoken.html" && fail "the page shows replicas without the token"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/admin/status")
[ "$code" = 401 ] || fail "/admin/status without the token answered $code"
# Any console command as JSON, with the token.
reply=$(curl -s -X POST -H "Authorization: Bearer $token" -d '{"command": ["weight", "1", "0.5"]}' \
  "http://127.0.0.1:$http_port/admin/command")
echo "$reply" | grep -qF "replica 1 weight 0.5" || fail "POST /admin/command: $reply"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"command": ["drain", "0"]}' "http://127.0.0.1:$http_port/admin/command")
[ "$code" = 401 ] || fail "POST /admin/command without the token answered $code"
echo "PASS: status page rendered by headless Chromium (DOM checked, screenshot in $artifacts/status_page.png)"
