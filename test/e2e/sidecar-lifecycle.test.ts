import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startConsul, waitFor, type ConsulAgent } from '../env/index.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * A sidecar's life beyond the happy path, with a Consul agent of this suite's own: Consul
 * going away and coming back while traffic flows, and SIGTERM with requests in flight.
 */
let agent: ConsulAgent;
let app: Server;
let appSidecar: SidecarProcess;
let caller: SidecarProcess;

async function endpointsAtCaller(): Promise<{ stale: boolean; endpoints: { id: string }[] }> {
  const dump = (await (await fetch(`${caller.admin}/admin/endpoints`)).json()) as {
    stale: boolean;
    endpoints: { id: string }[];
  }[];
  return dump[0] as { stale: boolean; endpoints: { id: string }[] };
}

beforeAll(async () => {
  agent = await startConsul();
  app = createServer((req, res) => {
    if (req.url === '/healthz') return res.end('ok');
    const delay = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('delay') ?? 0);
    setTimeout(() => res.end(`answered ${req.url}`), delay);
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const port = (app.address() as AddressInfo).port;
  appSidecar = await startSidecar(
    'diagnosis-1',
    {
      service: { name: 'diagnosis', port, healthCheck: { path: '/healthz', interval: '1s', timeout: '1s' } },
      discovery: { mode: 'consul' },
    },
    agent.address,
  );
  caller = await startSidecar(
    'lifecycle-caller',
    {
      service: { name: 'xiaoai', port: 1 },
      discovery: { mode: 'consul', consul: { register: false } },
      upstreams: [{ name: 'diagnosis' }],
    },
    agent.address,
  );
  await waitFor(
    'diagnosis discovered',
    async () => (await endpointsAtCaller()).endpoints.length === 1,
    30_000,
  );
});

afterAll(async () => {
  await caller?.stop();
  await appSidecar?.stop();
  app?.closeAllConnections();
  await new Promise((resolve) => app?.close(resolve));
  await agent?.stop();
});

describe('sidecar lifecycle', () => {
  it('keeps routing to the last known endpoints while Consul is down, and resumes watching when it is back', async () => {
    await agent.stopAgent();
    await waitFor('caller sees discovery stale', async () => (await endpointsAtCaller()).stale, 30_000);
    for (let i = 0; i < 20; i++) {
      const response = await fetch(`${caller.outbound}/v1/invoke/diagnosis/check-${i}`);
      expect(response.status).toBe(200);
      expect(await response.text()).toBe(`answered /check-${i}`);
    }
    const readyWhileStale = await fetch(`${caller.admin}/readyz`);
    expect(readyWhileStale.status).toBe(200);

    await agent.startAgent();
    // The restarted dev agent lost the catalog; the app's sidecar registers again by itself.
    await waitFor(
      'fresh endpoints after Consul is back',
      async () => {
        const state = await endpointsAtCaller();
        return !state.stale && state.endpoints.length === 1;
      },
      30_000,
    );
    expect((await fetch(`${caller.outbound}/v1/invoke/diagnosis/after`)).status).toBe(200);
  });

  it('on SIGTERM finishes requests in flight, reports not ready, and deregisters', async () => {
    const inFlight = fetch(`${caller.outbound}/v1/invoke/diagnosis/slow?delay=1500`);
    await new Promise((r) => setTimeout(r, 200));
    caller.process.child.kill('SIGTERM');
    await waitFor(
      'caller not ready while draining',
      async () => (await fetch(`${caller.admin}/readyz`).catch(() => undefined))?.status !== 200,
      5000,
    );
    const response = await inFlight;
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('answered /slow?delay=1500');
    expect(await caller.process.exited).toBe(0);

    appSidecar.process.child.kill('SIGTERM');
    await appSidecar.process.exited;
    const catalog = (await (
      await fetch(`http://${agent.address}/v1/health/service/diagnosis`)
    ).json()) as unknown[];
    expect(catalog).toEqual([]);
  });
});
