# Shared by the admin console's shell tests: a `troupe serve` of stories260K (2 replicas x 2
# stages) with an admin token, on ephemeral ports; stopped at exit. Skips (77) without the model.
fail() { echo "FAIL: $*"; [ -f "$work/serve.err" ] && { echo "--- serve log (tail)"; tail -20 "$work/serve.err"; }; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

start_serve() {  # start_serve TROUPE MODELS_DIR [extra serve flags]
  local troupe=$1 models=$2
  shift 2
  [ -f "$models/stories260K.bin" ] && [ -f "$models/tok512.bin" ] || skip "$models/stories260K.bin missing"
  echo "test-admin-token-$$" > "$work/admin.token"
  chmod 600 "$work/admin.token"
  "$troupe" serve --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" --replicas 2 --stages 2 \
    --port 0 --admin-token-file "$work/admin.token" "$@" > "$work/serve.out" 2> "$work/serve.err" &
  serve_pid=$!
  for _ in $(seq 1 200); do
    grep -q "listening on" "$work/serve.out" 2>/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || fail "troupe serve exited"
    sleep 0.1
  done
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$work/serve.out")
  http_port=$(sed -n 's/.*HTTP API on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$work/serve.out")
  [ -n "$port" ] || fail "no port in $(cat "$work/serve.out")"
}

stop_serve() {
  if [ -n "${serve_pid:-}" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
  fi
}
