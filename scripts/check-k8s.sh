#!/usr/bin/env bash
# Renders every kustomize overlay (deploy/kustomize/overlays/*) with
# `kubectl kustomize` and validates the objects offline:
#  - Kubernetes' own kinds with kubernetes-validate (PyPI), strict: an
#    unknown or misspelt field fails;
#  - the CRD kinds (KEDA, Prometheus Operator) with the schemas generated
#    from their CRDs (@kubernetes-models/keda and
#    @kubernetes-models/prometheus-operator, npm): types and required
#    fields; a kind neither knows fails.
# Tools are installed under target/k8s-tools. Rendered output goes to
# target/k8s/<overlay>.yaml (tests/integration/deploy_files.rs reads the
# overlays through kubectl itself).
# Usage: scripts/check-k8s.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubectl >/dev/null; then
  # kubectl is not in Debian's archive: nothing here can install it.
  echo "check-k8s: SKIPPED: kubectl is not installed (needed for kubectl kustomize)"
  [ -z "${H5PAY_SKIPS:-}" ] || echo "check-k8s: the kustomize overlays not rendered or validated: kubectl is not installed" >> "$H5PAY_SKIPS"
  exit 0
fi
tools=target/k8s-tools
out=target/k8s
mkdir -p "$tools" "$out"
# Kubernetes versions the objects must be valid for: the oldest we support
# (PDB unhealthyPodEvictionPolicy is GA in 1.31) and a current one.
versions=(1.31.0 1.34.0)

if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "check-k8s: installing kubernetes-validate (PyPI)"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q "kubernetes-validate>=1.31,<2"
fi
if [ ! -d "$tools/node_modules/@kubernetes-models/keda" ]; then
  echo "check-k8s: installing @kubernetes-models/keda and /prometheus-operator (npm)"
  (cd "$tools" && npm install --silent --no-audit --no-fund --engine-strict=false \
    @kubernetes-models/keda@2 @kubernetes-models/prometheus-operator@6 js-yaml@4 >/dev/null)
fi
cp scripts/check-k8s.mjs "$tools/check-k8s.mjs"

status=0
for dir in deploy/kustomize/overlays/*/; do
  name=$(basename "$dir")
  kubectl kustomize "$dir" > "$out/$name.yaml"
  echo "check-k8s: $name: $(grep -c '^kind:' "$out/$name.yaml") objects rendered"
  for v in "${versions[@]}"; do
    # Warnings name the CRD kinds this tool has no schema for; the node
    # script checks those. Every failure is fatal.
    if ! "$tools/venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$out/$name.yaml"; then
      echo "check-k8s: $name: invalid for Kubernetes $v" >&2
      status=1
    fi
  done
  node "$tools/check-k8s.mjs" "$out/$name.yaml" || status=1
done
[ "$status" = 0 ] && echo "check-k8s: every overlay renders and validates"
exit "$status"
