#!/usr/bin/env bash
# The alerting rules are valid and their unit tests pass (issue 15):
# `promtool check rules` and `promtool test rules` on deploy/prometheus/.
# promtool comes from Debian's `prometheus` package, unpacked under
# target/tools without installing or starting the server.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/tools
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  promtool=$tools/ex/usr/bin/promtool
  if [ ! -x "$promtool" ]; then
    echo "check-alerts: fetching promtool (apt-get download prometheus)"
    mkdir -p "$tools"
    # A fresh machine may have no package lists yet.
    (cd "$tools" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } && dpkg-deb -x prometheus_*.deb ex)
  fi
fi
"$promtool" check rules deploy/prometheus/alerts.yaml
"$promtool" test rules deploy/prometheus/alerts_test.yaml
