#!/usr/bin/env bash
# scripts/netns-hosts: `up 3` makes three hosts whose sshd answers, each inside its own namespace
# with its own address, reachable from each other and from the root namespace; `down` leaves no
# namespace, link, process or state behind. Exit 77 (CTest: Skipped) where namespaces cannot be made.
set -euo pipefail
source "$(dirname "$0")/netns_common.sh"
netns_setup trt 10.232.0

fail() { echo "FAIL: $*"; "$hosts" down "${opts[@]}" >/dev/null 2>&1 || true; exit 1; }
trap '"$hosts" down "${opts[@]}" >/dev/null 2>&1 || true' EXIT

out=$(timeout 60 "$hosts" up 3 "${opts[@]}") || fail "up 3 failed"
echo "$out"
[ "$(echo "$out" | grep -c '^host h[123] 10\.232\.0\.1[123] ')" -eq 3 ] || fail "up did not print three host lines"

# A second `up` over the same state is refused, and changes nothing.
if timeout 30 "$hosts" up 2 "${opts[@]}" >/dev/null 2>&1; then fail "a second up was accepted"; fi

for i in 1 2 3; do
  addr=10.232.0.1$i
  got=$(timeout 20 "$hosts" ssh h$i "ip -4 -o addr show dev eth0" | awk '{print $4}')
  [ "$got" = "$addr/24" ] || fail "h$i over ssh reports address '$got', expected $addr/24"
  # The root namespace's address is absent inside the host: it really is another namespace.
  if timeout 10 "$hosts" exec h$i ip -4 -o addr | grep -q 10.232.0.1/; then fail "h$i sees the bridge address"; fi
done
# Host to host, and root namespace to host, over TCP (sshd's port).
timeout 10 "$hosts" exec h1 timeout 3 bash -c '</dev/tcp/10.232.0.13/22' || fail "h1 cannot reach h3"
timeout 5 bash -c '</dev/tcp/10.232.0.12/22' || fail "the root namespace cannot reach h2"

st=$("$hosts" status "${opts[@]}")
echo "$st"
[ "$(echo "$st" | grep -c 'sshd=up')" -eq 3 ] || fail "status does not show three sshd up"

# A process left running in a namespace is killed by down.
"$hosts" exec h2 sleep 300 &
for _ in $(seq 1 50); do [ "$(ip netns pids trt-h2 | wc -l)" -ge 2 ] && break; sleep 0.1; done
[ "$(ip netns pids trt-h2 | wc -l)" -ge 2 ] || fail "the sleep did not start in h2"

timeout 30 "$hosts" down "${opts[@]}" || fail "down failed"
wait || true
trap - EXIT
if ip netns list | grep -q '^trt-h'; then fail "namespaces left: $(ip netns list | grep '^trt-h' | tr '\n' ' ')"; fi
if ip -o link show | grep -q 'trt'; then fail "links left: $(ip -o link show | grep trt)"; fi
[ ! -e "$TROUPE_NETNS_DIR" ] || fail "state directory left: $TROUPE_NETNS_DIR"
if pgrep -f "$TROUPE_NETNS_DIR" >/dev/null; then fail "processes left: $(pgrep -af "$TROUPE_NETNS_DIR")"; fi
echo "PASS: netns-hosts up/ssh/exec/status/down"
