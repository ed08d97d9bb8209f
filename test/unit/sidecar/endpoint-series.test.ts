import { describe, expect, it } from '@jest/globals';
import { trace } from '@opentelemetry/api';
import { Writable } from 'node:stream';
import { sidecarConfig, type SidecarConfigInput } from '../../../api/index.js';
import { createLogger } from '../../../lib/log/index.js';
import { sidecarMetrics, type SidecarMetrics } from '../../../sidecar/admin/index.js';
import { compileConfig } from '../../../sidecar/config/compile.js';
import { Routes } from '../../../sidecar/routes.js';
import type { TransportResponse } from '../../../sidecar/stack/index.js';
import { answer, endpoints, FakeTransport } from './fake-transport.js';

/**
 * Metrics labelled by endpoint keep one series per endpoint discovery lists now: a rollout
 * (new pods, new endpoint ids) removes the old pods' series instead of piling them up.
 */
type UpstreamInput = NonNullable<SidecarConfigInput['upstreams']>[number];

const quiet = createLogger('test', {
  level: 'error',
  destination: new Writable({ write: (_chunk, _encoding, done) => done() }),
});
const get = { method: 'GET', path: '/x', headers: {} };

function compile(upstreams: UpstreamInput[]) {
  return compileConfig(sidecarConfig.parse({ service: { name: 'caller', port: 1 }, upstreams }));
}

function routesOf(
  upstreams: UpstreamInput[],
  script: (id: string) => TransportResponse | Promise<TransportResponse>,
) {
  const metrics = sidecarMetrics();
  const deps = {
    metrics,
    log: quiet,
    tracing: { tracer: trace.getTracer('test'), enabled: false },
    transport: () => new FakeTransport((endpoint) => script(endpoint.id)),
  };
  return { routes: Routes.build(compile(upstreams), deps), deps, metrics };
}

/** The endpoint label values of every per-endpoint series in the exposition text. */
async function endpointLabels(metrics: SidecarMetrics): Promise<Record<string, string[]>> {
  const text = await metrics.registry.metrics();
  const found: Record<string, string[]> = {};
  for (const name of [
    'aimesh_sidecar_requests_total',
    'aimesh_sidecar_breaker_state',
    'aimesh_sidecar_ejections_total',
  ]) {
    const values = [...text.matchAll(new RegExp(`^${name}\\{[^}]*endpoint="([^"]+)"`, 'gm'))].map(
      (m) => m[1] as string,
    );
    found[name] = [...new Set(values)].sort();
  }
  return found;
}

async function call(routes: Routes, upstream: string, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    try {
      (await routes.upstream(upstream).call(get)).body.resume();
    } catch {
      // Failures are counted too; the test reads the counts.
    }
  }
}

describe('series labelled by endpoint', () => {
  const flaky: UpstreamInput = {
    name: 'echo',
    loadBalancer: { strategy: 'round-robin' },
    circuitBreaker: { consecutiveFailures: 1, openFor: '10m', halfOpenRequests: 1 },
    outlierDetection: { consecutive5xx: 1, interval: '1s', baseEjectionTime: '10m', maxEjectionPercent: 100 },
  };

  it('are removed when discovery stops listing the endpoint (a rollout)', async () => {
    const { routes, metrics } = routesOf([flaky], (id) => answer(id === 'pod-a' ? 503 : 200));
    routes.upstream('echo').setEndpoints(endpoints('pod-a', 'pod-b'), false);
    await call(routes, 'echo', 6);
    expect(await endpointLabels(metrics)).toEqual({
      aimesh_sidecar_requests_total: ['pod-a', 'pod-b'],
      aimesh_sidecar_breaker_state: ['pod-a'],
      aimesh_sidecar_ejections_total: ['pod-a'],
    });

    routes.upstream('echo').setEndpoints(endpoints('pod-b', 'pod-c'), false);
    await call(routes, 'echo', 4);
    expect(await endpointLabels(metrics)).toEqual({
      aimesh_sidecar_requests_total: ['pod-b', 'pod-c'],
      aimesh_sidecar_breaker_state: [],
      aimesh_sidecar_ejections_total: [],
    });
    expect(await metrics.registry.getSingleMetricAsString('aimesh_sidecar_endpoints')).toContain(
      'aimesh_sidecar_endpoints{upstream="echo"} 2',
    );
  });

  it('a call answered after its endpoint left is counted as "gone", not under the old id', async () => {
    let release: (response: TransportResponse) => void = () => undefined;
    const { routes, metrics } = routesOf(
      [{ name: 'echo' }],
      () => new Promise((resolve) => (release = resolve)),
    );
    routes.upstream('echo').setEndpoints(endpoints('pod-a'), false);
    const pending = routes.upstream('echo').call(get);
    await new Promise((resolve) => setImmediate(resolve));
    routes.upstream('echo').setEndpoints(endpoints('pod-b'), false);
    release(answer(200));
    (await pending).body.resume();
    expect((await endpointLabels(metrics)).aimesh_sidecar_requests_total).toEqual(['gone']);
  });

  it('go with an upstream a reload removes, and stay with one a reload replaces', async () => {
    const { routes, deps, metrics } = routesOf([{ name: 'kept' }, { name: 'dropped' }], () => answer(200));
    routes.upstream('kept').setEndpoints(endpoints('k1'), false);
    routes.upstream('dropped').setEndpoints(endpoints('d1'), false);
    await call(routes, 'kept', 1);
    await call(routes, 'dropped', 1);

    // "kept" changes its settings (a new Upstream object), "dropped" leaves the config.
    const next = Routes.build(compile([{ name: 'kept', timeout: '9s' }]), deps, routes);
    routes.retireUnusedBy(next);
    expect(await endpointLabels(metrics)).toMatchObject({ aimesh_sidecar_requests_total: ['k1'] });
    const gauges = await metrics.registry.getSingleMetricAsString('aimesh_sidecar_endpoints');
    expect(gauges).toContain('upstream="kept"');
    expect(gauges).not.toContain('upstream="dropped"');
  });
});
