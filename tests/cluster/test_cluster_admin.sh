#!/usr/bin/env bash
# The ADMIN CONSOLE of a multi-host head (3 namespace hosts: h1 head with stage 0, h2 worker with
# stage 1, h3 spare), through `troupe admin` from the host side:
#   - status --json: every node up with a recent heartbeat (from the head's heartbeat loop); both
#     stages' step times after traffic, the one on h2 included (it travels back with the steps);
#   - replica add: on the spare node by default, on the nodes named with nodes=...; the new
#     replica serves the engine's text; restart R.S rebuilds it and status counts the restart.
# Exit 77 (CTest: Skipped) where namespaces or the models are missing.
set -euo pipefail
troupe=${1:?usage: test_cluster_admin.sh TROUPE_BINARY MODELS_DIR}
models=${TROUPE_MODELS_DIR:-${2:?usage: test_cluster_admin.sh TROUPE_BINARY MODELS_DIR}}
source "$(dirname "$0")/netns_common.sh"
netns_setup tad 10.251.0
cluster="$src/scripts/cluster"
for f in stories260K.bin tok512.bin; do
  [ -f "$models/$f" ] || { echo "SKIP: $models/$f missing (TROUPE_MODELS_DIR)"; exit 77; }
done
m260="$models/stories260K.bin"
t260="$models/tok512.bin"

cluster_work cluster-admin
file="$work/admin.toml"

timeout 120 "$hosts" up 3 "${opts[@]}" >"$work/hosts.txt" || fail "netns-hosts up 3"
key="$TROUPE_NETNS_DIR/id_ed25519"
openssl rand -hex 32 >"$work/secret"
openssl rand -hex 24 >"$work/admin.token"
chmod 600 "$work/secret" "$work/admin.token"
addr() { echo "10.251.0.$((10 + ${1#h}))"; }
{
  echo "[cluster]"
  echo "name = \"admin\""
  echo "secret_file = \"$work/secret\""
  echo "binary = \"$troupe\""
  echo "run_dir = \"$run_dir\""
  echo "join_timeout_ms = 60000"
  echo "[model]"
  echo "path = \"$m260\""
  echo "tokenizer = \"$t260\""
  echo "[listen]"
  echo "host = \"$(addr h1)\""
  echo "port = 7433"
  echo "[batching]"
  echo "n_blocks = 256"
  echo "[admin]"
  echo "token_file = \"$work/admin.token\""
  for i in 1 2 3; do
    echo "[[nodes]]"
    echo "name = \"h$i\""
    echo "host = \"$(addr h$i)\""
    case $i in 1) echo 'role = "head"' ;; 2) echo 'role = "worker"' ;; 3) echo 'role = "spare"' ;; esac
    echo 'net_devices = "eth0"'
    echo "ssh = { identity_file = \"$key\" }"
  done
  echo "[[replicas]]"
  echo "  [[replicas.stages]]"
  echo "  node = \"h1\""
  echo "  first_layer = 0"
  echo "  last_layer = 3"
  echo "  [[replicas.stages]]"
  echo "  node = \"h2\""
  echo "  first_layer = 3"
} >"$file"

timeout 200 "$cluster" up "$file" --troupe "$troupe" --timeout 150 >"$work/up.out" 2>"$work/up.err" \
  || { cat "$work/up.out" "$work/up.err"; fail "cluster up"; }
cat "$work/up.out"

admin() { timeout 60 "$troupe" admin --host "$(addr h1)" --port 7433 --token-file "$work/admin.token" "$@"; }
# same PROMPT [SAMPLING...]: the cluster's text == troupe generate's.
same() {
  local prompt=$1 got want
  shift
  got=$(timeout 60 "$troupe" client --host "$(addr h1)" --port 7433 --prompt "$prompt" -n 48 "$@" 2>"$work/client.err") \
    || { cat "$work/client.err"; fail "client failed for '$prompt' $*"; }
  want=$("$troupe" generate --model "$m260" --tokenizer "$t260" --prompt "$prompt" -n 48 --threads 1 "$@" 2>/dev/null) \
    || fail "generate failed for '$prompt'"
  [ "$want" = "$prompt$got" ] || { echo "cluster : $prompt$got"; echo "generate: $want"; fail "text differs for '$prompt' $*"; }
}
# check NAME PYTHON: runs PYTHON on `status --json` (as s, nodes, stages, replicas) until it holds
# (10 s at most: a spare may join a moment after the head is ready); else fails with NAME.
check() {
  local i
  for i in $(seq 1 20); do
    admin status --json >"$work/status.json" || fail "admin status"
    python3 - "$work/status.json" "$2" 2>"$work/check.err" <<'PY' && return 0
import json, sys
s = json.load(open(sys.argv[1]))
nodes = {n["name"]: n for n in s["nodes"]}
stages = {t["name"]: t for t in s["stages"]}
replicas = s["replicas"]
exec(sys.argv[2])
PY
    sleep 0.5
  done
  cat "$work/status.json" "$work/check.err"
  fail "$1"
}

# ---- status: heartbeats and step times -----------------------------------------------------------
for p in "Once upon a time" "The little dog" "Lily and Ben went to the park"; do same "$p"; done
check "nodes, heartbeats or step times wrong" '
for name in ("h2", "h3"):
    n = nodes[name]
    assert n["up"], name
    assert n["pid"] > 0, name
    hb = n["last_heartbeat_ms"]
    assert hb is not None and 0 <= hb < 2000, (name, hb)   # heartbeats every 300 ms
assert nodes["h1"]["role"] == "head" and nodes["h1"]["last_heartbeat_ms"] == 0
assert stages["0.0"]["node"] == "h1" and stages["0.1"]["node"] == "h2", stages
for t in stages.values():
    assert t["step_ms"] is not None and 0 < t["step_ms"] < 1000, t   # the remote stage reports too
    assert t["restarts"] == 0, t
assert replicas[0]["health"] == "running" and replicas[0]["restarts"] == 0, replicas[0]
'
echo "status: heartbeats and step times of both stages"

# ---- replica add: on the spare node, then on named nodes --------------------------------------------
out=$(admin replica add weight=1) || fail "replica add"
echo "$out"
grep -qF "replica 1 added (2 stage(s) on h3,h3" <<<"$out" || fail "replica 1 is not on the spare h3: $out"
admin weight 0 0 >/dev/null || fail "weight 0 0"
same "Once upon a time"
same "The little dog" --temperature 0.8 --top-p 0.9 --seed 5
out=$(admin replica add nodes=h2,h1 weight=0) || fail "replica add nodes=h2,h1"
grep -qF "replica 2 added (2 stage(s) on h2,h1" <<<"$out" || fail "replica 2 is not on h2,h1: $out"
if admin replica add nodes=h9 2>"$work/h9.err"; then fail "replica add on an unknown node succeeded"; fi
grep -qF "no node named 'h9'" "$work/h9.err" || fail "no clear refusal for h9: $(cat "$work/h9.err")"
check "the added replicas are wrong in status" '
assert replicas[1]["completed"] == 2, replicas[1]
assert replicas[0]["completed"] == 3, replicas[0]
assert stages["1.0"]["node"] == "h3" and stages["1.1"]["node"] == "h3", stages
assert stages["2.0"]["node"] == "h2" and stages["2.1"]["node"] == "h1", stages
assert stages["1.1"]["step_ms"] is not None and stages["1.1"]["step_ms"] > 0, stages["1.1"]
'
# The added replica is supervised: restart 1.1 rebuilds it (on h3 again), status counts it.
admin restart 1.1 >/dev/null || fail "restart 1.1"
check "the restart of replica 1 is not counted" '
assert replicas[1]["restarts"] == 1 and replicas[1]["health"] == "running", replicas[1]
assert "operator restart" in replicas[1]["reason"], replicas[1]
assert stages["1.0"]["restarts"] == 1 and stages["0.0"]["restarts"] == 0, stages
'
same "Lily and Ben went to the park"
echo "replica add: on the spare, on named nodes, supervised"

timeout 120 "$cluster" down "$file" --troupe "$troupe" --grace 10 || fail "cluster down"
if pgrep -f -- "--config $file " >/dev/null; then fail "processes left after down"; fi
echo "PASS: cluster admin"
