/**
 * The status an AiService should have, from what is true in the cluster. Pure; the
 * reconciler writes it only when it differs from what is stored.
 */
import type { AiService } from '../../api/index.js';

export interface Condition {
  type: 'Ready' | 'Progressing' | 'Degraded' | 'IstioPolicies' | 'SidecarInjected';
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
  /**
   * Why the Deployment cannot make pods or keep them, from its own conditions
   * (ReplicaFailure such as FailedCreate, Available=False): Degraded reports it as is.
   */
  failure?: { reason: string; message: string };
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
  /**
   * Whether the cluster serves Istio's kinds, for an AiService that asks for what only
   * Istio enforces (mTLS, allowed callers); undefined when it asks for neither.
   */
  istio?: { installed: boolean };
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
  // As `kubectl rollout status` decides: the controller saw the latest spec, every wanted
  // replica runs the new template, and they are available. Updated but unavailable pods
  // (crash loops, image pulls, a missing node) are still rolling out.
  const rolledOut =
    state.deployment !== undefined &&
    (deployment.observedGeneration ?? 0) >= (deployment.generation ?? 0) &&
    (deployment.updatedReplicas ?? 0) >= wanted &&
    available >= wanted;
  const ready = !state.applyError && rolledOut;
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
          : deployment.failure
            ? condition('Degraded', true, deployment.failure.reason, deployment.failure.message)
            : condition('Degraded', false, 'AsExpected', 'all children are applied'),
      ...(state.istio === undefined
        ? []
        : [
            state.istio.installed
              ? condition('IstioPolicies', true, 'Applied', 'mTLS and allowed callers are enforced by Istio')
              : condition(
                  'IstioPolicies',
                  false,
                  'IstioNotInstalled',
                  "Istio's CRDs (networking.istio.io/v1, security.istio.io/v1) are not installed, so spec.security (mTLS, allowedCallers) is not enforced; install Istio, or set spec.security.mtls: DISABLE to say you do not need it",
                ),
          ]),
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
