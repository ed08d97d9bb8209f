/**
 * The status an AiService should have, from what is true in the cluster. Pure; the
 * reconciler writes it only when it differs from what is stored.
 */
import type { AiService } from '../../api/index.js';

export interface Condition {
  type: 'Ready' | 'Progressing' | 'Degraded' | 'SidecarInjected';
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration: number;
  lastTransitionTime: string;
}

export interface DeploymentState {
  generation?: number;
  observedGeneration?: number;
  replicas?: number;
  updatedReplicas?: number;
  readyReplicas?: number;
  availableReplicas?: number;
  progressDeadlineExceeded?: boolean;
}

export interface AiServiceStatusValue {
  observedGeneration: number;
  replicas: number;
  readyReplicas: number;
  conditions: Condition[];
}

export interface ObservedState {
  resource: AiService & { metadata: { generation?: number } };
  deployment?: DeploymentState;
  /** Why applying the children failed, if it did. */
  applyError?: { reason: string; message: string };
  /** Set for an AiService that adopts existing pods: those of them without the sidecar. */
  adoption?: { missing: readonly { pod: string; reason: string; fix: string }[] };
  now: string;
}

export function desiredStatus(state: ObservedState): AiServiceStatusValue {
  const generation = state.resource.metadata.generation ?? 0;
  const deployment = state.deployment ?? {};
  const wanted = state.resource.spec.autoscaling?.minReplicas ?? state.resource.spec.replicas ?? 1;
  const available = deployment.availableReplicas ?? 0;
  const rolledOut =
    state.deployment !== undefined &&
    (deployment.observedGeneration ?? 0) >= (deployment.generation ?? 0) &&
    (deployment.updatedReplicas ?? 0) >= wanted;
  const ready = !state.applyError && rolledOut && available >= wanted;
  const previous = state.resource.status?.conditions ?? [];

  const condition = (type: Condition['type'], holds: boolean, reason: string, message: string): Condition => {
    const status = holds ? 'True' : 'False';
    const before = previous.find((c) => c.type === type);
    return {
      type,
      status,
      reason,
      message,
      observedGeneration: generation,
      lastTransitionTime:
        before?.status === status && before.lastTransitionTime ? before.lastTransitionTime : state.now,
    };
  };

  if (state.adoption) return adoptedStatus(state, state.adoption.missing, condition);

  const replicasMessage = `${available} of ${wanted} replicas available`;
  return {
    observedGeneration: generation,
    replicas: deployment.replicas ?? 0,
    readyReplicas: deployment.readyReplicas ?? 0,
    conditions: [
      state.applyError
        ? condition('Ready', false, state.applyError.reason, state.applyError.message)
        : condition('Ready', ready, ready ? 'Available' : 'ReplicasUnavailable', replicasMessage),
      state.applyError
        ? condition('Progressing', false, state.applyError.reason, 'children could not be applied')
        : condition(
            'Progressing',
            !rolledOut,
            rolledOut ? 'RolloutComplete' : 'RollingOut',
            rolledOut ? 'the Deployment has rolled out' : `rolling out: ${replicasMessage}`,
          ),
      state.applyError
        ? condition('Degraded', true, state.applyError.reason, state.applyError.message)
        : deployment.progressDeadlineExceeded
          ? condition('Degraded', true, 'ProgressDeadlineExceeded', 'the Deployment did not roll out in time')
          : condition('Degraded', false, 'AsExpected', 'all children are applied'),
    ],
  };
}

/**
 * An adopting AiService runs no pods of its own: it is ready when its children are applied
 * and every pod it adopts has the sidecar; SidecarInjected says which do not and the fix.
 */
function adoptedStatus(
  state: ObservedState,
  missing: readonly { pod: string; reason: string; fix: string }[],
  condition: (type: Condition['type'], holds: boolean, reason: string, message: string) => Condition,
): AiServiceStatusValue {
  const generation = state.resource.metadata.generation ?? 0;
  const injected =
    missing.length === 0
      ? condition('SidecarInjected', true, 'AllPodsInjected', 'every adopted pod runs the aimesh sidecar')
      : condition(
          'SidecarInjected',
          false,
          'PodsWithoutSidecar',
          `${missing.length} adopted pod(s) run without the aimesh sidecar: ${missing
            .slice(0, 5)
            .map((m) => `${m.pod} (${m.reason}; fix: ${m.fix})`)
            .join('; ')}`,
        );
  const error = state.applyError;
  return {
    observedGeneration: generation,
    replicas: 0,
    readyReplicas: 0,
    conditions: [
      error
        ? condition('Ready', false, error.reason, error.message)
        : condition('Ready', missing.length === 0, injected.reason, injected.message),
      condition('Progressing', false, 'Adopted', 'the adopted pods are rolled out by their own workload'),
      error
        ? condition('Degraded', true, error.reason, error.message)
        : condition('Degraded', missing.length > 0, injected.reason, injected.message),
      injected,
    ],
  };
}

/** True when two statuses say the same thing (transition times aside, key order aside). */
export function sameStatus(current: unknown, desired: AiServiceStatusValue): boolean {
  return current !== undefined && canonical(current) === canonical(desired);
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (key, inner: unknown) => {
    if (key === 'lastTransitionTime') return undefined;
    if (Array.isArray(inner) && key === 'conditions') {
      return [...(inner as { type: string }[])].sort((x, y) => x.type.localeCompare(y.type));
    }
    if (inner && typeof inner === 'object' && !Array.isArray(inner)) {
      return Object.fromEntries(Object.entries(inner).sort(([a], [b]) => a.localeCompare(b)));
    }
    return inner;
  });
}
