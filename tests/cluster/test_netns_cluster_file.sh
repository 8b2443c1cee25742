#!/usr/bin/env bash
# scripts/netns-hosts up N --model ...: stdout is a cluster file (and nothing else) that
# `troupe cluster check` accepts, with h1 the head, the last K hosts spares, the stages spread
# round-robin over the workers and the layers split for even work; its secret is private. scripts/cluster
# reaches every host with the file's ssh settings (status: all stopped; down: nothing running).
# `down` cleans up. Exit 77 (CTest: Skipped) where namespaces or the models are missing.
set -euo pipefail
troupe=${1:?usage: test_netns_cluster_file.sh TROUPE_BINARY MODELS_DIR}
models=${TROUPE_MODELS_DIR:-${2:?usage: test_netns_cluster_file.sh TROUPE_BINARY MODELS_DIR}}
source "$(dirname "$0")/netns_common.sh"
netns_setup tcm 10.242.0
cluster="$src/scripts/cluster"
for f in stories260K.bin tok512.bin; do
  [ -f "$models/$f" ] || { echo "SKIP: $models/$f missing (TROUPE_MODELS_DIR)"; exit 77; }
done

work=$(mktemp -d /tmp/troupe-netns-cluster-file.XXXXXX)
cleanup() { "$hosts" down "${opts[@]}" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# ---- 3 hosts, 1 replica of 2 stages -----------------------------------------------------------------
timeout 90 "$hosts" up 3 "${opts[@]}" --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --stages 2 --troupe "$troupe" >"$work/c.toml" 2>"$work/up.err" || { cat "$work/up.err"; fail "up 3 --model failed"; }
cat "$work/c.toml"
grep -q '^host h' "$work/c.toml" && fail "host lines went to stdout with --model"
[ "$(grep -c '^host h[123] 10\.242\.0\.1[123] ' "$work/up.err")" -eq 3 ] || fail "the host lines are not on stderr: $(cat "$work/up.err")"

out=$("$troupe" cluster check "$work/c.toml") || fail "cluster check refused the file"
[ "$out" = "ok: 3 nodes, 1 replicas, 2 stages" ] || fail "cluster check printed '$out'"
grep -qx 'tokenizer = "'"$(realpath "$models/tok512.bin")"'"' "$work/c.toml" || fail "no absolute tokenizer path"
# check reads the model's layer count: a stage past layer 5 is refused, naming its line.
sed 's/last_layer = 5/last_layer = 6/' "$work/c.toml" >"$work/past.toml"
rc=0; msg=$("$troupe" cluster check "$work/past.toml" 2>&1) || rc=$?
line=$(grep -n 'last_layer = 6' "$work/past.toml" | cut -d: -f1)
[ "$rc" -eq 2 ] && [[ "$msg" == "troupe: past.toml:$line: replicas[0].stages[1].last_layer: 6 is past the model's 5 layers"* ]] \
  || fail "a stage past the model's last layer: exit $rc, '$msg'"
grep -qx 'host = "10.242.0.11"' <(sed -n '/^\[listen\]/,/^$/p' "$work/c.toml") || fail "[listen] is not on the head's address"
# stories260K has 5 layers: [0, 3) on h2, [3, 5) on h3.
grep -Pzq 'node = "h2"\n  first_layer = 0\n  last_layer = 3\n' "$work/c.toml" || fail "stage 0 is not h2 [0, 3)"
grep -Pzq 'node = "h3"\n  first_layer = 3\n  last_layer = 5\n' "$work/c.toml" || fail "stage 1 is not h3 [3, 5)"

plan=$("$troupe" cluster plan "$work/c.toml") || fail "cluster plan failed"
echo "$plan"
key="$TROUPE_NETNS_DIR/id_ed25519"
expect() { grep -qx -- "$1" <<<"$plan" || fail "plan lacks: $1"; }
expect "cluster name=netns-tcm binary=$(realpath "$troupe") run_dir=$TROUPE_NETNS_DIR/run config=$work/c.toml join_timeout_ms=120000"
h1_line=$(($(grep -n '^name = "h1"$' "$work/c.toml" | cut -d: -f1) - 1))  # its [[nodes]] line
expect "node name=h1 host=10.242.0.11 role=head ssh_user=root ssh_port=22 ssh_identity=$key control_port=7434 data_port=7435 stages=- line=$h1_line"
grep -q "^node name=h2 host=10.242.0.12 role=worker .* stages=0.0 " <<<"$plan" || fail "h2 does not hold stage 0.0"
grep -q "^node name=h3 host=10.242.0.13 role=worker .* stages=0.1 " <<<"$plan" || fail "h3 does not hold stage 0.1"
grep -c 'net_devices = "eth0"' "$work/c.toml" | grep -qx 3 || fail "not every node has net_devices = eth0"

secret=$(sed -n 's/^secret_file = "\(.*\)"$/\1/p' "$work/c.toml")
[ "$(stat -c %a "$secret")" = 600 ] || fail "the secret is not 0600: $(stat -c %a "$secret")"
grep -Eqx '[0-9a-f]{64}' "$secret" || fail "the secret is not 32 random bytes in hex: $(cat "$secret")"

# scripts/cluster reaches every host with the file's ssh settings; nothing runs yet.
rc=0
st=$(timeout 120 "$cluster" status "$work/c.toml" --troupe "$troupe") || rc=$?
echo "$st"
[ "$rc" -eq 1 ] || fail "status of a cluster that is not running exited $rc, expected 1"
[ "$(grep -c '^node h[123] host=10\.242\.0\.1[123] role=\(head\|worker\) pid=- state=stopped$' <<<"$st")" -eq 3 ] \
  || fail "status does not show three stopped nodes"
out=$(timeout 120 "$cluster" down "$work/c.toml" --troupe "$troupe") || fail "down of a stopped cluster failed"
grep -q "nothing of netns-tcm was running" <<<"$out" || fail "down did not say nothing was running: $out"

timeout 60 "$hosts" down "${opts[@]}" || fail "down failed"

# ---- 4 hosts, 2 replicas of 2 stages, 1 spare -----------------------------------------------------
timeout 90 "$hosts" up 4 "${opts[@]}" --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --stages 2 --replicas 2 --spares 1 --threads 2 --troupe "$troupe" >"$work/c4.toml" 2>/dev/null || fail "up 4 --model failed"
out=$("$troupe" cluster check "$work/c4.toml") || { cat "$work/c4.toml"; fail "cluster check refused the 4-host file"; }
[ "$out" = "ok: 4 nodes, 2 replicas, 4 stages" ] || fail "cluster check printed '$out'"
plan=$("$troupe" cluster plan "$work/c4.toml")
echo "$plan"
grep -q "^node name=h2 .*role=worker .* stages=0.0,1.0 " <<<"$plan" || fail "h2 does not hold stages 0.0 and 1.0"
grep -q "^node name=h3 .*role=worker .* stages=0.1,1.1 " <<<"$plan" || fail "h3 does not hold stages 0.1 and 1.1"
grep -q "^node name=h4 .*role=spare .* stages=- " <<<"$plan" || fail "h4 is not an empty spare"
[ "$(grep -c 'threads = 2' "$work/c4.toml")" -eq 4 ] || fail "--threads 2 is not on every stage"

# Bad --model options are refused before any host is made.
timeout 60 "$hosts" down "${opts[@]}" || fail "down failed"
if "$hosts" up 2 "${opts[@]}" --model "$models/stories260K.bin" --stages 6 >/dev/null 2>"$work/bad.err"; then
  fail "--stages 6 for a 5-layer model was accepted"
fi
grep -q "5 layers" "$work/bad.err" || fail "the --stages error does not name the layer count: $(cat "$work/bad.err")"
ip netns list | grep -q '^tcm-h' && fail "a refused up left namespaces"

trap - EXIT
rm -rf "$work"
if ip netns list | grep -q '^tcm-h'; then fail "namespaces left: $(ip netns list | grep '^tcm-h' | tr '\n' ' ')"; fi
[ ! -e "$TROUPE_NETNS_DIR" ] || fail "state directory left: $TROUPE_NETNS_DIR"
echo "PASS: netns-hosts --model cluster files"
