import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startConsul, waitFor, type ConsulAgent } from '../env/index.js';
import {
  ConsulClient,
  ConsulDiscovery,
  ConsulRegistration,
  type UpstreamState,
} from '../../sidecar/discovery/index.js';

/**
 * Sidecar registration and discovery against a real Consul agent of its own (this suite
 * stops and starts it). Three app instances are real HTTP servers Consul health-checks.
 */
let agent: ConsulAgent;
let client: ConsulClient;
let discovery: ConsulDiscovery;
const apps: { server: Server; registration: ConsulRegistration; id: string }[] = [];
let latest: UpstreamState | undefined;

async function startApp(index: number): Promise<void> {
  const server = createServer((req, res) => {
    res.statusCode = req.url === '/healthz' ? 200 : 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const id = `rag-${index}`;
  const registration = new ConsulRegistration(client, {
    serviceName: 'rag',
    instanceId: id,
    address: '127.0.0.1',
    port,
    tags: ['v1'],
    meta: { weight: String(index + 1), version: '1.4.2' },
    check: { kind: 'http', url: `http://127.0.0.1:${port}/healthz`, interval: '1s', timeout: '1s' },
    deregisterCriticalAfter: '1m',
  });
  await registration.keepRegistered(500);
  apps.push({ server, registration, id });
}

const ids = () => (latest?.endpoints ?? []).map((e) => e.id).sort();

beforeAll(async () => {
  agent = await startConsul();
  client = new ConsulClient(agent.address);
  discovery = new ConsulDiscovery({ client, wait: '5s', backoffInitialMs: 100, backoffMaxMs: 1000 });
  for (let i = 0; i < 3; i++) await startApp(i);
  discovery.watch('rag', (state) => (latest = state));
});

afterAll(async () => {
  await discovery?.close();
  for (const app of apps) {
    await app.registration.deregister().catch(() => undefined);
    await new Promise((resolve) => app.server.close(resolve));
  }
  await client?.close();
  await agent?.stop();
});

describe('sidecar discovery with a real Consul agent', () => {
  it('sees every registered instance once its health check passes, with meta and tags', async () => {
    await waitFor('three passing instances', async () => ids().length === 3, 30_000);
    expect(ids()).toEqual(['rag-0', 'rag-1', 'rag-2']);
    const first = latest?.endpoints.find((e) => e.id === 'rag-0');
    expect(first).toMatchObject({
      address: '127.0.0.1',
      meta: { weight: '1', version: '1.4.2' },
      tags: ['v1'],
    });
    expect(latest?.stale).toBe(false);
  });

  it('drops an instance whose app died, as soon as Consul marks it critical', async () => {
    const dead = apps[1] as (typeof apps)[number];
    dead.server.closeAllConnections();
    await new Promise((resolve) => dead.server.close(resolve));
    await waitFor('rag-1 gone', async () => !ids().includes('rag-1'), 30_000);
    expect(ids()).toEqual(['rag-0', 'rag-2']);
  });

  it('keeps serving the last known endpoints while Consul is down, and resumes when it is back', async () => {
    await agent.stopAgent();
    await waitFor('state marked stale', async () => latest?.stale === true, 30_000);
    expect(ids()).toEqual(['rag-0', 'rag-2']);
    // The first failure may be the agent's own 500 while it shuts down, or a refused connection.
    expect(latest?.error).toMatch(/^Consul /);

    // A dev agent forgets its catalog on restart: the registrations notice and register again.
    await agent.startAgent();
    await waitFor(
      'fresh answer after restart',
      async () => latest?.stale === false && ids().length === 2,
      30_000,
    );
    expect(ids()).toEqual(['rag-0', 'rag-2']);
  });

  it('deregisters on stop so peers stop routing to the instance at once', async () => {
    await (apps[2] as (typeof apps)[number]).registration.deregister();
    await waitFor('rag-2 gone', async () => !ids().includes('rag-2'), 15_000);
    expect(ids()).toEqual(['rag-0']);
  });
});
