#!/usr/bin/env bash
# Multi-host clusters on namespace hosts, started by scripts/cluster: the text a client on the
# host side gets is identical to `troupe generate` on the same model, prompt and seed, for
#   1. a 3-stage pipeline, stage 0 on the head, stages 1 and 2 on two other hosts (llama2.c file);
#   2. a 2-stage pipeline on two workers, the head elsewhere (GGUF Q8_0, and the HF directory);
#   3. 2 replicas on different hosts with 16 concurrent clients (greedy and seeded);
# and the joins: workers started before the head join when it comes; a worker without the
# cluster secret is refused (TLS), logged, and gets no stage; `cluster down` leaves no process.
# Exit 77 (CTest: Skipped) where namespaces or the models are missing.
set -euo pipefail
troupe=${1:?usage: test_cluster_identity.sh TROUPE_BINARY MODELS_DIR}
models=${TROUPE_MODELS_DIR:-${2:?usage: test_cluster_identity.sh TROUPE_BINARY MODELS_DIR}}
source "$(dirname "$0")/netns_common.sh"
netns_setup tid 10.244.0
cluster="$src/scripts/cluster"
for f in stories260K.bin tok512.bin TinyStories-656K-Q8_0.gguf TinyStories-656K/config.json; do
  [ -f "$models/$f" ] || { echo "SKIP: $models/$f missing (TROUPE_MODELS_DIR)"; exit 77; }
done

cluster_work cluster-identity

timeout 120 "$hosts" up 5 "${opts[@]}" >"$work/hosts.txt" || fail "netns-hosts up 5"
key="$TROUPE_NETNS_DIR/id_ed25519"
openssl rand -hex 32 >"$work/secret"
openssl rand -hex 32 >"$work/other-secret"
chmod 600 "$work/secret" "$work/other-secret"
addr() { echo "10.244.0.$((10 + ${1#h}))"; }

# cluster_file NAME MODEL TOKENIZER SECRET REPLICA... : a cluster file with h1 the head and h2..h5
# workers; each REPLICA is "node:first-last node:first-last ..." (last empty: to the end).
cluster_file() {
  local name=$1 model=$2 tok=$3 secret=$4 i
  shift 4
  {
    echo "[cluster]"
    echo "name = \"$name\""
    echo "secret_file = \"$secret\""
    echo "binary = \"$troupe\""
    echo "run_dir = \"$run_dir\""
    echo "join_timeout_ms = 60000"
    echo "[model]"
    echo "path = \"$model\""
    [ -z "$tok" ] || echo "tokenizer = \"$tok\""
    echo "[listen]"
    echo "host = \"$(addr h1)\""
    echo "port = 7433"
    echo "[batching]"
    echo "n_blocks = 256"
    for i in 1 2 3 4 5; do
      echo "[[nodes]]"
      echo "name = \"h$i\""
      echo "host = \"$(addr h$i)\""
      [ "$i" -eq 1 ] && echo 'role = "head"' || echo 'role = "worker"'
      echo 'net_devices = "eth0"'
      echo "ssh = { identity_file = \"$key\" }"
    done
    for replica in "$@"; do
      echo "[[replicas]]"
      for st in $replica; do
        local node=${st%%:*} range=${st#*:}
        echo "  [[replicas.stages]]"
        echo "  node = \"$node\""
        echo "  first_layer = ${range%-*}"
        [ -z "${range#*-}" ] || echo "  last_layer = ${range#*-}"
      done
    done
  } >"$work/$name.toml"
}

up() {  # FILE
  timeout 200 "$cluster" up "$1" --troupe "$troupe" --timeout 150 >"$work/up.out" 2>"$work/up.err" \
    || { cat "$work/up.out" "$work/up.err"; fail "cluster up $1"; }
  cat "$work/up.out"
}
down() {  # FILE: stops the cluster; nothing of it may be left
  timeout 120 "$cluster" down "$1" --troupe "$troupe" --grace 10 || fail "cluster down $1"   # waits for the exits
  if pgrep -f -- "--config $1 " >/dev/null; then fail "processes left after down: $(pgrep -af -- "--config $1 ")"; fi
}

# same MODEL TOKENIZER PROMPT N [SAMPLING...]: the cluster's text == troupe generate's.
same() {
  local model=$1 tok=$2 prompt=$3 n=$4
  shift 4
  local tok_opt=()
  [ -z "$tok" ] || tok_opt=(--tokenizer "$tok")
  local got want
  got=$(timeout 60 "$troupe" client --host "$(addr h1)" --port 7433 --prompt "$prompt" -n "$n" "$@" 2>"$work/client.err") \
    || { cat "$work/client.err"; fail "client failed for '$prompt' $*"; }
  want=$("$troupe" generate --model "$model" "${tok_opt[@]}" --prompt "$prompt" -n "$n" --threads 1 "$@" 2>/dev/null) \
    || fail "generate failed for '$prompt'"
  [ -n "$got" ] || fail "empty completion for '$prompt' $*"
  if [ "$want" != "$prompt$got" ]; then
    echo "cluster : $prompt$got"
    echo "generate: $want"
    fail "text differs for '$prompt' $*"
  fi
  echo "same: '$prompt' $* ($(wc -w <<<"$got") words)"
}
prompts=("Once upon a time" "The little dog" "Lily and Ben went to the park")
seeded=(--temperature 0.8 --top-p 0.9 --seed 11)

# ---- 1. 3 stages: the head runs stage 0, h2 and h3 the others (stories260K: 5 layers) ----------------
m260="$models/stories260K.bin"
t260="$models/tok512.bin"
cluster_file three "$m260" "$t260" "$work/secret" "h1:0-2 h2:2-4 h3:4-"
up "$work/three.toml"
grep -q "^stage 0.0 node=h1 .* layers=0-2 state=loaded" "$work/up.out" || fail "stage 0.0 is not on the head"
grep -q "^stage 0.2 node=h3 .* layers=4-5 state=loaded" "$work/up.out" || fail "stage 0.2 is not on h3"
grep -q "^client: 10.244.0.11:7433" "$work/up.out" || fail "no client: line"
for p in "${prompts[@]}"; do same "$m260" "$t260" "$p" 64; done
same "$m260" "$t260" "Once upon a time" 64 "${seeded[@]}"
down "$work/three.toml"

# ---- 2. 2 stages on two workers, the head elsewhere: GGUF Q8_0 and the HF directory (2 layers) --------
for m in "$models/TinyStories-656K-Q8_0.gguf" "$models/TinyStories-656K"; do
  cluster_file two "$m" "" "$work/secret" "h3:0-1 h2:1-"
  up "$work/two.toml"
  for p in "${prompts[@]}"; do same "$m" "" "$p" 64; done
  same "$m" "" "The little dog" 64 "${seeded[@]}"
  same "$m" "" "Once upon a time" 64 --temperature 1.0 --top-k 40 --seed 3
  down "$work/two.toml"
done

# ---- 3. 2 replicas on different hosts, 16 concurrent clients --------------------------------------
cluster_file replicas "$m260" "$t260" "$work/secret" "h2:0-3 h3:3-" "h4:0-2 h5:2-"
up "$work/replicas.toml"
grep -q "^stage 1.1 node=h5 " "$work/up.out" || fail "replica 1 is not on h4/h5"
pids=()
for i in $(seq 0 15); do
  p="${prompts[$((i % 3))]}"
  if [ $((i % 2)) -eq 0 ]; then args=(); else args=(--temperature 0.8 --top-p 0.9 --seed "$i"); fi
  ( timeout 120 "$troupe" client --host "$(addr h1)" --port 7433 --prompt "$p" -n 48 "${args[@]}" \
      >"$work/c$i.out" 2>"$work/c$i.err"; echo $? >"$work/c$i.rc" ) &
  pids+=($!)
done
wait "${pids[@]}"
for i in $(seq 0 15); do
  p="${prompts[$((i % 3))]}"
  if [ $((i % 2)) -eq 0 ]; then args=(); else args=(--temperature 0.8 --top-p 0.9 --seed "$i"); fi
  [ "$(cat "$work/c$i.rc")" = 0 ] || { cat "$work/c$i.err"; fail "concurrent client $i failed"; }
  want=$("$troupe" generate --model "$m260" --tokenizer "$t260" --prompt "$p" -n 48 --threads 1 "${args[@]}" 2>/dev/null)
  [ "$want" = "$p$(cat "$work/c$i.out")" ] || fail "concurrent client $i: text differs ('$p' ${args[*]})"
done
echo "same: 16 concurrent clients over 2 replicas"
down "$work/replicas.toml"

# ---- 4. workers first, the head later; a worker without the secret is refused ----------------------
cluster_file late "$m260" "$t260" "$work/secret" "h2:0-3 h3:3-"
cp "$work/late.toml" "$work/late-bad.toml"
sed -i "s|^secret_file = .*|secret_file = \"$work/other-secret\"|" "$work/late-bad.toml"
mkdir -p "$run_dir"
declare -A node_pid
start_node() {  # HOST FILE: runs `troupe node` in HOST's namespace, in the background
  ip netns exec "tid-$1" "$troupe" node --config "$2" --name "$1" >"$run_dir/$1.log" 2>&1 </dev/null &
  node_pid[$1]=$!
  echo $! >"$run_dir/$1.pid"
}
start_node h2 "$work/late.toml"
start_node h3 "$work/late.toml"
start_node h4 "$work/late-bad.toml"   # h4 is a worker of the file, but holds another secret
for _ in $(seq 1 40); do grep -q "cannot join the head" "$run_dir/h2.log" && break; sleep 0.25; done
grep -q "cannot join the head" "$run_dir/h2.log" || fail "h2 did not log that the head is not there yet"
start_node h1 "$work/late.toml"
for _ in $(seq 1 120); do
  grep -q "^cluster name=late state=ready" "$run_dir/status" 2>/dev/null && break
  sleep 0.5
done
grep -q "^cluster name=late state=ready" "$run_dir/status" || { cat "$run_dir/status" || true; fail "late head never got ready"; }
same "$m260" "$t260" "Once upon a time" 48
# h4 retries with backoff (at most 5 s apart): wait for its refusal on both sides.
for _ in $(seq 1 40); do
  grep -q "control gate: refused peer=10.244.0.14" "$run_dir/h1.log" && grep -q "is this node's secret file the cluster's" "$run_dir/h4.log" && break
  sleep 0.5
done
grep -q "is this node's secret file the cluster's" "$run_dir/h4.log" || fail "h4 (wrong secret) did not log a refusal"
grep -q "control gate: refused peer=10.244.0.14" "$run_dir/h1.log" || fail "the head did not log h4's refusal"
same "$m260" "$t260" "The little dog" 48   # still serving: the refused attempts disturbed nobody
grep -q "^node name=h4 .* state=waiting" "$run_dir/status" || fail "h4 joined without the secret: $(cat "$run_dir/status")"
grep -q "node joined name=h4" "$run_dir/h1.log" && fail "the head let h4 join"
grep -q "placing stage" "$run_dir/h4.log" && fail "h4 was given a stage"
echo "refused: a node without the cluster secret"
h4_pid=${node_pid[h4]}
down "$work/late.toml"
# h4 runs with another file (late-bad.toml): `down late.toml` leaves it alone, as it should.
kill -TERM "$h4_pid" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$h4_pid" 2>/dev/null || break; sleep 0.2; done
# Every node started here stopped cleanly on SIGTERM (exit 0: no crash on the way out).
for n in h1 h2 h3 h4; do
  rc=0
  wait "${node_pid[$n]}" || rc=$?
  [ "$rc" -eq 0 ] || fail "node $n exited with status $rc after SIGTERM"
done
if pgrep -f -- "--config $work/" >/dev/null; then fail "troupe processes left: $(pgrep -af -- "--config $work/")"; fi
echo "PASS: cluster identity"
