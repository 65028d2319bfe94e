#!/usr/bin/env bash
# Runs README.md's "Trying it by hand" block as written (between the
# walkthrough markers) in a clean shell, and checks that it ends with the
# order paid: the events row says `paid`. Usage: scripts/walkthrough.sh [bin]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/h5pay-worker}"
block=$(awk '/<!-- walkthrough:begin -->/{on=1;next} /<!-- walkthrough:end -->/{on=0} on' README.md | sed '/^```/d')
if [ -z "$block" ]; then
  echo "walkthrough: no block between the markers in README.md" >&2
  exit 1
fi
# The README says target/debug; CI builds elsewhere (CARGO_TARGET_DIR).
block=${block//target\/debug\/h5pay-worker/$bin}
block=${block//scripts\/run-all.sh &/scripts\/run-all.sh $bin \&}
for port in 8090 8091 9464 9465; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "walkthrough: port $port is taken: stop what runs there first" >&2
    exit 1
  fi
done
out=$(mktemp)
trap 'rm -f "$out"; pkill -f "h5pay-worker (sandbox|run|notify)$" 2>/dev/null || true' EXIT
if ! timeout 300 bash -euo pipefail -c "set -m; $block" >"$out" 2>&1; then
  cat "$out" >&2
  echo "walkthrough: the README's commands failed" >&2
  exit 1
fi
if ! grep -E '^[^ ]+ +payment +paid +M1 +hand-' "$out" >/dev/null; then
  cat "$out" >&2
  echo "walkthrough: no paid event row" >&2
  exit 1
fi
grep -E 'payment +paid' "$out"
echo "walkthrough: passed (README's commands, to the paid event)"
