/**
 * Discovery after a Consul outage or restart: a freshly started agent first answers with
 * no instance (its services have not re-registered yet); believing it would drop the good
 * endpoints and turn calls into 503s. The client is a fake at the I/O edge: a scripted
 * sequence of answers and failures.
 */
import { describe, expect, it } from '@jest/globals';
import type { ConsulClient, HealthEntry } from '../../../sidecar/discovery/consul-client.js';
import { ConsulDiscovery } from '../../../sidecar/discovery/consul.js';
import type { UpstreamState } from '../../../sidecar/discovery/types.js';

const instance = (id: string): HealthEntry =>
  ({
    Service: { ID: id, Address: '10.0.0.1', Port: 8080, Meta: {}, Tags: [] },
    Node: { Address: '10.0.0.1' },
  }) as unknown as HealthEntry;

type Step = { index: number; entries: HealthEntry[] } | Error;

/** Answers the scripted steps in order, then blocks (as a blocking query with no change) until aborted. */
function scripted(steps: Step[]): ConsulClient {
  return {
    passingInstances: async (_service: string, _index: number, _wait: string, signal?: AbortSignal) => {
      const step = steps.shift();
      if (step instanceof Error) throw step;
      if (step) return step;
      await new Promise<void>((resolve) =>
        signal?.addEventListener('abort', () => resolve(), { once: true }),
      );
      throw new Error('aborted');
    },
  } as unknown as ConsulClient;
}

async function statesOf(steps: Step[], resyncGraceMs: number, count: number): Promise<UpstreamState[]> {
  const discovery = new ConsulDiscovery({
    client: scripted(steps),
    minIntervalMs: 0,
    backoffInitialMs: 1,
    backoffMaxMs: 2,
    resyncGraceMs,
  });
  const seen: UpstreamState[] = [];
  await new Promise<void>((resolve) => {
    discovery.watch('rag', (state) => {
      seen.push(state);
      if (seen.length >= count) resolve();
    });
  });
  await discovery.close();
  return seen;
}

describe('Consul discovery after an outage or a restart', () => {
  it('keeps the last good endpoints through the first empty answer, then follows the resynced registry', async () => {
    const seen = await statesOf(
      [
        { index: 50, entries: [instance('a'), instance('b')] },
        new Error('connect ECONNREFUSED'),
        { index: 3, entries: [] },
        { index: 9, entries: [instance('a')] },
      ],
      60_000,
      4,
    );
    expect(seen.map((s) => [s.endpoints.map((e) => e.id), s.stale])).toEqual([
      [['a', 'b'], false],
      [['a', 'b'], true],
      [['a', 'b'], true],
      [['a'], false],
    ]);
    expect(seen[2]?.error).toMatch(/keeping the last known endpoints until it resyncs/);
  });

  it('believes an empty answer once the index moved past the first one after the restart', async () => {
    const seen = await statesOf(
      [
        { index: 50, entries: [instance('a')] },
        { index: 2, entries: [] },
        { index: 7, entries: [] },
      ],
      60_000,
      3,
    );
    expect(seen.map((s) => [s.endpoints.length, s.stale])).toEqual([
      [1, false],
      [1, true],
      [0, false],
    ]);
  });

  it('believes an empty answer after the grace even when the index never moves', async () => {
    const seen = await statesOf(
      [
        { index: 50, entries: [instance('a')] },
        new Error('agent restarting'),
        { index: 4, entries: [] },
        { index: 4, entries: [] },
      ],
      0,
      3,
    );
    expect(seen.at(-1)).toMatchObject({ endpoints: [], stale: false });
  });

  it('takes an empty answer at face value when nothing went wrong before it', async () => {
    const seen = await statesOf(
      [
        { index: 50, entries: [instance('a')] },
        { index: 51, entries: [] },
      ],
      60_000,
      2,
    );
    expect(seen.at(-1)).toMatchObject({ endpoints: [], stale: false });
  });
});
