/**
 * The operator's permissions, derived from the kinds it actually reads and writes so the
 * Helm chart's RBAC cannot drift from the code. Least privilege: no wildcards; Pods and
 * Namespaces read only (miss detection); of Secrets and webhook configurations only its
 * own, by name; leases only in the operator's own namespace. An operator that watches one
 * namespace gets the namespaced rules in a Role there, and a ClusterRole only for the
 * cluster-scoped objects a Role cannot grant, each by name.
 */
import {
  AI_SERVICE,
  CHILD_TYPES,
  EVENT,
  LEASE,
  MUTATING_WEBHOOK_CONFIGURATION,
  VALIDATING_WEBHOOK_CONFIGURATION,
  NAMESPACE,
  POD,
  SAGA,
  SECRET,
  type ResourceType,
} from './kube/resources.js';

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** The names of the objects the operator may touch only by name (the chart's, per release). */
export interface OwnObjectNames {
  webhookConfiguration: string;
  webhookSecret: string;
}

const READ = ['get', 'list', 'watch'];
/**
 * Server-side apply is a PATCH, and the API server also checks create when the PATCH
 * creates the object; pruning is a DELETE. No update: the operator never PUTs children.
 */
const MANAGE = [...READ, 'create', 'patch', 'delete'];

/** Cluster-wide rules: the custom resources, their children and events, every namespace. */
export function operatorClusterRules(names: OwnObjectNames): PolicyRule[] {
  return [
    ...watchedNamespaceRules(),
    // Miss detection reads the labels of every namespace to find those that opt in.
    rule([NAMESPACE], READ),
    webhookConfigurationRule(names),
  ];
}

/** With one watched namespace: what a Role there grants (namespaced kinds only). */
export function operatorWatchedNamespaceRules(): PolicyRule[] {
  return watchedNamespaceRules();
}

/**
 * With one watched namespace: the cluster-scoped objects it still reads or writes, by
 * name. Miss detection reads only the watched Namespace; Istio is detected through API
 * discovery, which every authenticated user may read.
 */
export function operatorScopedClusterRules(names: OwnObjectNames, watchedNamespace: string): PolicyRule[] {
  return [
    { ...rule([NAMESPACE], ['get']), resourceNames: [watchedNamespace] },
    webhookConfigurationRule(names),
  ];
}

function watchedNamespaceRules(): PolicyRule[] {
  return [
    rule([AI_SERVICE, SAGA], READ),
    rule([AI_SERVICE, SAGA], ['get', 'patch'], '/status'),
    // Children carry blockOwnerDeletion; clusters with the OwnerReferencesPermissionEnforcement
    // admission plugin require update on the owner's finalizers for that.
    rule([AI_SERVICE], ['update'], '/finalizers'),
    ...groupByApiGroup(CHILD_TYPES).map((types) => rule(types, MANAGE)),
    rule([EVENT], ['create', 'patch']),
    // Miss detection: pods of opted-in namespaces that run without the sidecar.
    rule([POD], READ),
  ];
}

/**
 * The caBundle of its own webhook configurations, mutating (injection) and validating
 * (AiService and Saga), which share one name (resourceNames cannot scope create).
 */
function webhookConfigurationRule(names: OwnObjectNames): PolicyRule {
  return {
    ...rule([MUTATING_WEBHOOK_CONFIGURATION, VALIDATING_WEBHOOK_CONFIGURATION], ['get', 'update', 'patch']),
    resourceNames: [names.webhookConfiguration],
  };
}

/** Rules in the operator's own namespace: the leader-election Lease and the webhook's certificate Secret. */
export function operatorNamespaceRules(names: OwnObjectNames): PolicyRule[] {
  return [
    rule([LEASE], ['get', 'create', 'update']),
    // The chart creates the Secret empty, so the operator needs no create (which resourceNames cannot scope).
    { ...rule([SECRET], ['get', 'update', 'patch']), resourceNames: [names.webhookSecret] },
  ];
}

function rule(types: ResourceType[], verbs: string[], subresource = ''): PolicyRule {
  return {
    apiGroups: [apiGroupOf(types[0] as ResourceType)],
    resources: types.map((t) => `${t.plural}${subresource}`),
    verbs,
  };
}

function groupByApiGroup(types: ResourceType[]): ResourceType[][] {
  const groups = new Map<string, ResourceType[]>();
  for (const type of types) groups.set(apiGroupOf(type), [...(groups.get(apiGroupOf(type)) ?? []), type]);
  return [...groups.values()];
}

function apiGroupOf(type: ResourceType): string {
  return type.apiVersion.includes('/') ? (type.apiVersion.split('/')[0] as string) : '';
}
