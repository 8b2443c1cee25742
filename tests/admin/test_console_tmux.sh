#!/usr/bin/env bash
# `troupe admin` driven in tmux (send-keys / capture-pane) against a live `troupe serve`: help,
# status, Tab completion of commands and replica names, drain, history, `watch status` refreshing in
# place; then the one-shot mode (status --json, drain 1) and a wrong token (refused, audit-logged).
# The last screen is kept as an artifact: ARTIFACT_DIR/console.txt.
set -euo pipefail
troupe=${1:?usage: test_console_tmux.sh TROUPE MODELS_DIR ARTIFACT_DIR}
models=${2:?}
artifacts=${3:?}
command -v tmux >/dev/null || { echo "SKIP: tmux is not installed (scripts/setup.sh installs it)"; exit 77; }
work=$(mktemp -d /tmp/troupe-admin-tmux.XXXXXX)
session="troupe-admin-$$"
source "$(dirname "$0")/admin_common.sh"
trap 'tmux kill-session -t "$session" 2>/dev/null || true; stop_serve; rm -rf "$work"' EXIT
mkdir -p "$artifacts"
start_serve "$troupe" "$models"

screen() { tmux capture-pane -p -t "$session" -S -60; }
# Waits until the pane shows TEXT (a fixed string), up to 10 s.
wait_for() {
  for _ in $(seq 1 100); do
    screen | grep -qF -- "$1" && return 0
    sleep 0.1
  done
  screen > "$artifacts/console.txt"
  fail "the console never showed '$1' (screen in $artifacts/console.txt)"
}
# Runs a console line: clears the pane's history first so that what follows is its output.
type_line() {
  tmux send-keys -t "$session" C-l
  tmux clear-history -t "$session"
  tmux send-keys -t "$session" -l "$1"
  tmux send-keys -t "$session" Enter
}

export HOME="$work"  # the history file goes here
tmux new-session -d -s "$session" -x 220 -y 50 \
  "$troupe admin --port $port --token-file $work/admin.token; echo CONSOLE-EXITED; sleep 30"
wait_for "troupe>"

# help lists the commands.
type_line "help"
wait_for "watch status"
screen | grep -qF "drain R" || fail "help does not list drain"
screen | grep -qF "replica add" || fail "help does not list replica add"

# status: both replicas active, four stages.
type_line "status"
wait_for "KV USED/FREE"
[ "$(screen | grep -cE '^[01] +active')" = 2 ] || { screen; fail "status does not show 2 active replicas"; }
screen | grep -qE '^1\.1 +local +\[3, 5\)' || fail "status does not show stage 1.1 with layers [3, 5)"

# Tab completion: a command, then (two candidates) the replica names listed, then one typed.
tmux send-keys -t "$session" C-l
tmux clear-history -t "$session"
tmux send-keys -t "$session" -l "dra"
tmux send-keys -t "$session" Tab
wait_for "troupe> drain"
tmux send-keys -t "$session" Tab
for _ in $(seq 1 50); do screen | grep -qE '^0  1  $|^0  1 *$' && break; sleep 0.1; done
screen | grep -qE '^0  1 *$' || { screen; fail "Tab after 'drain ' does not list the replicas 0 and 1"; }
tmux send-keys -t "$session" -l "0"
tmux send-keys -t "$session" Enter
wait_for "replica 0 drained: idle"

type_line "status"
wait_for "KV USED/FREE"
screen | grep -qE '^0 +idle' || { screen; fail "replica 0 is not idle after drain"; }

# History: Up brings back the last line.
tmux send-keys -t "$session" C-l
tmux clear-history -t "$session"
tmux send-keys -t "$session" Up
wait_for "troupe> status"
tmux send-keys -t "$session" C-u

# watch status: refreshes in place (one screen, not a scroll of them); any key stops it.
type_line "watch status"
wait_for "(watch: every 1 s"
sleep 2.5
# The visible pane (not the scrollback) holds one status screen.
[ "$(tmux capture-pane -p -t "$session" | grep -c 'REPLICA')" = 1 ] || { screen; fail "watch status does not redraw in place"; }
screen > "$artifacts/console.txt"
tmux send-keys -t "$session" q
wait_for "troupe>"

type_line "quit"
wait_for "CONSOLE-EXITED"
grep -qx "drain 0" "$work/.troupe_admin_history" || fail "the history file does not hold 'drain 0'"

# One-shot mode: status --json is one object with nodes, replicas (a list) and stages.
"$troupe" admin --port "$port" --token-file "$work/admin.token" status --json > "$work/status.json"
python3 - "$work/status.json" <<'PY' || fail "status --json is not the documented object"
import json, sys
s = json.load(open(sys.argv[1]))
assert isinstance(s["nodes"], list) and len(s["nodes"]) == 1, s["nodes"]
assert isinstance(s["replicas"], list) and [r["state"] for r in s["replicas"]] == ["idle", "active"], s["replicas"]
assert [t["name"] for t in s["stages"]] == ["0.0", "0.1", "1.0", "1.1"], s["stages"]
assert [(r["health"], r["restarts"]) for r in s["replicas"]] == [("running", 0), ("running", 0)], s["replicas"]
assert s["nodes"][0]["last_heartbeat_ms"] == 0, s["nodes"]
PY
"$troupe" admin --port "$port" --token-file "$work/admin.token" drain 1 | grep -qF "replica 1 drained" ||
  fail "one-shot drain 1"

# A wrong token: refused (exit 1, the reason on stderr), and the audit log says who and what.
echo "not-the-token" > "$work/wrong.token"
chmod 600 "$work/wrong.token"
if "$troupe" admin --port "$port" --token-file "$work/wrong.token" undrain 1 2> "$work/wrong.err"; then
  fail "a wrong token was accepted"
fi
grep -qF "unauthorized: wrong admin token" "$work/wrong.err" || fail "no clear refusal: $(cat "$work/wrong.err")"
grep -q 'command="undrain 1" outcome="refused: wrong admin token"' "$work/serve.err" || fail "the refusal is not audit-logged"
# With API keys: the admin token lets the console in without a key (admin frames only); a wrong
# admin token is refused at the hello.
stop_serve
echo "client-key-1 name=alice" > "$work/keys"
chmod 600 "$work/keys"
mv "$work/serve.err" "$work/serve-1.err"
start_serve "$troupe" "$models" --api-key-file "$work/keys"
"$troupe" admin --port "$port" --token-file "$work/admin.token" status --json | grep -qF '"replicas"' ||
  fail "the admin token does not let the console in when API keys are required"
if "$troupe" admin --port "$port" --token-file "$work/wrong.token" status 2> "$work/wrong2.err"; then
  fail "a wrong admin token got in"
fi
grep -qF "unauthorized: invalid admin token" "$work/wrong2.err" || fail "no clear refusal: $(cat "$work/wrong2.err")"
echo "PASS: console driven in tmux (help, status, Tab completion, drain, history, watch), one-shot, refusal"
