/**
 * No silent misses: which pods should run the aimesh sidecar but do not, why, and what
 * fixes it. A pod should have it when its namespace is labelled aimesh.io/inject=enabled
 * (and the pod does not opt out), when it is labelled enabled itself, or when an AiService
 * adopts it. Pure: the scan (operator) and `aimesh doctor` feed it what they listed.
 */
import { INJECT_DISABLED, INJECT_ENABLED, INJECT_LABEL, type AiService } from '../../api/index.js';
import { adoptersOf, decideInjection, hasSidecar, type PodLike } from '../../render/index.js';

/** Namespaces the webhook never touches (the chart's selectors say the same). */
export const NEVER_INJECTED = ['kube-system', 'kube-public', 'kube-node-lease'];

export interface LivePod extends PodLike {
  metadata: PodLike['metadata'] & {
    name: string;
    namespace: string;
    uid?: string;
    deletionTimestamp?: string;
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
  };
  status?: { phase?: string };
}

export interface NamespaceInfo {
  name: string;
  labels: Record<string, string>;
}

export interface Miss {
  namespace: string;
  pod: string;
  podUid?: string;
  /** The pod's controller (ReplicaSet, StatefulSet, ...), where the event goes. */
  owner?: { apiVersion: string; kind: string; name: string; uid: string };
  /** The AiService that adopts the pod, if one does. */
  adoptedBy?: string;
  reason: string;
  fix: string;
}

export interface MissInput {
  namespaces: readonly NamespaceInfo[];
  pods: readonly LivePod[];
  /** Valid AiServices, all namespaces. */
  aiServices: readonly AiService[];
  /** More namespaces never injected: the operator's own. */
  excluded: readonly string[];
  sidecarImage: string;
}

export function findMisses(input: MissInput): Miss[] {
  const labelsOf = new Map(input.namespaces.map((n) => [n.name, n.labels]));
  const excluded = new Set([...NEVER_INJECTED, ...input.excluded]);
  const misses: Miss[] = [];
  for (const pod of input.pods) {
    const { namespace, name } = pod.metadata;
    if (excluded.has(namespace) || pod.metadata.deletionTimestamp || hasSidecar(pod)) continue;
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
    const namespaceLabel = labelsOf.get(namespace)?.[INJECT_LABEL];
    const podLabel = pod.metadata.labels?.[INJECT_LABEL];
    const aiServices = input.aiServices.filter((a) => (a.metadata.namespace ?? 'default') === namespace);
    const adopter = adoptersOf(pod.metadata.labels ?? {}, aiServices)[0]?.metadata.name;
    const optedIn =
      (namespaceLabel === INJECT_ENABLED && podLabel !== INJECT_DISABLED) ||
      (namespaceLabel === undefined && podLabel === INJECT_ENABLED);
    if (!optedIn && adopter === undefined) continue;

    const owner = pod.metadata.ownerReferences?.find((o) => o.controller);
    const restart = restartCommand(pod, owner);
    const base = {
      namespace,
      pod: name,
      ...(pod.metadata.uid ? { podUid: pod.metadata.uid } : {}),
      ...(owner
        ? { owner: { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid } }
        : {}),
      ...(adopter ? { adoptedBy: adopter } : {}),
    };
    if (!optedIn) {
      misses.push({
        ...base,
        reason: `AiService ${adopter} adopts it, but neither its namespace nor the pod is labelled ${INJECT_LABEL}=enabled, so the webhook is never called for it${podLabel === INJECT_DISABLED || namespaceLabel === INJECT_DISABLED ? ' (it is labelled disabled)' : ''}`,
        fix: `kubectl label namespace ${namespace} ${INJECT_LABEL}=enabled, then ${restart}`,
      });
      continue;
    }
    // Ask the injection itself what it would do with this pod now.
    const decision = decideInjection(pod, {
      namespace,
      aiServices,
      sidecarImage: input.sidecarImage,
      nativeSidecar: true,
    });
    misses.push(
      decision.inject || decision.warnings.length === 0
        ? {
            ...base,
            reason:
              'created while the injection webhook did not answer (failurePolicy Ignore), or before injection was enabled',
            fix: restart,
          }
        : {
            ...base,
            reason: `the webhook refused it: ${decision.warnings.join('; ')}`,
            fix: `fix that, then ${restart}`,
          },
    );
  }
  return misses.sort((a, b) => `${a.namespace}/${a.pod}`.localeCompare(`${b.namespace}/${b.pod}`));
}

/** How to get the pod created again through the webhook. */
function restartCommand(pod: LivePod, owner: { kind: string; name: string } | undefined): string {
  const ns = pod.metadata.namespace;
  if (owner?.kind === 'ReplicaSet') {
    // A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
    const hash = pod.metadata.labels?.['pod-template-hash'];
    const deployment =
      hash && owner.name.endsWith(`-${hash}`) ? owner.name.slice(0, -hash.length - 1) : undefined;
    if (deployment) return `kubectl rollout restart deployment/${deployment} -n ${ns}`;
  }
  if (owner?.kind === 'StatefulSet' || owner?.kind === 'DaemonSet')
    return `kubectl rollout restart ${owner.kind.toLowerCase()}/${owner.name} -n ${ns}`;
  if (owner)
    return `kubectl delete pod ${pod.metadata.name} -n ${ns} (its ${owner.kind} ${owner.name} creates it again)`;
  return `kubectl delete pod ${pod.metadata.name} -n ${ns} and create it again`;
}
