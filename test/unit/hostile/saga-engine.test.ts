/**
 * The saga engine renders each step call with renderStepRequest: input that would
 * re-target a call fails the execution with the reason before any call is made.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { Registry } from 'prom-client';
import { Writable } from 'node:stream';
import { validateResource, type Saga, type SagaSpec } from '../../../api/index.js';
import { createLogger } from '../../../lib/log/index.js';
import type { StepCall } from '../../../sidecar/saga/caller.js';
import { SagaEngine } from '../../../sidecar/saga/engine.js';
import { TERMINAL_STATES, type Execution } from '../../../sidecar/saga/machine.js';
import { ConflictError, type SagaStore } from '../../../sidecar/saga/store.js';
import { compileSaga } from '../../../sidecar/config/compile.js';

/** Enough of a store for one process: versions checked, everything in memory. */
class MemoryStore implements SagaStore {
  private readonly executions = new Map<string, Execution>();
  async create(execution: Execution) {
    const existing = [...this.executions.values()].find(
      (e) => e.saga === execution.saga && e.idempotencyKey === execution.idempotencyKey,
    );
    if (existing) return { execution: existing, created: false };
    const saved = { ...execution, version: 1 };
    this.executions.set(saved.id, saved);
    return { execution: saved, created: true };
  }
  async save(execution: Execution) {
    if (this.executions.get(execution.id)?.version !== execution.version)
      throw new ConflictError(`execution ${execution.id} changed`);
    const saved = { ...execution, version: execution.version + 1 };
    this.executions.set(saved.id, saved);
    return saved;
  }
  async get(id: string) {
    return this.executions.get(id);
  }
  async list() {
    return [...this.executions.values()];
  }
  async unfinished() {
    return [...this.executions.values()].filter((e) => !TERMINAL_STATES.includes(e.state));
  }
  async prune() {
    return 0;
  }
  async claim() {
    return true;
  }
  async release() {}
  async close() {}
}

function sagaSpec(): SagaSpec {
  const result = validateResource({
    apiVersion: 'aimesh.io/v1alpha1',
    kind: 'Saga',
    metadata: { name: 'orders', namespace: 'default' },
    spec: {
      orchestrator: 'orchestrator',
      steps: [
        {
          name: 'reserve',
          action: {
            service: 'inventory',
            path: '/items/{{ input.item }}/reserve',
            headers: { 'x-user': '{{ input.user }}' },
          },
          retry: { maxAttempts: 1 },
        },
      ],
    },
  });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return (result.resource as Saga).spec;
}

let engine: SagaEngine | undefined;
afterEach(async () => engine?.stop());

async function run(input: Record<string, unknown>) {
  const calls: StepCall[] = [];
  engine = new SagaEngine({
    definitions: new Map([['orders', compileSaga(sagaSpec())]]),
    store: new MemoryStore(),
    call: async (call) => {
      calls.push(call);
      return { ok: true, response: { status: 200, headers: {}, body: {} } };
    },
    log: createLogger('test', {
      level: 'error',
      destination: new Writable({ write: (_c, _e, done) => done() }),
    }),
    registry: new Registry(),
  });
  const { execution } = await engine.start('orders', input, `key-${Math.random()}`);
  return { finished: await engine.waitFor(execution.id, 5000), calls };
}

describe('saga engine with hostile input', () => {
  it('calls the step with the value encoded as one path segment', async () => {
    const { finished, calls } = await run({ item: 'a/../../admin?x#y', user: 'u1' });
    expect(finished.state).toBe('completed');
    expect(calls.map((c) => [c.service, c.path, c.headers['x-user']])).toEqual([
      ['inventory', '/items/a%2F..%2F..%2Fadmin%3Fx%23y/reserve', 'u1'],
    ]);
  });

  it.each([
    [
      { item: '..', user: 'u1' },
      'path placeholder "{{ input.item }}" reads ".." cannot be a URL path segment',
    ],
    [{ item: 'a', user: 'u1\r\nx-admin: true' }, 'header "x-user" contains a line break or NUL'],
    [{ item: 'a', user: {} }, 'placeholder "{{ input.user }}" in the header x-user reads an object'],
    [{ item: 'toString' }, 'placeholder "{{ input.user }}" reads a field that is not there ("user")'],
  ])('fails %j before any call, with the reason', async (input, reason) => {
    const { finished, calls } = await run(input);
    expect(calls).toEqual([]);
    expect(finished.state).not.toBe('completed');
    expect(finished.reason).toContain('step "reserve" action: ');
    expect(finished.reason).toContain(reason);
  });
});
