import { describe, expect, it } from '@jest/globals';
import { parseSidecarConfig } from '../../../sidecar/config/index.js';
import { resolveTarget } from '../../../sidecar/proxy/index.js';
import { ResponseCache, propagate } from '../../../sidecar/stack/index.js';

describe('resolveTarget', () => {
  it('reads /v1/invoke/<service>/<path>', () => {
    expect(resolveTarget('/v1/invoke/rag/v1/search?q=x', '127.0.0.1:4700')).toEqual({
      ok: true,
      target: { service: 'rag', path: '/v1/search?q=x' },
    });
    expect(resolveTarget('/v1/invoke/rag', undefined)).toEqual({
      ok: true,
      target: { service: 'rag', path: '/' },
    });
    expect(resolveTarget('/v1/invoke/rag?q=1', undefined)).toEqual({
      ok: true,
      target: { service: 'rag', path: '/?q=1' },
    });
  });

  it('reads absolute-form URIs (HTTP_PROXY) and Host headers, with namespace forms', () => {
    expect(resolveTarget('http://rag.suoke-life.svc.cluster.local:8080/a', 'ignored')).toEqual({
      ok: true,
      target: { service: 'rag', namespace: 'suoke-life', path: '/a' },
    });
    expect(resolveTarget('/a/b', 'rag:80')).toEqual({ ok: true, target: { service: 'rag', path: '/a/b' } });
    expect(resolveTarget('/a', 'rag.suoke-life')).toEqual({
      ok: true,
      target: { service: 'rag', namespace: 'suoke-life', path: '/a' },
    });
  });

  it('refuses what is not a service, saying how to address one', () => {
    expect(resolveTarget('/a', undefined)).toMatchObject({ ok: false, status: 400 });
    expect(resolveTarget('/a', 'api.openai.com')).toMatchObject({
      ok: false,
      message: expect.stringContaining('external hosts are not proxied') as unknown as string,
    });
    expect(resolveTarget('/a', 'Bad_Name')).toMatchObject({ ok: false, status: 400 });
  });
});

describe('trace context', () => {
  it('keeps the trace id and flags, starts a new span id, and keeps the request id', () => {
    const out = propagate({
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00',
      tracestate: 'vendor=x',
      requestId: 'req-1',
    });
    expect(out.traceparent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-00$/);
    expect(out.traceparent).not.toContain('00f067aa0ba902b7');
    expect(out.tracestate).toBe('vendor=x');
    expect(out['x-request-id']).toBe('req-1');
  });

  it('starts a sampled trace when the incoming one is missing or invalid', () => {
    for (const traceparent of [
      undefined,
      'garbage',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
    ]) {
      const out = propagate({ traceparent });
      expect(out.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(out.traceparent.slice(3, 35)).not.toBe('0'.repeat(32));
      expect(out['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    }
  });
});

describe('response cache', () => {
  it('serves entries younger than maxAge, evicts the oldest past its size, skips big bodies', () => {
    const cache = new ResponseCache(2, 10);
    const entry = (body: string, storedAt: number) => ({
      status: 200,
      headers: {},
      body: Buffer.from(body),
      storedAt,
    });
    cache.set('/a', entry('a', 0));
    cache.set('/b', entry('b', 0));
    cache.set('/c', entry('c', 0));
    expect(cache.get('/a', 1000, 10)).toBeUndefined();
    expect(cache.get('/c', 1000, 10)?.body.toString()).toBe('c');
    expect(cache.get('/c', 1000, 2000)).toBeUndefined();
    cache.set('/big', entry('x'.repeat(11), 0));
    expect(cache.get('/big', 1000, 0)).toBeUndefined();
  });
});

describe('sidecar config', () => {
  it('fills defaults and names every bad field', () => {
    const good = parseSidecarConfig(JSON.stringify({ service: { name: 'rag', port: 8080 } }));
    expect(good.ok && good.config.listen).toEqual({
      address: '127.0.0.1',
      outbound: 4700,
      admin: 4701,
      control: 4702,
      controlGrpc: 4703,
    });
    const bad = parseSidecarConfig(
      JSON.stringify({
        service: { name: 'rag', port: 0 },
        upstreams: [{ name: 'x', loadBalancer: { strategy: 'fast' } }],
      }),
    );
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.errors.join('\n')).toMatch(
      /service\.port: .*\n.*upstreams\[0\]\.loadBalancer\.strategy/,
    );
    const notYaml = parseSidecarConfig('service: [');
    expect(!notYaml.ok && notYaml.errors[0]).toMatch(/^not valid YAML or JSON/);
  });

  it('reads YAML, block and flow style, as well as JSON', () => {
    const block = parseSidecarConfig('service:\n  name: rag\n  port: 8080\n');
    expect(block.ok && block.config.service).toMatchObject({ name: 'rag', port: 8080 });
    const flow = parseSidecarConfig('{service: {name: rag, port: 8080}}');
    expect(flow.ok && flow.config.service).toMatchObject({ name: 'rag', port: 8080 });
  });
});
