# Sourced by the tests in this folder: where scripts/netns-hosts is, a private state directory,
# and the loud skip (exit 77, CTest: Skipped) where test hosts cannot be made here.
# Usage: netns_setup PREFIX SUBNET   (sets hosts, opts and TROUPE_NETNS_DIR)
netns_setup() {
  local prefix=$1 subnet=$2
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  hosts="$src/scripts/netns-hosts"
  TROUPE_NETNS_DIR=$(mktemp -d "/tmp/troupe-netns-$prefix.XXXXXX")
  rmdir "$TROUPE_NETNS_DIR"
  export TROUPE_NETNS_DIR
  opts=(--prefix "$prefix" --subnet "$subnet" --dir "$TROUPE_NETNS_DIR")
  if [ "$(id -u)" -ne 0 ]; then echo "SKIP: not root (network namespaces need root)"; exit 77; fi
  if ! ip netns add "$prefix-probe" 2>/dev/null; then echo "SKIP: cannot create a network namespace here"; exit 77; fi
  ip netns delete "$prefix-probe"
  if [ ! -x /usr/sbin/sshd ]; then echo "SKIP: /usr/sbin/sshd missing (scripts/setup.sh installs openssh-server)"; exit 77; fi
}

# Usage: cluster_work TAG   (after netns_setup; needs $cluster and $troupe). Makes $work (a
# private directory, its run_dir $work/run) and installs the EXIT trap that stops every cluster
# whose file is $work/*.toml, kills what is left of them and removes the test hosts; fail MESSAGE
# prints the message and the tail of every node's log, and exits 1.
cluster_work() {
  work=$(mktemp -d "/tmp/troupe-$1.XXXXXX")
  run_dir="$work/run"
  trap cluster_cleanup EXIT
}
cluster_cleanup() {
  for f in "$work"/*.toml; do [ -f "$f" ] && "$cluster" down "$f" --troupe "$troupe" --grace 3 >/dev/null 2>&1 || true; done
  pkill -KILL -f -- "--config $work/" 2>/dev/null || true
  "$hosts" down "${opts[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
fail() {
  echo "FAIL: $*"
  for l in "${run_dir:-/nonexistent}"/*.log; do [ -f "$l" ] && { echo "==> $l"; tail -n 20 "$l"; }; done
  exit 1
}
