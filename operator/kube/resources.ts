import { GROUP_VERSION } from '../../api/index.js';

/** A kind the operator reads or writes, with what it takes to build its REST path. */
export interface ResourceType {
  apiVersion: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export const AI_SERVICE: ResourceType = {
  apiVersion: GROUP_VERSION,
  kind: 'AiService',
  plural: 'aiservices',
  namespaced: true,
};
export const SAGA: ResourceType = {
  apiVersion: GROUP_VERSION,
  kind: 'Saga',
  plural: 'sagas',
  namespaced: true,
};
export const LEASE: ResourceType = {
  apiVersion: 'coordination.k8s.io/v1',
  kind: 'Lease',
  plural: 'leases',
  namespaced: true,
};
export const EVENT: ResourceType = { apiVersion: 'v1', kind: 'Event', plural: 'events', namespaced: true };

/** What the admission server and miss detection read and write (see operator/admission). */
export const SECRET: ResourceType = { apiVersion: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true };
export const POD: ResourceType = { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespaced: true };
export const NAMESPACE: ResourceType = {
  apiVersion: 'v1',
  kind: 'Namespace',
  plural: 'namespaces',
  namespaced: false,
};
export const VALIDATING_WEBHOOK_CONFIGURATION: ResourceType = {
  apiVersion: 'admissionregistration.k8s.io/v1',
  kind: 'ValidatingWebhookConfiguration',
  plural: 'validatingwebhookconfigurations',
  namespaced: false,
};
export const MUTATING_WEBHOOK_CONFIGURATION: ResourceType = {
  apiVersion: 'admissionregistration.k8s.io/v1',
  kind: 'MutatingWebhookConfiguration',
  plural: 'mutatingwebhookconfigurations',
  namespaced: false,
};

/** Istio's kinds: written only while the cluster serves them (Istio is optional). */
export const ISTIO_TYPES: ResourceType[] = [
  {
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    plural: 'destinationrules',
    namespaced: true,
  },
  {
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    plural: 'virtualservices',
    namespaced: true,
  },
  {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    plural: 'peerauthentications',
    namespaced: true,
  },
  {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    plural: 'authorizationpolicies',
    namespaced: true,
  },
];

/** Every kind an AiService's children can be; the operator watches and prunes these. */
export const CHILD_TYPES: ResourceType[] = [
  { apiVersion: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true },
  { apiVersion: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true },
  { apiVersion: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  { apiVersion: 'apps/v1', kind: 'Deployment', plural: 'deployments', namespaced: true },
  {
    apiVersion: 'autoscaling/v2',
    kind: 'HorizontalPodAutoscaler',
    plural: 'horizontalpodautoscalers',
    namespaced: true,
  },
  { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', plural: 'poddisruptionbudgets', namespaced: true },
  ...ISTIO_TYPES,
];

export function typeOf(apiVersion: string, kind: string): ResourceType | undefined {
  return [AI_SERVICE, SAGA, ...CHILD_TYPES].find((t) => t.apiVersion === apiVersion && t.kind === kind);
}

/** REST path of a collection (namespace given) or of all namespaces (namespace undefined). */
export function collectionPath(type: ResourceType, namespace?: string): string {
  const base = type.apiVersion.includes('/') ? `/apis/${type.apiVersion}` : `/api/${type.apiVersion}`;
  return namespace && type.namespaced
    ? `${base}/namespaces/${namespace}/${type.plural}`
    : `${base}/${type.plural}`;
}

export function objectPath(type: ResourceType, namespace: string, name: string): string {
  return `${collectionPath(type, namespace)}/${encodeURIComponent(name)}`;
}
