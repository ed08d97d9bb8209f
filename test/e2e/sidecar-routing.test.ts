import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SidecarConfigInput } from '../../api/index.js';
import { waitFor } from '../env/index.js';
import { sharedEnvironment } from './shared.js';
import { startSidecar, type SidecarProcess } from './sidecar-process.js';

/**
 * Three instances of "echo", each a real HTTP server registered in the shared Consul
 * agent by its own sidecar process, called through a fourth sidecar (the caller's).
 * Each instance's behaviour (healthy, slow, failing) is switched by the test.
 */
type Mode = { healthy: boolean; delayMs: number; fail: 'never' | 'always' | 'every-other' };
interface Instance {
  id: string;
  server: Server;
  port: number;
  mode: Mode;
  hits: number;
  sidecar?: SidecarProcess;
}

const consul = sharedEnvironment().consul.address;
const instances: Instance[] = [];
let caller: SidecarProcess;
const META: Record<string, { weight: string; priority: string }> = {
  'echo-a': { weight: '1', priority: '2' },
  'echo-b': { weight: '2', priority: '1' },
  'echo-c': { weight: '3', priority: '1' },
};

async function startInstance(id: string): Promise<Instance> {
  const instance: Instance = {
    id,
    port: 0,
    hits: 0,
    mode: { healthy: true, delayMs: 0, fail: 'never' },
    server: createServer(),
  };
  instance.server.on('request', (req, res) => {
    if (req.url === '/healthz') {
      res.statusCode = instance.mode.healthy ? 200 : 503;
      return res.end();
    }
    instance.hits++;
    if (req.url === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-instance': id });
      let sent = 0;
      const tick = setInterval(() => {
        res.write(`data: event ${++sent} from ${id}\n\n`);
        if (sent === 3) {
          clearInterval(tick);
          res.end();
        }
      }, 300);
      return;
    }
    const failing =
      instance.mode.fail === 'always' || (instance.mode.fail === 'every-other' && instance.hits % 2 === 1);
    setTimeout(() => {
      res.writeHead(failing ? 500 : 200, { 'content-type': 'application/json', 'x-instance': id });
      res.end(
        JSON.stringify({
          instance: id,
          path: req.url,
          traceparent: req.headers.traceparent,
          requestId: req.headers['x-request-id'],
        }),
      );
    }, instance.mode.delayMs);
  });
  await new Promise<void>((resolve) => instance.server.listen(0, '127.0.0.1', resolve));
  instance.port = (instance.server.address() as AddressInfo).port;
  instance.sidecar = await startSidecar(
    id,
    {
      service: {
        name: 'echo',
        port: instance.port,
        healthCheck: { path: '/healthz', interval: '1s', timeout: '1s' },
      },
      discovery: { mode: 'consul', consul: { meta: META[id] ?? {}, tags: ['e2e'] } },
    },
    consul,
  );
  return instance;
}

function callerConfig(upstream: Record<string, unknown>): Omit<SidecarConfigInput, 'listen'> {
  return {
    service: { name: 'caller', port: 1 },
    discovery: { mode: 'consul', consul: { register: false } },
    upstreams: [
      { name: 'echo', ...upstream } as SidecarConfigInput['upstreams'] extends (infer U)[] | undefined
        ? U
        : never,
    ],
  };
}

async function call(
  path = '/hello',
  headers: Record<string, string> = {},
): Promise<{ status: number; instance?: string; body: string; headers: Headers }> {
  const response = await fetch(`${caller.outbound}/v1/invoke/echo${path}`, { headers });
  const body = await response.text();
  return {
    status: response.status,
    instance: response.headers.get('x-instance') ?? undefined,
    body,
    headers: response.headers,
  };
}

async function spread(requests: number, concurrency = 1): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < requests) {
        const { status, instance } = await call();
        expect(status).toBe(200);
        counts[instance as string] = (counts[instance as string] ?? 0) + 1;
      }
    }),
  );
  return counts;
}

/** node:http, because fetch does not let a caller set Host or send an absolute-form URI. */
function rawGet(base: string, path: string, host: string): Promise<number> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, headers: { host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

function resetModes(): void {
  for (const instance of instances) instance.mode = { healthy: true, delayMs: 0, fail: 'never' };
}

async function allPassing(count = 3): Promise<void> {
  await waitFor(
    `${count} echo endpoints at the caller`,
    async () => {
      const dump = (await (await fetch(`${caller.admin}/admin/endpoints`)).json()) as {
        endpoints: unknown[];
      }[];
      return dump[0]?.endpoints.length === count;
    },
    30_000,
  );
}

beforeAll(async () => {
  for (const id of ['echo-a', 'echo-b', 'echo-c']) instances.push(await startInstance(id));
  caller = await startSidecar('caller', callerConfig({ loadBalancer: { strategy: 'round-robin' } }), consul);
  await allPassing();
});

afterAll(async () => {
  await caller?.stop();
  for (const instance of instances) {
    await instance.sidecar?.stop();
    instance.server.closeAllConnections();
    await new Promise((resolve) => instance.server.close(resolve));
  }
});

describe('sidecar routing through real sidecars, Consul and HTTP servers', () => {
  it('round-robin spreads requests evenly and propagates trace context and request ids', async () => {
    const counts = await spread(300);
    for (const id of ['echo-a', 'echo-b', 'echo-c']) expect(counts[id]).toBeGreaterThanOrEqual(95);
    const traced = await call('/hello', {
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
    const seen = JSON.parse(traced.body) as { traceparent: string; requestId: string };
    expect(seen.traceparent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(seen.traceparent).not.toContain('00f067aa0ba902b7');
    expect(seen.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(traced.headers.get('x-request-id')).toBe(seen.requestId);
  });

  it('smooth weighted round-robin follows the weights in Consul meta (1:2:3)', async () => {
    await caller.reload(callerConfig({ loadBalancer: { strategy: 'weighted-round-robin' } }));
    const counts = await spread(600);
    expect(counts['echo-a']).toBeGreaterThanOrEqual(90);
    expect(counts['echo-a']).toBeLessThanOrEqual(110);
    expect(counts['echo-b']).toBeGreaterThanOrEqual(190);
    expect(counts['echo-b']).toBeLessThanOrEqual(210);
    expect(counts['echo-c']).toBeGreaterThanOrEqual(290);
    expect(counts['echo-c']).toBeLessThanOrEqual(310);
  });

  it('random spreads requests within statistical bounds', async () => {
    await caller.reload(callerConfig({ loadBalancer: { strategy: 'random' } }));
    const counts = await spread(900);
    // 300 expected each; ±75 is more than 5 standard deviations (σ ≈ 14).
    for (const id of ['echo-a', 'echo-b', 'echo-c']) {
      expect(counts[id]).toBeGreaterThan(225);
      expect(counts[id]).toBeLessThan(375);
    }
  });

  it('consistent hash keeps each user on one instance', async () => {
    await caller.reload(
      callerConfig({ loadBalancer: { strategy: 'consistent-hash', hashOn: { header: 'x-user' } } }),
    );
    const owners = new Map<string, Set<string>>();
    for (let user = 0; user < 60; user++) {
      for (let i = 0; i < 3; i++) {
        const { instance } = await call('/hello', { 'x-user': `user-${user}` });
        owners.set(`user-${user}`, (owners.get(`user-${user}`) ?? new Set()).add(instance as string));
      }
    }
    for (const set of owners.values()) expect(set.size).toBe(1);
    expect(new Set([...owners.values()].map((s) => [...s][0])).size).toBe(3);
  });

  it('least-request and peak-EWMA send less traffic to a slow instance', async () => {
    const slow = instances[1] as Instance;
    slow.mode.delayMs = 80;
    try {
      for (const strategy of ['least-request', 'ewma']) {
        await caller.reload(callerConfig({ loadBalancer: { strategy } }));
        const counts = await spread(300, 6);
        // An even spread would give it 100.
        expect(counts['echo-b'] ?? 0).toBeLessThan(60);
      }
    } finally {
      resetModes();
    }
  });

  it('priority groups use the top group, and fail over when it is unhealthy in Consul', async () => {
    await caller.reload(callerConfig({ loadBalancer: { strategy: 'priority' } }));
    const top = await spread(60);
    expect(top).toEqual({ 'echo-a': 60 });
    (instances[0] as Instance).mode.healthy = false;
    try {
      await allPassing(2);
      const failover = await spread(90);
      expect(failover['echo-a']).toBeUndefined();
      expect((failover['echo-b'] ?? 0) + (failover['echo-c'] ?? 0)).toBe(90);
    } finally {
      resetModes();
      await allPassing(3);
    }
  });

  it('ejects an instance that returns 5xx and brings it back after its ejection time', async () => {
    await caller.reload(
      callerConfig({
        loadBalancer: { strategy: 'round-robin' },
        retries: { attempts: 2, retryOn: ['5xx'], backoff: { initial: '1ms', max: '5ms' } },
        outlierDetection: {
          consecutive5xx: 3,
          interval: '1s',
          baseEjectionTime: '3s',
          maxEjectionPercent: 50,
        },
      }),
    );
    const bad = instances[2] as Instance;
    bad.mode.fail = 'always';
    try {
      // Retries hide its failures from the app while it is being ejected.
      const during = await spread(30);
      expect((during['echo-a'] ?? 0) + (during['echo-b'] ?? 0)).toBe(30);
      const hitsAfterEjection = bad.hits;
      await spread(30);
      expect(bad.hits).toBe(hitsAfterEjection);
      const dump = (await (await fetch(`${caller.admin}/admin/endpoints`)).json()) as {
        endpoints: { id: string; ejected: boolean }[];
      }[];
      expect(dump[0]?.endpoints.find((e) => e.id === 'echo-c')?.ejected).toBe(true);
      bad.mode.fail = 'never';
      await new Promise((r) => setTimeout(r, 3200));
      const after = await spread(30);
      expect(after['echo-c']).toBeGreaterThan(0);
      const metrics = await (await fetch(`${caller.admin}/metrics`)).text();
      expect(metrics).toMatch(/aimesh_sidecar_ejections_total\{upstream="echo",endpoint="echo-c"\} [1-9]/);
    } finally {
      resetModes();
    }
  });

  it('retries recover a flaky upstream', async () => {
    await caller.reload(
      callerConfig({
        loadBalancer: { strategy: 'round-robin' },
        retries: { attempts: 3, retryOn: ['5xx'], backoff: { initial: '1ms', max: '5ms' } },
      }),
    );
    for (const instance of instances) instance.mode.fail = 'every-other';
    try {
      // Every instance fails every other request; sequential calls make that deterministic.
      for (let i = 0; i < 60; i++) expect((await call()).status).toBe(200);
      const metrics = await (await fetch(`${caller.admin}/metrics`)).text();
      expect(metrics).toMatch(/aimesh_sidecar_retries_total\{upstream="echo"\} [1-9]/);
    } finally {
      resetModes();
    }
  });

  it('under a total outage the retry budget caps the extra load', async () => {
    await caller.reload(
      callerConfig({
        loadBalancer: { strategy: 'round-robin' },
        retries: {
          attempts: 3,
          retryOn: ['5xx'],
          backoff: { initial: '1ms', max: '2ms' },
          budget: { percent: 20, minPerSecond: 1 },
        },
      }),
    );
    for (const instance of instances) instance.mode.fail = 'always';
    const before = instances.reduce((sum, i) => sum + i.hits, 0);
    try {
      const requests = 200;
      const statuses = await Promise.all(
        Array.from({ length: requests }, () => call().then((r) => r.status)),
      );
      expect(statuses.every((s) => s === 500)).toBe(true);
      const upstreamHits = instances.reduce((sum, i) => sum + i.hits, 0) - before;
      // Without a budget: 4 tries each = 800. With it: 200 + 20% + the 10 s floor of 10.
      expect(upstreamHits).toBeGreaterThanOrEqual(requests);
      expect(upstreamHits).toBeLessThanOrEqual(requests * 1.2 + 10);
      const metrics = await (await fetch(`${caller.admin}/metrics`)).text();
      expect(metrics).toMatch(/aimesh_sidecar_retries_denied_total\{upstream="echo"\} [1-9]/);
    } finally {
      resetModes();
    }
  });

  it('streams server-sent events through without buffering', async () => {
    await caller.reload(callerConfig({ loadBalancer: { strategy: 'round-robin' } }));
    const response = await fetch(`${caller.outbound}/v1/invoke/echo/events`);
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    const firstAt = Date.now();
    expect(new TextDecoder().decode(first.value)).toMatch(/^data: event 1 from echo-/);
    let rest = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    // The server sends the last event 600 ms after the first: the first arrived on its own.
    expect(Date.now() - firstAt).toBeGreaterThan(400);
    expect(rest).toContain('event 3');
  });

  it('routes by Host header and absolute-form URI too, and names the problem when it cannot', async () => {
    expect(await rawGet(caller.outbound, '/hello', 'echo')).toBe(200);
    expect(await rawGet(caller.outbound, 'http://echo.default.svc.cluster.local/hello', 'ignored')).toBe(200);
    const unknown = await fetch(`${caller.outbound}/v1/invoke/billing/x`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('x-aimesh-error')).toBe('true');
    const { error } = (await unknown.json()) as { error: string };
    expect(error).toContain('"billing" is not an upstream of this service');
  });

  it('stops sending to an instance whose app died once Consul marks it critical', async () => {
    const dead = instances[1] as Instance;
    dead.server.closeAllConnections();
    await new Promise((resolve) => dead.server.close(resolve));
    await allPassing(2);
    const hits = dead.hits;
    const counts = await spread(60);
    expect(counts['echo-b']).toBeUndefined();
    expect(dead.hits).toBe(hits);
  });
});
