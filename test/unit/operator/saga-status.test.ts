import { describe, expect, it } from '@jest/globals';
import { desiredSagaStatus } from '../../../operator/reconcilers/saga-status.js';

describe('Saga status', () => {
  const base = {
    generation: 2,
    steps: 4,
    orchestrator: 'health-orchestrator',
    orchestratorExists: true,
    orchestratorReady: { status: 'True', message: '1 of 1 replicas available' },
    missingServices: [],
    now: '2026-11-24T10:00:00Z',
  };

  it('is Ready when everything exists, and names what is missing when not', () => {
    expect(desiredSagaStatus(base).conditions[0]).toMatchObject({
      status: 'True',
      reason: 'Ready',
      observedGeneration: 2,
    });
    expect(desiredSagaStatus(base).steps).toBe(4);
    expect(desiredSagaStatus({ ...base, orchestratorExists: false }).conditions[0]).toMatchObject({
      status: 'False',
      reason: 'OrchestratorNotFound',
    });
    expect(desiredSagaStatus({ ...base, missingServices: ['a', 'b'] }).conditions[0]?.message).toBe(
      'steps call "a", "b", which are not AiServices in this namespace',
    );
    expect(
      desiredSagaStatus({
        ...base,
        orchestratorReady: { status: 'False', message: '0 of 2 replicas available' },
      }).conditions[0],
    ).toMatchObject({
      status: 'False',
      reason: 'OrchestratorNotReady',
      message: expect.stringContaining('0 of 2'),
    });
    expect(desiredSagaStatus({ ...base, orchestratorReady: undefined }).conditions[0]?.reason).toBe(
      'OrchestratorNotReady',
    );
    expect(
      desiredSagaStatus({ ...base, invalid: 'spec.steps[0].action.path: bad' }).conditions[0],
    ).toMatchObject({ reason: 'InvalidSpec' });
  });

  it('keeps the transition time while the condition holds', () => {
    const first = desiredSagaStatus(base);
    const later = desiredSagaStatus({ ...base, now: '2026-11-24T11:00:00Z', previous: first });
    expect(later.conditions[0]?.lastTransitionTime).toBe('2026-11-24T10:00:00Z');
  });
});
