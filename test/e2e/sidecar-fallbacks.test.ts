import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SidecarConfigInput } from '../../api/index.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * Fallbacks and hot reload through a real sidecar: a static response for an upstream with
 * no instance, the last good GET when the upstream fails, a backup service, and a config
 * reload while a request is in flight.
 */
const consul = sharedEnvironment().consul.address;
let app: Server;
let appSidecar: SidecarProcess;
let caller: SidecarProcess;
let failing = false;

const callerConfig = (inventoryTimeout: string): Omit<SidecarConfigInput, 'listen'> => ({
  service: { name: 'storefront', port: 1 },
  discovery: { mode: 'consul', consul: { register: false } },
  upstreams: [
    { name: 'inventory', timeout: inventoryTimeout, fallback: { staleCache: { maxAge: '1m' } } },
    {
      name: 'recommendations',
      fallback: {
        response: { status: 200, headers: { 'content-type': 'application/json' }, body: '{"items":[]}' },
      },
    },
    { name: 'enterprise-inventory', fallback: { service: 'inventory' } },
  ],
});

beforeAll(async () => {
  app = createServer((req, res) => {
    if (req.url === '/healthz') return res.end('ok');
    const delay = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('delay') ?? 0);
    setTimeout(() => {
      res.writeHead(failing ? 500 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ path: req.url, at: Date.now(), failing }));
    }, delay);
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appSidecar = await startSidecar(
    'inventory-1',
    {
      service: {
        name: 'inventory',
        port: (app.address() as AddressInfo).port,
        healthCheck: { interval: '1s', timeout: '1s' },
      },
      discovery: { mode: 'consul' },
    },
    consul,
  );
  caller = await startSidecar('storefront', callerConfig('5s'), consul);
  await waitFor(
    'inventory discovered',
    async () => {
      const dump = (await (await fetch(`${caller.admin}/admin/endpoints`)).json()) as {
        upstream: string;
        endpoints: unknown[];
      }[];
      return dump.find((u) => u.upstream === 'inventory')?.endpoints.length === 1;
    },
    30_000,
  );
});

afterAll(async () => {
  await caller?.stop();
  await appSidecar?.stop();
  app?.closeAllConnections();
  await new Promise((resolve) => app?.close(resolve));
});

describe('sidecar fallbacks', () => {
  it('answers with the static response when the upstream has no instance', async () => {
    const response = await fetch(`${caller.outbound}/v1/invoke/recommendations/for/u-1`);
    expect(response.status).toBe(200);
    expect(response.headers.get('x-aimesh-fallback')).toBe('response');
    expect(await response.json()).toEqual({ items: [] });
  });

  it('serves the last good GET when the upstream fails, and says so', async () => {
    const fresh = await fetch(`${caller.outbound}/v1/invoke/inventory/stock/1`);
    expect(fresh.status).toBe(200);
    const freshBody = await fresh.text();
    failing = true;
    try {
      const stale = await fetch(`${caller.outbound}/v1/invoke/inventory/stock/1`);
      expect(stale.status).toBe(200);
      expect(stale.headers.get('x-aimesh-fallback')).toBe('stale-cache');
      expect(Number(stale.headers.get('age'))).toBeGreaterThanOrEqual(0);
      expect(await stale.text()).toBe(freshBody);
      // Nothing cached for this one: the failure reaches the app, marked as the sidecar's.
      const uncached = await fetch(`${caller.outbound}/v1/invoke/inventory/stock/2`);
      expect(uncached.status).toBe(500);
      expect(uncached.headers.get('x-aimesh-error')).toBe('true');
    } finally {
      failing = false;
    }
  });

  it('sends the request to the backup service when the upstream cannot answer', async () => {
    const response = await fetch(`${caller.outbound}/v1/invoke/enterprise-inventory/stock/9`);
    expect(response.status).toBe(200);
    expect(response.headers.get('x-aimesh-fallback')).toBe('service=inventory');
    expect(((await response.json()) as { path: string }).path).toBe('/stock/9');
  });

  it('reloads its config without dropping a request in flight', async () => {
    const inFlight = fetch(`${caller.outbound}/v1/invoke/inventory/slow?delay=1500`);
    await new Promise((r) => setTimeout(r, 200));
    await caller.reload(callerConfig('10s'));
    const response = await inFlight;
    expect(response.status).toBe(200);
    expect(((await response.json()) as { path: string }).path).toBe('/slow?delay=1500');
    expect((await fetch(`${caller.outbound}/v1/invoke/inventory/after-reload`)).status).toBe(200);
  });
});
