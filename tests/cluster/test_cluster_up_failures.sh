#!/usr/bin/env bash
# scripts/cluster up when it cannot work, on two namespace hosts:
#  - a node whose host does not exist (an unused address of the subnet): a clear error naming the
#    node, its address and its line in the file; exit 1; nothing left running, no pid files.
#  - a cluster whose model does not exist: a node exits during start-up (or the head reports the
#    failure); up prints why with the log tail, stops every node it started, exits 1; nothing left.
# Exit 77 (CTest: Skipped) where namespaces cannot be made.
set -euo pipefail
troupe=${1:?usage: test_cluster_up_failures.sh TROUPE_BINARY}
source "$(dirname "$0")/netns_common.sh"
netns_setup tcu 10.243.0
cluster="$src/scripts/cluster"

work=$(mktemp -d /tmp/troupe-cluster-up-failures.XXXXXX)
cleanup() {
  # Only processes started for this test's files (their command lines hold its folder).
  pkill -KILL -f -- "--config $work/" 2>/dev/null || true
  "$hosts" down "${opts[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

timeout 60 "$hosts" up 2 "${opts[@]}" >/dev/null
key="$TROUPE_NETNS_DIR/id_ed25519"
run_dir="$TROUPE_NETNS_DIR/run"
echo 00112233445566778899aabbccddeeff > "$work/secret"

# write_file FILE WORKER_HOST: a head on h1 and a worker holding the only stage.
write_file() {
  cat > "$1" <<EOF
[cluster]
name = "tcu"
secret_file = "secret"
binary = "$troupe"
run_dir = "$run_dir"
join_timeout_ms = 20000

[model]
path = "$work/no-such-model.gguf"

[listen]
host = "10.243.0.11"
port = 7433

[[nodes]]
name = "h1"
host = "10.243.0.11"
role = "head"
net_devices = "eth0"
ssh = { identity_file = "$key" }

[[nodes]]
name = "far"
host = "$2"
net_devices = "eth0"
ssh = { identity_file = "$key" }

[[replicas]]
  [[replicas.stages]]
  node = "far"
  first_layer = 0
EOF
}

nothing_left() {  # FILE
  sleep 0.5
  if pgrep -f -- "--config $1 " >/dev/null; then fail "processes left: $(pgrep -af -- "--config $1 ")"; fi
  if compgen -G "$run_dir/*.pid" >/dev/null; then fail "pid files left: $(ls "$run_dir"/*.pid)"; fi
}

# ---- an unreachable host ----------------------------------------------------------------------------
write_file "$work/far.toml" 10.243.0.250
rc=0
timeout 120 "$cluster" up "$work/far.toml" --troupe "$troupe" --timeout 60 >"$work/far.out" 2>"$work/far.err" || rc=$?
cat "$work/far.out" "$work/far.err"
[ "$rc" -eq 1 ] || fail "up with an unreachable host exited $rc, expected 1"
grep -qF "cluster: cannot reach node far at 10.243.0.250:22 over ssh (far.toml:22)" "$work/far.err" \
  || fail "the error does not name the node, its address and line 22"
nothing_left "$work/far.toml"

# ---- a node that exits during start-up -------------------------------------------------------------
write_file "$work/dies.toml" 10.243.0.12
rc=0
timeout 150 "$cluster" up "$work/dies.toml" --troupe "$troupe" --timeout 60 >"$work/dies.out" 2>"$work/dies.err" || rc=$?
cat "$work/dies.out" "$work/dies.err"
[ "$rc" -eq 1 ] || fail "up with a missing model exited $rc, expected 1"
grep -Eq "cluster: node (h1|far) \(10\.243\.0\.1[12]\) exited during start-up; last lines of its log:|cluster: the head reports that the cluster failed to start:" \
  "$work/dies.err" || fail "up did not say which node exited or that the head failed"
grep -q "^  ." "$work/dies.err" || fail "up printed no log lines"
grep -q "cluster: stopping the nodes started so far" "$work/dies.err" || fail "up did not stop what it started"
nothing_left "$work/dies.toml"
# down after that has nothing to do.
out=$(timeout 120 "$cluster" down "$work/dies.toml" --troupe "$troupe") || fail "down after a failed up failed"
grep -q "nothing of tcu was running" <<<"$out" || fail "down found something running: $out"
echo "PASS: cluster up failures"
