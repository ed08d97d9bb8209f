import { afterAll, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { createLogger } from '../../lib/log/index.js';
import { ConsulClient } from '../../sidecar/discovery/index.js';
import { ConsulSagaStore } from '../../sidecar/saga/consul-store.js';
import type { Execution } from '../../sidecar/saga/machine.js';
import { ConflictError } from '../../sidecar/saga/store.js';
import { sharedEnvironment } from './shared.js';

/**
 * The Consul store against the shared real Consul agent: concurrent changes batched into
 * transactions, a conflict in a batch failing only its own change, finished executions
 * moved out of recovery's way, retention, and locks passed on when a session ends.
 */
const consul = new ConsulClient(sharedEnvironment().consul.address);
const prefix = `aimesh/e2e-store-${Date.now()}`;
const log = createLogger('test', { destination: { write: () => undefined } });
const stores: ConsulSagaStore[] = [];

function store(owner: string): ConsulSagaStore {
  const created = new ConsulSagaStore(consul, { prefix, owner, sessionTtl: '10s', log });
  stores.push(created);
  return created;
}

function execution(key: string, overrides: Partial<Execution> = {}): Execution {
  const now = Date.now();
  return {
    id: randomUUID(),
    saga: 'health-data',
    idempotencyKey: key,
    input: { key },
    state: 'running',
    startedAt: now,
    deadline: now + 60_000,
    updatedAt: now,
    cursor: 0,
    notBefore: now,
    pivotPassed: false,
    steps: [{ name: 'validate_user', status: 'pending', attempts: 0, compensationAttempts: 0 }],
    version: 0,
    ...overrides,
  };
}

afterAll(async () => {
  for (const s of stores) await s.close();
  await consul.close();
});

describe('Consul saga store', () => {
  const a = store('a');

  it('creates 200 at once; repeats among new ones return the first, and only the repeats', async () => {
    const first = await Promise.all(Array.from({ length: 200 }, (_, i) => a.create(execution(`k-${i}`))));
    expect(first.every((r) => r.created && r.execution.version === 1)).toBe(true);
    // Old and new keys in the same batches: each repeat fails alone, the new ones go through.
    const mixed = await Promise.all(
      Array.from({ length: 200 }, (_, i) => a.create(execution(i % 2 ? `k-${i}` : `fresh-${i}`))),
    );
    mixed.forEach((r, i) => {
      expect(r.created).toBe(i % 2 === 0);
      if (i % 2) expect(r.execution.id).toBe(first[i]?.execution.id);
    });
    expect(await Promise.all(first.map((r) => a.claim(r.execution.id)))).toEqual(first.map(() => true));
  });

  it('saves many at once with check-and-set; a stale save fails alone', async () => {
    const created = await Promise.all(Array.from({ length: 100 }, (_, i) => a.create(execution(`cas-${i}`))));
    const saved = await Promise.all(created.map(({ execution: e }) => a.save({ ...e, cursor: 1 })));
    expect(saved.every((e) => e.version === 2)).toBe(true);
    const results = await Promise.allSettled(
      saved.map((e, i) => a.save(i === 7 ? { ...e, version: 1 } : { ...e, cursor: 2 })),
    );
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(1);
    expect((results[7] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
    expect((await a.get(saved[8]!.id))?.cursor).toBe(2);
  });

  it('moves finished executions out of what recovery reads, and removes them by retention', async () => {
    const { execution: e } = await a.create(execution('finishing', { updatedAt: 0 }));
    const done = await a.save({ ...e, state: 'completed', updatedAt: 0 });
    expect((await a.unfinished()).some((u) => u.id === e.id)).toBe(false);
    expect(await a.get(e.id)).toMatchObject({ state: 'completed', version: done.version });
    expect((await a.list()).some((u) => u.id === e.id)).toBe(true);
    await expect(a.save(done)).rejects.toBeInstanceOf(ConflictError);

    const removed = await a.prune(new Map([['health-data', { finishedMs: 1000, maxFinished: 100 }]]), 10_000);
    expect(removed).toBe(1);
    expect(await a.get(e.id)).toBeUndefined();
    expect((await consul.kvGet(`${prefix}/locks/${e.id}`))?.value).toBeUndefined();
    expect((await a.create(execution('finishing'))).created).toBe(true);
  });

  it('a peer cannot claim what a live session holds, and can at once when that session ends', async () => {
    const b = store('b');
    const { execution: e } = await a.create(execution('locked'));
    expect(await b.claim(e.id)).toBe(false);
    await a.close();
    // Lock-delay 0: no wait after the holder's session is gone.
    expect(await b.claim(e.id)).toBe(true);
  });
});
