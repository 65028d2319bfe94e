#!/usr/bin/env bash
# Runs every client example in examples/ against the local broker and a
# running sandbox + worker (on a vhost of their own, with the default
# topology names a real deployment uses). Each example publishes one intent
# the correct way and exits 0 only when its `ready` result event arrived.
#
# Usage: scripts/examples.sh [--available] [path to h5pay-worker]
#   default      installs what a language needs (apt: golang-go,
#                golang-github-rabbitmq-amqp091-go-dev, librabbitmq-client-java;
#                pip: pika; npm: amqplib) and runs all four;
#   --available  (make test) the same installs, but one that cannot be done
#                (no root, no sudo, no package) is not an error: the
#                languages whose toolchain this machine has run, the rest
#                are named (and listed at the end of make test).
set -euo pipefail
cd "$(dirname "$0")/.."
install=1
if [ "${1:-}" = "--available" ]; then install=0; shift; fi
bin=${1:-${CARGO_TARGET_DIR:-target}/debug/h5pay-worker}
[ -x "$bin" ] || { echo "examples: no h5pay-worker binary at $bin (cargo build first)" >&2; exit 1; }
work=target/examples
mkdir -p "$work"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1
  fi
}
if command -v apt-get >/dev/null; then
  need=()
  command -v go >/dev/null || need+=(golang-go)
  [ -d /usr/share/gocode/src/github.com/rabbitmq/amqp091-go ] || need+=(golang-github-rabbitmq-amqp091-go-dev)
  [ -f /usr/share/java/amqp-client.jar ] || need+=(librabbitmq-client-java)
  command -v javac >/dev/null || need+=(default-jdk-headless)
  if [ ${#need[@]} -gt 0 ]; then
    echo "examples: installing ${need[*]} (apt-get)"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 &&
       ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
           as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1; }; then
      [ "$install" = 0 ] || { echo "examples: could not install ${need[*]}" >&2; exit 1; }
      echo "examples: could not install ${need[*]}: those examples are skipped"
    fi
  fi
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
id="ex-$$"; vhost="h5pay-examples-$$"
sandbox_port=$(port); admin_port=$(port)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "h5pay-examples:$id:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
rabbitmqctl -q add_vhost "$vhost" >/dev/null
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
url="amqp://guest:guest@127.0.0.1:5672/$vhost"
cat > "$tmp/c.toml" <<TOML
[amqp]
url = "$url"
[redis]
key_prefix = "h5pay-examples:$id"
[gateway]
url = "http://127.0.0.1:$sandbox_port/api/openpay/v3/h5pay"
[[institutions]]
inst_no = "60000001"
key = "sandbox-key-5f2b9c0e7d1a4b3c"
[admin]
listen = "127.0.0.1:$admin_port"
[log]
level = "warn"
TOML
"$bin" sandbox --listen "127.0.0.1:$sandbox_port" --config "$tmp/c.toml" 2>"$tmp/sandbox.log" & pids+=($!)
"$bin" run --config "$tmp/c.toml" 2>"$tmp/worker.log" & pids+=($!)
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null || { echo "examples: the worker did not become ready"; cat "$tmp/worker.log"; exit 1; }

ran=(); skipped=(); failed=()
run() { # name, command...
  local name=$1; shift
  if AMQP_URL="$url" PAY_TRACE_NO="$name-$$" "$@"; then ran+=("$name"); else failed+=("$name"); fi
}

# Python (pika from PyPI, in a venv of its own).
if command -v python3 >/dev/null; then
  [ -x "$work/venv/bin/python" ] || python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q -r examples/python/requirements.txt
  run python "$work/venv/bin/python" examples/python/publish_and_consume.py
else skipped+=("python (no python3)"); fi

# Node (amqplib from npm; ESM resolves next to the script, so it runs from there).
if command -v node >/dev/null && command -v npm >/dev/null; then
  mkdir -p "$work/node"
  cp examples/node/package.json examples/node/publish-and-consume.js "$work/node/"
  [ -d "$work/node/node_modules/amqplib" ] || (cd "$work/node" && npm install --silent --no-audit --no-fund >/dev/null)
  run node node "$work/node/publish-and-consume.js"
else skipped+=("node (no node/npm)"); fi

# Go: the example's own go.mod, with amqp091-go taken from Debian's
# golang-github-rabbitmq-amqp091-go-dev instead of the module proxy (not
# reachable here): a copy of the module, one replace line, no download.
if command -v go >/dev/null && [ -d /usr/share/gocode/src/github.com/rabbitmq/amqp091-go ]; then
  rm -rf "$work/go" && mkdir -p "$work/go" "$work/gocache"
  cp examples/go/main.go examples/go/go.mod "$work/go/"
  (cd "$work/go" && go mod edit -replace github.com/rabbitmq/amqp091-go=/usr/share/gocode/src/github.com/rabbitmq/amqp091-go)
  run go env -C "$work/go" GOPROXY=off GOFLAGS=-mod=mod GOCACHE="$PWD/$work/gocache" go run .
else skipped+=("go (apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev, or make examples)"); fi

# Java (Debian's librabbitmq-client-java and its slf4j).
if command -v javac >/dev/null && [ -f /usr/share/java/amqp-client.jar ]; then
  cp=/usr/share/java/amqp-client.jar
  for j in /usr/share/java/slf4j-api.jar /usr/share/java/slf4j-nop.jar; do [ -f "$j" ] && cp="$cp:$j"; done
  mkdir -p "$work/java"
  # The pom.xml a user builds with names the same client, major version 5.
  python3 - examples/java/pom.xml <<'PY' || { failed+=("java (pom.xml)"); }
import sys, xml.etree.ElementTree as ET
ns = {"m": "http://maven.apache.org/POM/4.0.0"}
root = ET.parse(sys.argv[1]).getroot()
deps = {(d.findtext("m:groupId", namespaces=ns), d.findtext("m:artifactId", namespaces=ns)):
        d.findtext("m:version", namespaces=ns) for d in root.iterfind(".//m:dependency", ns)}
v = deps.get(("com.rabbitmq", "amqp-client"), "")
assert v.split(".")[0] == "5", f"amqp-client {v!r}: the example is compiled against 5.x"
assert root.findtext(".//m:exec.mainClass", namespaces=ns) == "PublishAndConsume"
PY
  javac -nowarn -cp "$cp" -d "$work/java" examples/java/PublishAndConsume.java
  run java java -cp "$work/java:$cp" PublishAndConsume
else skipped+=("java (apt-get install librabbitmq-client-java, or make examples)"); fi

echo "examples: passed: ${ran[*]:-none}"
[ ${#skipped[@]} -eq 0 ] || printf 'examples: skipped: %s\n' "${skipped[@]}"
if [ ${#skipped[@]} -gt 0 ] && [ -n "${H5PAY_SKIPS:-}" ]; then
  printf 'examples: the %s example\n' "${skipped[@]}" >> "$H5PAY_SKIPS"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "examples: FAILED: ${failed[*]}"; tail -n 20 "$tmp/worker.log"; exit 1
fi
