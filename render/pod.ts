/**
 * The pod escape hatch (spec.pod) and label propagation, applied to the rendered JSON
 * rather than through cdk8s' typed props: Kubernetes' own types pass through exactly as
 * the user wrote them (cdk8s would drop or re-shape fields it models differently, such
 * as quantities). Pure.
 */
import type { AiService } from '../api/index.js';

type Json = Record<string, unknown>;
type Container = { name: string; securityContext?: Json; volumeMounts?: Json[]; [field: string]: unknown };
type PodSpec = {
  containers: Container[];
  securityContext?: Json;
  volumes?: Json[];
  imagePullSecrets?: Json[];
  [field: string]: unknown;
};
type Rendered = { kind: string; metadata: { labels?: Record<string, string> }; spec?: unknown };

const APP_CONTAINER = 'app';

/**
 * Labels on the AiService reach every object it owns, as labels on a Deployment reach
 * nothing by themselves but users expect (kubectl get -l team=x finds the children).
 * aimesh's own labels win on a clash, since selectors depend on them.
 */
export function propagateLabels(objects: Rendered[], resource: AiService): void {
  const own = resource.metadata.labels ?? {};
  if (Object.keys(own).length === 0) return;
  for (const object of objects) object.metadata.labels = { ...own, ...object.metadata.labels };
}

/** Merges spec.pod over the Deployment's pod template: a field the user sets wins. */
export function applyPodOverrides(objects: Rendered[], resource: AiService): void {
  const pod = resource.spec.pod;
  if (!pod) return;
  for (const object of objects) {
    if (object.kind !== 'Deployment') continue;
    const template = (object.spec as { template: { metadata: Json; spec: PodSpec } }).template;
    const metadata = template.metadata as { labels?: Json; annotations?: Json };
    if (pod.labels) metadata.labels = { ...pod.labels, ...metadata.labels };
    if (pod.annotations) metadata.annotations = { ...metadata.annotations, ...pod.annotations };

    const spec = template.spec;
    if (pod.securityContext) spec.securityContext = { ...spec.securityContext, ...pod.securityContext };
    for (const field of [
      'nodeSelector',
      'tolerations',
      'affinity',
      'topologySpreadConstraints',
      'priorityClassName',
    ] as const) {
      if (pod[field] !== undefined) spec[field] = pod[field];
    }
    if (pod.imagePullSecrets)
      spec.imagePullSecrets = [...(spec.imagePullSecrets ?? []), ...pod.imagePullSecrets];
    if (pod.volumes) spec.volumes = [...(spec.volumes ?? []), ...pod.volumes];

    const app = spec.containers.find((c) => c.name === APP_CONTAINER);
    if (!app || !pod.app) continue;
    const { securityContext, volumeMounts, ...rest } = pod.app;
    Object.assign(app, rest);
    if (securityContext) app.securityContext = { ...app.securityContext, ...securityContext };
    if (volumeMounts) app.volumeMounts = [...(app.volumeMounts ?? []), ...volumeMounts];
  }
}
