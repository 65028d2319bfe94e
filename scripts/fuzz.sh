#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted bytes (see fuzz/).
# Usage: scripts/fuzz.sh [target ...]   (default: all five)
#   FUZZ_SECONDS  time per target (default 600)
# Needs a nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz,
# which this script installs from crates.io when it is missing. A crash is
# saved under fuzz/artifacts/<target>/: fix it, then copy the input into
# fuzz/regressions/<target>/ so `make test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(intake gateway_answer sign_verify config notify)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${seconds}s"
  log="fuzz/$t.last-run.log"
  # -rss_limit_mb: the worker's own bounds (64 KiB intents, 256 KiB answers)
  # keep every input far below it; a blow-up is a finding.
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $t failed (exit $status); see $log and fuzz/artifacts/$t/" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
done
