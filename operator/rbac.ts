/**
 * The operator's permissions, derived from the kinds it actually reads and writes so the
 * Helm chart's RBAC cannot drift from the code. Least privilege: no wildcards, no
 * Secrets, no Pods, leases only in the operator's own namespace.
 */
import { AI_SERVICE, CHILD_TYPES, EVENT, LEASE, SAGA, type ResourceType } from './kube/resources.js';

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

const READ = ['get', 'list', 'watch'];
/**
 * Server-side apply is a PATCH, and the API server also checks create when the PATCH
 * creates the object; pruning is a DELETE. No update: the operator never PUTs children.
 */
const MANAGE = [...READ, 'create', 'patch', 'delete'];

/** Cluster-wide rules: the custom resources, their children and events. */
export function operatorClusterRules(): PolicyRule[] {
  return [
    rule([AI_SERVICE, SAGA], READ),
    rule([AI_SERVICE, SAGA], ['get', 'patch'], '/status'),
    // Children carry blockOwnerDeletion; clusters with the OwnerReferencesPermissionEnforcement
    // admission plugin require update on the owner's finalizers for that.
    rule([AI_SERVICE], ['update'], '/finalizers'),
    ...groupByApiGroup(CHILD_TYPES).map((types) => rule(types, MANAGE)),
    rule([EVENT], ['create', 'patch']),
  ];
}

/** Rules in the operator's own namespace: the leader-election Lease. */
export function operatorNamespaceRules(): PolicyRule[] {
  return [rule([LEASE], ['get', 'create', 'update'])];
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
