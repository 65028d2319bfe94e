// Validates the CRD objects of a rendered overlay (scripts/check-k8s.sh)
// against schemas generated from the CRDs themselves. Kubernetes' own
// kinds are kubernetes-validate's; any other kind fails here.
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const crds = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};
// Kinds of Kubernetes itself (checked by kubernetes-validate).
const core = new Set(["v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"]);

const file = process.argv[2];
let failed = 0;
let checked = 0;
for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
  if (!doc) continue;
  const id = `${doc.apiVersion}/${doc.kind}`;
  const name = `${doc.kind}/${doc.metadata?.name}`;
  if (core.has(doc.apiVersion)) continue;
  const Model = crds[id];
  if (!Model) {
    console.error(`check-k8s: ${file}: ${name}: no schema for ${id}`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    checked++;
  } catch (e) {
    console.error(`check-k8s: ${file}: ${name}: ${e.message}`);
    failed++;
  }
}
console.log(`check-k8s: ${file}: ${checked} custom resources valid`);
process.exit(failed ? 1 : 0);
