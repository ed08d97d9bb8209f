import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { renderTemplate, validateResource, type Saga, type SagaSpec } from '../../../api/index.js';
import {
  abort,
  backoff,
  isRetryable,
  nextAction,
  recordOutcome,
  startExecution,
  type Action,
  type Execution,
  type Outcome,
} from '../../../sidecar/saga/machine.js';
import { REPO_DIR } from '../../env/components.js';

function exampleSaga(file: string): SagaSpec {
  const result = validateResource(parse(readFileSync(join(REPO_DIR, 'examples', file), 'utf8')));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return (result.resource as Saga).spec;
}

const healthData = exampleSaga('suoke-life/health-data-saga.yaml');
const ok = (body: unknown = {}): Outcome => ({ ok: true, response: { status: 200, headers: {}, body } });
const fail = (status: number): Outcome => ({ ok: false, failure: { status }, message: `status ${status}` });
const noJitter = () => 0.5;

/** Runs the machine against scripted outcomes; returns the calls made, in order. */
function run(spec: SagaSpec, outcomes: (action: Extract<Action, { kind: 'call' }>) => Outcome) {
  let execution: Execution = startExecution(spec, 'health-data', 'e1', 'key-1', { userId: 'u1' }, 0);
  const calls: string[] = [];
  for (let now = 0; ; now += 1) {
    const action = nextAction(spec, execution);
    if (action.kind === 'finished') return { execution, calls };
    calls.push(`${action.phase}:${execution.steps[action.step]?.name}#${action.attempt}`);
    execution = recordOutcome(
      spec,
      execution,
      action,
      outcomes(action),
      Math.max(now, action.notBefore),
      noJitter,
    );
    if (calls.length > 200) throw new Error('runaway');
  }
}

describe('saga state machine', () => {
  it('runs every step in order and completes', () => {
    const { execution, calls } = run(healthData, () => ok());
    expect(execution.state).toBe('completed');
    expect(calls).toEqual([
      'action:validate_user#1',
      'action:save_health_data#1',
      'action:update_blockchain#1',
      'action:trigger_ai_analysis#1',
    ]);
  });

  it('compensates completed steps in reverse order when a step fails for good', () => {
    const { execution, calls } = run(healthData, (a) =>
      healthData.steps[a.step]?.name === 'update_blockchain' && a.phase === 'action' ? fail(400) : ok(),
    );
    expect(execution.state).toBe('compensated');
    expect(calls).toEqual([
      'action:validate_user#1',
      'action:save_health_data#1',
      'action:update_blockchain#1',
      'compensation:save_health_data#1',
      'compensation:validate_user#1',
    ]);
    expect(execution.reason).toContain('update_blockchain');
  });

  it('retries a flaky step with growing backoff, up to maxAttempts, then compensates', () => {
    let tries = 0;
    const flaky = run(healthData, (a) =>
      healthData.steps[a.step]?.name === 'update_blockchain' && a.phase === 'action' && ++tries < 3
        ? fail(503)
        : ok(),
    );
    expect(flaky.execution.state).toBe('completed');
    expect(flaky.calls.filter((c) => c.startsWith('action:update_blockchain'))).toHaveLength(3);
    const down = run(healthData, (a) =>
      healthData.steps[a.step]?.name === 'update_blockchain' && a.phase === 'action' ? fail(503) : ok(),
    );
    expect(down.calls.filter((c) => c.startsWith('action:update_blockchain'))).toHaveLength(4);
    expect(down.execution.state).toBe('compensated');
  });

  it('after the pivot, failures are retried forward, never compensated', () => {
    const spec: SagaSpec = {
      ...healthData,
      steps: healthData.steps.map((s) =>
        s.name === 'update_blockchain'
          ? { ...s, pivot: true, compensation: undefined }
          : { ...s, pivot: false },
      ),
    };
    let tries = 0;
    const { execution, calls } = run(spec, (a) =>
      spec.steps[a.step]?.name === 'trigger_ai_analysis' && ++tries < 15 ? fail(400) : ok(),
    );
    expect(execution.state).toBe('completed');
    expect(calls.filter((c) => c.startsWith('compensation'))).toEqual([]);
    expect(tries).toBe(15);
  });

  it('a compensation that keeps failing stops the execution in compensation-failed, never dropped', () => {
    const { execution, calls } = run(healthData, (a) => {
      const name = healthData.steps[a.step]?.name;
      if (name === 'update_blockchain' && a.phase === 'action') return fail(400);
      if (name === 'save_health_data' && a.phase === 'compensation') return fail(500);
      return ok();
    });
    expect(execution.state).toBe('compensation-failed');
    expect(calls.filter((c) => c.startsWith('compensation:save_health_data'))).toHaveLength(20);
    // validate_user was not compensated out of order.
    expect(calls).not.toContain('compensation:validate_user#1');
    expect(execution.steps.find((s) => s.name === 'save_health_data')?.status).toBe('compensation-failed');
  });

  it('timeout and cancel compensate before the pivot and are refused after it', () => {
    let execution = startExecution(healthData, 'health-data', 'e2', 'k', {}, 0);
    const first = nextAction(healthData, execution) as Extract<Action, { kind: 'call' }>;
    execution = recordOutcome(healthData, execution, first, ok(), 1);
    const aborted = abort(healthData, execution, 'timed out', 2) as Execution;
    expect(aborted.state).toBe('compensating');
    expect(nextAction(healthData, aborted)).toMatchObject({ phase: 'compensation', step: 0 });
    expect(abort(healthData, { ...execution, pivotPassed: true }, 'cancel', 3)).toMatch(/pivot/);
  });

  it('gives every call an idempotency key per execution, step and phase, the same on retries', () => {
    const execution = startExecution(healthData, 'health-data', 'exec-9', 'k', {}, 0);
    expect(nextAction(healthData, execution)).toMatchObject({
      idempotencyKey: 'exec-9:validate_user:action',
    });
    const retried = recordOutcome(
      healthData,
      execution,
      nextAction(healthData, execution) as Extract<Action, { kind: 'call' }>,
      fail(503),
      5,
      noJitter,
    );
    expect(nextAction(healthData, retried)).toMatchObject({
      idempotencyKey: 'exec-9:validate_user:action',
      attempt: 2,
    });
    expect(retried.notBefore).toBe(5 + 150);
  });

  it('classifies failures by retryOn and backs off exponentially within the cap', () => {
    expect(isRetryable(['5xx'], { status: 503 })).toBe(true);
    expect(isRetryable(['5xx'], { status: 404 })).toBe(false);
    expect(isRetryable(['429'], { status: 429 })).toBe(true);
    expect(isRetryable(['4xx'], { status: 409 })).toBe(true);
    expect(isRetryable(['timeout'], { error: 'timeout' })).toBe(true);
    expect(isRetryable(['5xx', 'timeout'], { error: 'template' })).toBe(false);
    const settings = { initial: '1s', multiplier: 2, max: '10s' };
    expect([1, 2, 3, 4, 5].map((a) => backoff(settings, a, () => 1))).toEqual([
      1000, 2000, 4000, 8000, 10000,
    ]);
    expect(backoff(settings, 1, () => 0)).toBe(500);
  });
});

describe('template rendering', () => {
  const context = {
    input: { userId: 'u1', measurements: [{ hr: 60 }] },
    execution: { id: 'e1', saga: 'health-data', startedAt: '2026-11-24T00:00:00Z' },
    steps: {
      save: { response: { status: 201, headers: {}, body: { recordId: 'r-7', items: [{ id: 3 }] } } },
    },
  };

  it('keeps the type of a lone placeholder and writes text inside strings', () => {
    expect(
      renderTemplate(
        {
          path: '/users/{{ input.userId }}/records/{{ steps.save.response.body.recordId }}',
          measurements: '{{ input.measurements }}',
          first: '{{ steps.save.response.body.items[0].id }}',
          label: 'status {{ steps.save.response.status }}',
          literal: 42,
        },
        context,
      ),
    ).toEqual({
      path: '/users/u1/records/r-7',
      measurements: [{ hr: 60 }],
      first: 3,
      label: 'status 201',
      literal: 42,
    });
  });

  it('names the placeholder when a field is missing', () => {
    expect(() => renderTemplate('{{ steps.save.response.body.nope }}', context)).toThrow(
      'placeholder "{{ steps.save.response.body.nope }}" reads a field that is not there ("nope")',
    );
  });
});
