#!/usr/bin/env bash
# Keeps the contract's documents true (issue 14):
#  1. docs/asyncapi.yaml with @asyncapi/parser and docs/openapi.yaml with
#     @apidevtools/swagger-parser (npm, installed under target/docs-tools);
#  2. docs/openapi.yaml exercised against a running sandbox, notify receiver
#     and admin endpoints with schemathesis (PyPI, in a venv there), bounded
#     in examples and time.
# The message schemas are checked against real messages by the integration
# tests (tests/integration/schemas.rs).
# Usage: scripts/check-docs.sh [path to the h5pay-worker binary]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${1:-${CARGO_TARGET_DIR:-target}/debug/h5pay-worker}
[ -x "$bin" ] || { echo "check-docs: no h5pay-worker binary at $bin (cargo build first)" >&2; exit 1; }
tools=target/docs-tools
mkdir -p "$tools"

if [ ! -d "$tools/node_modules/@asyncapi/parser" ] || [ ! -d "$tools/node_modules/@apidevtools/swagger-parser" ]; then
  echo "check-docs: installing @asyncapi/parser and @apidevtools/swagger-parser (npm)"
  (cd "$tools" && npm install --silent --no-audit --no-fund @asyncapi/parser@3.6 @apidevtools/swagger-parser@10 >/dev/null)
fi
# ESM resolves packages next to the script: run it from the tools folder.
cp scripts/check-docs.mjs "$tools/check-docs.mjs"
node "$tools/check-docs.mjs" "$root"

if [ ! -x "$tools/venv/bin/st" ]; then
  echo "check-docs: installing schemathesis (PyPI)"
  python3 -m venv "$tools/venv"
  # schemathesis 3.x with the Hypothesis it was released against (later
  # Hypothesis versions changed an internal API it uses).
  "$tools/venv/bin/pip" install -q "schemathesis>=3.39,<4" "hypothesis<6.125"
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sandbox_port=$(port); notify_port=$(port); admin_port=$(port); worker_admin_port=$(port)
id="docs-$$"
work=$(mktemp -d)
pids=()
# A worker declares the topology (the receiver declares nothing: its broker
# user may not): on a vhost of its own, removed after.
vhost="h5pay-$id"
rabbitmqctl -q add_vhost "$vhost" >/dev/null
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "h5pay-test:$id:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/c.toml" <<TOML
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/$vhost"
[redis]
key_prefix = "h5pay-test:$id"
[[institutions]]
inst_no = "60000001"
key = "sandbox-key-5f2b9c0e7d1a4b3c"
[notify]
listen = "127.0.0.1:$notify_port"
[admin]
listen = "127.0.0.1:$admin_port"
[log]
level = "warn"
TOML
"$bin" sandbox --listen "127.0.0.1:$sandbox_port" --config "$work/c.toml" 2>"$work/sandbox.log" & pids+=($!)
"$bin" notify --config "$work/c.toml" 2>"$work/notify.log" & pids+=($!)
H5PAY__ADMIN__LISTEN="127.0.0.1:$worker_admin_port" \
  H5PAY__GATEWAY__URL="http://127.0.0.1:$sandbox_port/api/openpay/v3/h5pay" \
  "$bin" run --config "$work/c.toml" 2>"$work/worker.log" & pids+=($!)
# Wait for each face to answer (a loaded machine can be slow to start two
# debug binaries); a process that died, or one that never answers, fails the
# check here with its log instead of as a "connection refused" later.
wait_http() { # name pid url log
  for _ in $(seq 600); do
    curl -sf --max-time 2 "$3" >/dev/null && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      echo "check-docs: the $1 exited before it answered; its log:" >&2
      tail -n 30 "$4" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "check-docs: the $1 did not answer $3 within 60 s; its log:" >&2
  tail -n 30 "$4" >&2
  exit 1
}
wait_http sandbox "${pids[0]}" "http://127.0.0.1:$sandbox_port/healthz" "$work/sandbox.log"
wait_http worker "${pids[2]}" "http://127.0.0.1:$worker_admin_port/readyz" "$work/worker.log"
wait_http "notify receiver" "${pids[1]}" "http://127.0.0.1:$admin_port/readyz" "$work/notify.log"
st() {
  timeout 180 "$tools/venv/bin/st" run docs/openapi.yaml --base-url "$1" --include-tag "$2" \
    --checks status_code_conformance,content_type_conformance,response_schema_conformance \
    --hypothesis-max-examples 25 --hypothesis-deadline 5000 --hypothesis-seed 1 --no-color \
    --exitfirst
}
echo "check-docs: schemathesis against the sandbox"
st "http://127.0.0.1:$sandbox_port" sandbox | tail -n 12
echo "check-docs: schemathesis against the notify receiver"
st "http://127.0.0.1:$notify_port" notify | tail -n 8
echo "check-docs: schemathesis against the admin endpoints"
st "http://127.0.0.1:$admin_port" admin | tail -n 8
# A receiver that cannot reach the broker would answer 503 to everything;
# it must have been ready throughout.
curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null
echo "check-docs: all documents hold"
