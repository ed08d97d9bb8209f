import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { trace } from '@opentelemetry/api';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, constants } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { sidecarConfig, type SidecarConfigInput } from '../../../api/index.js';
import { createLogger } from '../../../lib/log/index.js';
import { redact, sidecarMetrics } from '../../../sidecar/admin/index.js';
import { compileConfig } from '../../../sidecar/config/compile.js';
import { listenHttp1AndH2c, outboundHandler, type DualListener } from '../../../sidecar/proxy/index.js';
import { Routes } from '../../../sidecar/routes.js';
import { answer, endpoints, FakeTransport, stalledAnswer, type Script } from './fake-transport.js';

/**
 * The outbound proxy's whole request path (listener → route → stack → respond) on a
 * loopback port, with fake transports at the upstream edge: what the app sees, what the
 * upstreams are sent, and what happens when the app leaves.
 */
const metrics = sidecarMetrics();
const quiet = createLogger('test', {
  level: 'error',
  destination: new Writable({ write: (_chunk, _encoding, done) => done() }),
});
const dir = mkdtempSync(join(tmpdir(), 'aimesh-proxy-path-'));
const scripts = new Map<string, Script>();
const transports = new Map<string, FakeTransport>();
let listener: DualListener;
let base: string;

const config: SidecarConfigInput = {
  service: { name: 'caller', port: 1 },
  upstreams: [
    { name: 'echo', retries: { attempts: 2, retryOn: ['5xx'] } },
    { name: 'slow', timeout: '100ms' },
    { name: 'greeter', protocol: 'grpc', timeout: '100ms' },
  ],
  providers: [
    { name: 'keyless', baseUrl: 'https://llm.example/v1', priority: 100, apiKeyFile: join(dir, 'missing') },
    { name: 'busy', baseUrl: 'https://busy.example/api/v1', priority: 50, apiKeyFile: join(dir, 'busy-key') },
    { name: 'spare', baseUrl: 'https://spare.example/v1', priority: 10 },
  ],
};

beforeAll(async () => {
  writeFileSync(join(dir, 'busy-key'), 'sk-busy\n');
  const routes = Routes.build(compileConfig(sidecarConfig.parse(config)), {
    metrics,
    log: quiet,
    tracing: { tracer: trace.getTracer('test'), enabled: false },
    transport: (upstream) => {
      const transport = new FakeTransport((endpoint, req, n) =>
        (scripts.get(upstream.name) as Script)(endpoint, req, n),
      );
      transports.set(upstream.name, transport);
      return transport;
    },
  });
  for (const name of ['echo', 'slow', 'greeter'])
    routes.upstream(name).setEndpoints(endpoints('e1', 'e2'), false);
  listener = await listenHttp1AndH2c(
    '127.0.0.1',
    0,
    outboundHandler(() => routes, metrics, quiet),
  );
  base = `http://127.0.0.1:${listener.port}`;
});

afterAll(async () => {
  await listener.close(0);
  rmSync(dir, { recursive: true, force: true });
});

/** node:http with a raw path, because URL parsing normalizes `..` and `%2e%2e` away before they are sent. */
function raw(path: string, init: { method?: string; body?: string } = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: listener.port, path, method: init.method ?? 'GET' },
        (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end(init.body);
    },
  );
}

describe('proxy path', () => {
  it('relays the answer without the headers the upstream names in Connection', async () => {
    scripts.set('echo', () =>
      answer(200, 'hi', { connection: 'x-internal', 'x-internal': 'hop only', 'content-type': 'text/plain' }),
    );
    const response = await raw('/v1/invoke/echo/a');
    expect(response.status).toBe(200);
    expect(response.body).toBe('hi');
    expect(response.headers['x-internal']).toBeUndefined();
    expect(response.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('a caller that leaves before the answer cancels the upstream call', async () => {
    scripts.set('echo', () => new Promise(() => undefined));
    const echo = transports.get('echo') as FakeTransport;
    const before = echo.sent.length;
    await new Promise<void>((resolve) => {
      const req = request(`${base}/v1/invoke/echo/wait`);
      req.on('error', () => resolve());
      req.end();
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 50);
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(echo.sent.slice(before).map((t) => t.aborted)).toEqual(['upstream.failed']);
  });

  it('an HTTP/2 caller that resets its stream cancels the upstream call', async () => {
    scripts.set('echo', () => new Promise(() => undefined));
    const echo = transports.get('echo') as FakeTransport;
    const before = echo.sent.length;
    const session = connect(base);
    try {
      const stream = session.request({ ':path': '/v1/invoke/echo/wait' });
      stream.on('error', () => undefined);
      stream.end();
      while (echo.sent.length === before) await new Promise((r) => setTimeout(r, 10));
      stream.close(constants.NGHTTP2_CANCEL);
      while (echo.sent[before]?.aborted === undefined) await new Promise((r) => setTimeout(r, 10));
      expect(echo.sent[before]?.aborted).toBe('upstream.failed');
    } finally {
      session.close();
    }
  }, 10_000);

  it('cuts an answer whose body stalls past the upstream timeout, instead of ending it as if whole', async () => {
    scripts.set('slow', () => stalledAnswer());
    const result = await new Promise<string>((resolve) => {
      request(`${base}/v1/invoke/slow/x`, (res) => {
        res.on('error', () => resolve('cut'));
        res.on('aborted', () => resolve('cut'));
        res.on('end', () => resolve('ended'));
        res.resume();
      }).end();
    });
    expect(result).toBe('cut');
  });

  it('gRPC: the upstream timeout ends the call with DEADLINE_EXCEEDED', async () => {
    scripts.set('greeter', () => stalledAnswer());
    const session = connect(base);
    try {
      const trailers = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const stream = session.request({
          ':method': 'POST',
          ':path': '/greeter.Greeter/SayHello',
          ':authority': 'greeter',
          'content-type': 'application/grpc',
        });
        stream.on('trailers', (t) => resolve(t));
        stream.on('error', reject);
        stream.resume();
        stream.end();
      });
      expect(trailers['grpc-status']).toBe('4');
    } finally {
      session.close();
    }
  });

  it('errors are the one error body, with x-aimesh-error', async () => {
    const response = await raw('/v1/invoke/billing/x');
    expect(response.status).toBe(404);
    expect(response.headers['x-aimesh-error']).toBe('true');
    expect(JSON.parse(response.body)).toMatchObject({ code: 'upstream.unknown' });
  });
});

describe('AI route on the stack', () => {
  const chat = JSON.stringify({ model: 'gpt-4o', messages: [] });

  it('skips a channel whose key file is missing (log, metric), fails over a 429, and builds the URL under the base', async () => {
    scripts.set('provider:keyless', () => answer(200, 'must not be called'));
    scripts.set('provider:busy', () => answer(429, 'slow down'));
    scripts.set('provider:spare', () =>
      answer(200, '{"usage":{"total_tokens":7}}', { 'content-type': 'application/json' }),
    );
    const response = await raw('/v1/ai/chat/completions?api-version=1', { method: 'POST', body: chat });
    expect(response.status).toBe(200);
    expect(response.headers['x-aimesh-provider']).toBe('spare');
    expect(transports.get('provider:keyless')?.sent).toEqual([]);
    expect(transports.get('provider:busy')?.sent[0]).toMatchObject({
      origin: 'https://busy.example:443',
      path: '/api/v1/chat/completions?api-version=1',
      headers: { authorization: 'Bearer sk-busy' },
    });
    expect(transports.get('provider:spare')?.sent[0]?.headers.authorization).toBeUndefined();
    expect(await metrics.registry.getSingleMetricAsString('aimesh_ai_key_errors_total')).toMatch(
      /provider="keyless"} [1-9]/,
    );
  });

  it('an app that leaves a streamed answer cancels the provider stream', async () => {
    // keyless has no key and busy is cooling down after its 429: spare answers.
    scripts.set('provider:spare', () => {
      const body = new Readable({ read() {} });
      body.push('data: {"n":1}\n\n');
      return { status: 200, headers: { 'content-type': 'text/event-stream' }, body };
    });
    const spare = transports.get('provider:spare') as FakeTransport;
    const first = await new Promise<string>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: listener.port, path: '/v1/ai/chat/completions', method: 'POST' },
        (res) => {
          res.once('data', (chunk: Buffer) => {
            resolve(chunk.toString());
            req.destroy();
          });
        },
      );
      req.on('error', () => undefined);
      req.once('response', (res) => res.once('error', reject));
      req.end(JSON.stringify({ model: 'gpt-4o', stream: true }));
    });
    expect(first).toContain('"n":1');
    await new Promise((r) => setTimeout(r, 50));
    expect(spare.sent.at(-1)?.aborted).toBe('upstream.failed');
  });

  it('refuses a path that would climb out of the provider base path', async () => {
    const calls = () => [...transports.values()].reduce((n, t) => n + t.sent.length, 0);
    const before = calls();
    for (const path of ['/v1/ai/chat/../../admin', '/v1/ai/chat/%2e%2e/admin', '/v1/ai/a%2Fb']) {
      const response = await raw(path, { method: 'POST', body: chat });
      expect(response.status).toBe(400);
      expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'input.invalid' } });
    }
    expect(calls()).toBe(before);
  });
});

describe('admin config dump', () => {
  it('shows no credentials', () => {
    const shown = JSON.stringify(
      redact({
        providers: [
          { baseUrl: 'https://user:secret@llm.example/v1?api_key=abc&model=x', apiKeyFile: '/keys/a' },
        ],
        upstreams: [{ fallback: { response: { headers: { Authorization: 'Bearer t', 'x-kept': 'k' } } } }],
        discovery: { consul: { token: 'acl-token', address: 'http://consul:8500' } },
        quota: { tokensPerMinute: 100 },
      }),
    );
    for (const secret of ['secret', 'abc', 'Bearer t', 'acl-token', 'user:'])
      expect(shown).not.toContain(secret);
    for (const kept of ['/keys/a', 'model=x', '"x-kept":"k"', 'http://consul:8500', '"tokensPerMinute":100'])
      expect(shown).toContain(kept);
  });
});
