#!/usr/bin/env bash
# The three processes by hand, on config/default.toml, with pretty logs: the
# sandbox gateway (127.0.0.1:8090), the worker (admin 127.0.0.1:9464) and
# the notify receiver (127.0.0.1:8091, admin 127.0.0.1:9465), the worker
# sending notify_url = the receiver. Ctrl-C (or SIGTERM) stops all three.
# Usage: scripts/run-all.sh [path/to/h5pay-worker]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/h5pay-worker}"
if [ ! -x "$bin" ]; then
  echo "run-all: $bin not found: cargo build first (make run-all does)" >&2
  exit 2
fi
export H5PAY__LOG__FORMAT="${H5PAY__LOG__FORMAT:-pretty}"
export H5PAY__NOTIFY__PUBLIC_URL="${H5PAY__NOTIFY__PUBLIC_URL:-http://127.0.0.1:8091/h5pay/notify}"
pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM
"$bin" sandbox & pids+=($!)
"$bin" run & pids+=($!)
"$bin" notify & pids+=($!)
for url in http://127.0.0.1:9464/readyz http://127.0.0.1:9465/readyz; do
  for _ in $(seq 1 150); do
    curl -fs "$url" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
echo "run-all: sandbox :8090, worker (admin :9464), receiver :8091 (admin :9465) — Ctrl-C stops them" >&2
# Ends when any of the three ends (the others are stopped by the trap).
wait -n "${pids[@]}"
