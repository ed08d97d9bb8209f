/**
 * The render function: an AiService in, the Kubernetes and Istio objects it stands for
 * out. Pure (no I/O, same input → same output); the operator applies its output and
 * `cdk8s synth` writes it to files, so both produce exactly the same objects.
 */
import { App, Chart } from 'cdk8s';
import type { AiService, Saga } from '../../api/index.js';
import { addIstioPolicies } from './istio.js';
import { sidecarConfigFor } from './sidecar-config.js';
import { addWorkload, markNativeSidecar } from './workload.js';

export { sidecarConfigFor } from './sidecar-config.js';
export { sagasOrchestratedBy, stepServices, grantsFor, istioPath } from './saga.js';
export {
  labelsFor,
  selectorFor,
  sidecarConfigMapName,
  upstreamPolicyName,
  SERVICE_LABEL,
  MANAGED_BY,
} from './names.js';

export const DEFAULT_SIDECAR_IMAGE = 'ghcr.io/aimesh/aimesh:0.1.0';

export interface RenderOptions {
  /** Namespace for children when the resource names none. */
  namespace?: string;
  sidecarImage?: string;
  clusterDomain?: string;
  /** Istio trust domain used in caller principals. */
  trustDomain?: string;
  /** The valid Sagas of the namespace: they add saga definitions and step grants. */
  sagas?: readonly Saga[];
  /** Set by the operator: children get a controller owner reference to this object. */
  owner?: { apiVersion: string; kind: string; name: string; uid: string };
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    ownerReferences?: Record<string, unknown>[];
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export function renderAiService(resource: AiService, options: RenderOptions = {}): KubeObject[] {
  const namespace = resource.metadata.namespace ?? options.namespace ?? 'default';
  const chart = new Chart(new App(), resource.metadata.name, { disableResourceNameHashes: true });
  const config = sidecarConfigFor(resource, namespace, options.sagas ?? []);
  addWorkload(chart, resource, {
    namespace,
    sidecarImage: options.sidecarImage ?? DEFAULT_SIDECAR_IMAGE,
    sidecarConfigJson: `${JSON.stringify(config, null, 2)}\n`,
  });
  addIstioPolicies(chart, resource, {
    namespace,
    clusterDomain: options.clusterDomain ?? 'cluster.local',
    trustDomain: options.trustDomain ?? 'cluster.local',
    sagas: options.sagas ?? [],
  });
  const objects = chart.toJson() as KubeObject[];
  if (resource.spec.sidecar.enabled && resource.spec.sidecar.native) markNativeSidecar(objects);
  if (options.owner) {
    const ownerReference = { ...options.owner, controller: true, blockOwnerDeletion: true };
    for (const object of objects) object.metadata.ownerReferences = [ownerReference];
  }
  return objects;
}
