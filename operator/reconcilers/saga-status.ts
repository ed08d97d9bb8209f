/**
 * The status a Saga should have: Ready when its spec is valid, every step service exists
 * as an AiService in its namespace, and its orchestrator exists and is Ready itself (it is
 * the orchestrator's sidecars that run the saga); otherwise the reason and exactly what is
 * missing. Pure.
 */
import type { Condition } from './aiservice-status.js';

export interface SagaObservation {
  generation: number;
  /** Steps in the spec as observed (a printer column; `kubectl get` cannot count). */
  steps: number;
  /** Errors aimesh validate reports (rules the API server cannot check, such as templates). */
  invalid?: string;
  orchestratorExists: boolean;
  /** The orchestrator AiService's own Ready condition, when it has one. */
  orchestratorReady?: { status: string; message: string };
  orchestrator: string;
  missingServices: string[];
  previous?: { conditions?: Condition[] };
  now: string;
}

export interface SagaStatusValue {
  observedGeneration: number;
  steps: number;
  conditions: Condition[];
}

export function desiredSagaStatus(observed: SagaObservation): SagaStatusValue {
  const [status, reason, message] = observed.invalid
    ? (['False', 'InvalidSpec', observed.invalid] as const)
    : !observed.orchestratorExists
      ? ([
          'False',
          'OrchestratorNotFound',
          `spec.orchestrator: no AiService "${observed.orchestrator}" in this namespace; create it, it runs the saga in its sidecars`,
        ] as const)
      : observed.missingServices.length > 0
        ? ([
            'False',
            'StepServiceNotFound',
            `steps call ${observed.missingServices.map((s) => `"${s}"`).join(', ')}, which ${observed.missingServices.length > 1 ? 'are not AiServices' : 'is not an AiService'} in this namespace`,
          ] as const)
        : observed.orchestratorReady?.status !== 'True'
          ? ([
              'False',
              'OrchestratorNotReady',
              `the orchestrator ${observed.orchestrator} is not Ready (${observed.orchestratorReady?.message ?? 'no status yet'}); the saga runs in its sidecars`,
            ] as const)
          : (['True', 'Ready', `definitions handed to the sidecars of ${observed.orchestrator}`] as const);
  const previous = observed.previous?.conditions?.find((c) => c.type === 'Ready');
  const unchanged = previous && previous.status === status && previous.reason === reason;
  return {
    observedGeneration: observed.generation,
    steps: observed.steps,
    conditions: [
      {
        type: 'Ready',
        status,
        reason,
        message,
        observedGeneration: observed.generation,
        lastTransitionTime: unchanged ? previous.lastTransitionTime : observed.now,
      },
    ],
  };
}
