import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import Consul from 'consul';
import { EventEmitter } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';

/** The `consul` client accepts blocking-query options its type declarations leave out. */
interface BlockingOptions {
  service: string;
  passing: boolean;
  index?: string;
  wait?: string;
  ctx?: EventEmitter & { includeResponse?: boolean };
}
type Response = { headers: Record<string, string> };
type HealthEntry = { Service: { ID: string; Port: number } };

describe('Consul agent round trip through the consul npm client', () => {
  const { consul: agent } = sharedEnvironment();
  const consul = new Consul({ host: '127.0.0.1', port: agent.httpPort });
  let app: Server;
  let healthy = true;

  beforeAll(async () => {
    app = createServer((req, res) => {
      res.statusCode = req.url === '/healthz' && healthy ? 200 : 500;
      res.end();
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await consul.agent.service.deregister('echo-1').catch(() => undefined);
    await new Promise((resolve) => app.close(resolve));
  });

  async function passing(
    options: Partial<BlockingOptions> = {},
  ): Promise<{ index: string; entries: HealthEntry[] }> {
    const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
    const query = { service: 'echo', passing: true, ...options, ctx } as unknown as Parameters<
      typeof consul.health.service
    >[0];
    const [response, entries] = (await consul.health.service(query)) as unknown as [Response, HealthEntry[]];
    return { index: response.headers['x-consul-index'] ?? '0', entries };
  }

  it('registers a service with an HTTP check, sees it pass, and a blocking query wakes when it fails', async () => {
    const port = (app.address() as AddressInfo).port;
    await consul.agent.service.register({
      name: 'echo',
      id: 'echo-1',
      address: '127.0.0.1',
      port,
      tags: ['v1'],
      meta: { weight: '3' },
      check: { name: 'http', http: `http://127.0.0.1:${port}/healthz`, interval: '1s', timeout: '1s' },
    });

    await waitFor('echo-1 to pass its check', async () => (await passing()).entries.length === 1, 20_000);
    const { index, entries } = await passing();
    expect(entries[0]?.Service).toMatchObject({ ID: 'echo-1', Port: port });

    const blocked = passing({ index, wait: '30s' });
    healthy = false;
    const woken = await blocked;
    expect(BigInt(woken.index)).toBeGreaterThan(BigInt(index));
    expect(woken.entries).toEqual([]);
  });

  it('writes KV with check-and-set: a stale index loses', async () => {
    expect(await consul.kv.set('aimesh/test/cas', 'one')).toBe(true);
    const current = (await consul.kv.get('aimesh/test/cas')) as { ModifyIndex: number; Value: string };
    expect(current.Value).toBe('one');
    expect(await consul.kv.set({ key: 'aimesh/test/cas', value: 'two', cas: current.ModifyIndex })).toBe(
      true,
    );
    // Consul answers `false`; the consul client (2.0.1) hands that back as undefined.
    expect(
      await consul.kv.set({ key: 'aimesh/test/cas', value: 'three', cas: current.ModifyIndex }),
    ).toBeFalsy();
    const after = (await consul.kv.get('aimesh/test/cas')) as { Value: string };
    expect(after.Value).toBe('two');
  });
});
