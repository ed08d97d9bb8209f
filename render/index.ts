/**
 * The render function: an AiService in, the Kubernetes and Istio objects it stands for
 * out. Pure (no I/O, same input → same output); the operator applies its output and
 * `cdk8s synth` writes it to files, so both produce exactly the same objects.
 */
import { App, Chart } from 'cdk8s';
import { AIMESH_IMAGE } from '../api/index.js';
import { canonicalJson } from '../lib/json/index.js';
import type { RenderInput } from './inputs.js';
import { addIstioPolicies } from './istio.js';
import { sidecarConfigFor } from './sidecar-config.js';
import { consulConnection, type ConsulDefaults } from './consul.js';
import { applyPodOverrides, propagateLabels } from './pod.js';
import { addWorkload, markNativeSidecar } from './workload.js';

export { sidecarConfigFor } from './sidecar-config.js';
export { consulConnection, type ConsulDefaults } from './consul.js';
export {
  adoptersOf,
  applyPatch,
  decideInjection,
  hasSidecar,
  supportsNativeSidecars,
  type ContainerLike,
  type InjectionContext,
  type InjectionDecision,
  type JsonPatchAdd,
  type PodLike,
} from './inject.js';
export {
  DEFAULT_SIDECAR_RESOURCES,
  SIDECAR_CONTAINER,
  SIDECAR_NODE_OPTIONS,
  sidecarNodeOptions,
} from './workload.js';
export { namespaceOf, renderInputFor, renderInputs, type RenderInput } from './inputs.js';
export { asksForIstio } from './istio.js';
export { sagasOrchestratedBy, stepServices, grantsFor, istioPath } from './saga.js';
export {
  labelsFor,
  selectorFor,
  sidecarConfigMapName,
  upstreamPolicyName,
  SERVICE_LABEL,
  MANAGED_BY,
} from './names.js';

/** The sidecar is the aimesh image of this very version. */
export const DEFAULT_SIDECAR_IMAGE = AIMESH_IMAGE;

export interface RenderOptions {
  sidecarImage?: string;
  /**
   * Whether to render Istio policies (DestinationRule, VirtualService, PeerAuthentication,
   * AuthorizationPolicy). The operator sets it from what the cluster serves; GitOps renders
   * default to true, and `aimesh render --no-istio` turns it off.
   */
  istio?: boolean;
  /** The cluster's Consul: address, datacenter, token and CA Secrets (per-AiService fields win). */
  consul?: ConsulDefaults;
  clusterDomain?: string;
  /** Istio trust domain used in caller principals. */
  trustDomain?: string;
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

/**
 * Renders one AiService from its gathered input (see inputs.ts: the operator and every
 * GitOps path gather it with the same functions).
 */
export function renderAiService(input: RenderInput, options: RenderOptions = {}): KubeObject[] {
  const { resource, namespace, sagas } = input;
  const chart = new Chart(new App(), resource.metadata.name, { disableResourceNameHashes: true });
  const consul = consulConnection(resource, options.consul);
  const config = sidecarConfigFor(resource, namespace, sagas, consul);
  addWorkload(chart, resource, {
    namespace,
    sidecarImage: options.sidecarImage ?? DEFAULT_SIDECAR_IMAGE,
    sidecarConfigJson: `${canonicalJson(config)}\n`,
    consul,
  });
  if (options.istio !== false) {
    addIstioPolicies(chart, resource, {
      namespace,
      clusterDomain: options.clusterDomain ?? 'cluster.local',
      trustDomain: options.trustDomain ?? 'cluster.local',
      sagas,
    });
  }
  const objects = chart.toJson() as KubeObject[];
  if (resource.spec.sidecar.enabled && resource.spec.sidecar.native) markNativeSidecar(objects);
  applyPodOverrides(objects, resource);
  propagateLabels(objects, resource);
  if (options.owner) {
    const ownerReference = { ...options.owner, controller: true, blockOwnerDeletion: true };
    for (const object of objects) object.metadata.ownerReferences = [ownerReference];
  }
  return objects;
}
