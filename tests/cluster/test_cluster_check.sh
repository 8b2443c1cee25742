#!/usr/bin/env bash
# `troupe cluster check` and `troupe cluster plan` on files made here (no namespaces, no model):
# a good three-node file passes and plans as written; each bad file (unknown node in a stage,
# overlapping layers, missing layers, duplicate node names, two heads) exits 2 with FILE:LINE: KEY.
set -euo pipefail
troupe=${1:?usage: test_cluster_check.sh TROUPE_BINARY}
work=$(mktemp -d /tmp/troupe-cluster-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

echo 0123456789abcdef > "$work/secret"
# Line numbers below are asserted: keep the layout.
write_good() {
  cat > "$work/c.toml" <<'EOF'
[cluster]
name = "t"
secret_file = "secret"
binary = "/opt/troupe/bin/troupe"
run_dir = "/tmp/troupe-t"

[model]
path = "absent-model.gguf"

[[nodes]]
name = "a"
host = "10.9.0.1"
role = "head"

[[nodes]]
name = "b"
host = "10.9.0.2"
ssh = { user = "ops", port = 2200, identity_file = "key" }

[[nodes]]
name = "c"
host = "10.9.0.3"

[[replicas]]
  [[replicas.stages]]
  node = "b"
  first_layer = 0
  last_layer = 3
  [[replicas.stages]]
  node = "c"
  first_layer = 3

[[replicas]]
  [[replicas.stages]]
  first_layer = 0
EOF
}

write_good
out=$("$troupe" cluster check "$work/c.toml" 2>"$work/err") || fail "the good file was refused: $(cat "$work/err")"
[ "$out" = "ok: 3 nodes, 2 replicas, 3 stages" ] || fail "check printed '$out'"
grep -q "not on this machine" "$work/err" || fail "check did not say the layers went unchecked: $(cat "$work/err")"

plan=$("$troupe" cluster plan "$work/c.toml") || fail "plan failed"
echo "$plan"
expect_line() { grep -qxF -- "$1" <<<"$plan" || fail "plan lacks the line: $1"; }
expect_line "cluster name=t binary=/opt/troupe/bin/troupe run_dir=/tmp/troupe-t config=$work/c.toml join_timeout_ms=120000"
expect_line "node name=a host=10.9.0.1 role=head ssh_user=root ssh_port=22 ssh_identity=- control_port=7434 data_port=7435 stages=1.0 line=10"
expect_line "node name=b host=10.9.0.2 role=worker ssh_user=ops ssh_port=2200 ssh_identity=$work/key control_port=7434 data_port=7435 stages=0.0 line=15"
expect_line "node name=c host=10.9.0.3 role=worker ssh_user=root ssh_port=22 ssh_identity=- control_port=7434 data_port=7435 stages=0.1 line=20"
[ "$(wc -l <<<"$plan")" -eq 4 ] || fail "plan printed more than 4 lines"

# bad CASE FROM TO EXPECTED: the good file with the first line matching FROM (sed) replaced by TO
# must exit 2 with a message that starts with EXPECTED.
bad() {
  local name=$1 from=$2 to=$3 expected=$4 rc=0 msg
  write_good
  sed -i "0,/$from/s//$to/" "$work/c.toml"
  msg=$("$troupe" cluster check "$work/c.toml" 2>&1 >/dev/null) || rc=$?
  [ "$rc" -eq 2 ] || fail "$name: exit $rc, expected 2 ($msg)"
  [[ "$msg" == "troupe: $expected"* ]] || fail "$name: got '$msg', expected 'troupe: $expected...'"
  echo "ok: $name: $msg"
}
bad "unknown node" 'node = "c"' 'node = "x"' \
  'c.toml:30: replicas[0].stages[1].node: unknown node "x" (nodes: a, b, c)'
bad "overlapping layers" 'first_layer = 3' 'first_layer = 2' \
  'c.toml:29: replicas[0].stages[1].first_layer: 2 leaves an overlap: the previous stage ends at layer 3'
bad "missing layers" 'first_layer = 3' 'first_layer = 4' \
  'c.toml:29: replicas[0].stages[1].first_layer: 4 leaves a gap: the previous stage ends at layer 3'
bad "duplicate node names" 'name = "c"' 'name = "a"' \
  'c.toml:21: nodes[2].name: duplicate node name "a" (nodes[0], line 11)'
bad "two heads" 'host = "10.9.0.2"' 'host = "10.9.0.2"\nrole = "head"' \
  'c.toml:18: nodes[1].role: a second head ("b"): node "a" (line 10) is the head already'
bad "empty secret" '^secret_file = "secret"' 'secret_file = "empty"' 'c.toml:1: cluster.secret_file: '
: > "$work/empty"
rc=0; msg=$("$troupe" cluster check "$work/c.toml" 2>&1 >/dev/null) || rc=$?
[ "$rc" -eq 2 ] && [[ "$msg" == *"empty is empty"* ]] || fail "an empty secret file passed ($rc: $msg)"

# A path with a blank cannot go through the launcher's plan.
write_good
sed -i 's#identity_file = "key"#identity_file = "my key"#' "$work/c.toml"
rc=0; msg=$("$troupe" cluster plan "$work/c.toml" 2>&1 >/dev/null) || rc=$?
[ "$rc" -eq 2 ] && [[ "$msg" == *'c.toml:15: nodes[1].ssh.identity_file: '*'contains white space'* ]] \
  || fail "a blank in a path passed the plan ($rc: $msg)"

# A one-process file has no plan.
write_good
sed -i '/^\[\[nodes\]\]/,/^$/d; /node = /d' "$work/c.toml"
"$troupe" cluster check "$work/c.toml" >/dev/null 2>&1 || fail "the file without nodes was refused"
rc=0; msg=$("$troupe" cluster plan "$work/c.toml" 2>&1 >/dev/null) || rc=$?
[ "$rc" -eq 2 ] && [[ "$msg" == *"no [[nodes]]"* ]] || fail "plan of a one-process file: $rc: $msg"
echo "PASS: cluster check/plan"
