/**
 * The status a Saga should have: Ready when its spec is valid and its orchestrator and
 * every step service exist as AiServices in its namespace; otherwise the reason and
 * exactly what is missing. Pure.
 */
import type { Condition } from './aiservice-status.js';

export interface SagaObservation {
  generation: number;
  /** Errors aimesh validate reports (rules the API server cannot check, such as templates). */
  invalid?: string;
  orchestratorExists: boolean;
  orchestrator: string;
  missingServices: string[];
  previous?: { conditions?: Condition[] };
  now: string;
}

export interface SagaStatusValue {
  observedGeneration: number;
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
        : (['True', 'Ready', `definitions handed to the sidecars of ${observed.orchestrator}`] as const);
  const previous = observed.previous?.conditions?.find((c) => c.type === 'Ready');
  const unchanged = previous && previous.status === status && previous.reason === reason;
  return {
    observedGeneration: observed.generation,
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
