import { describe, expect, it } from '@jest/globals';
import { trace } from '@opentelemetry/api';
import { Readable, Writable } from 'node:stream';
import { sidecarConfig, type SidecarConfigInput } from '../../../api/index.js';
import { AimeshError } from '../../../lib/errors/index.js';
import { createLogger } from '../../../lib/log/index.js';
import { sidecarMetrics, type SidecarMetrics } from '../../../sidecar/admin/index.js';
import { compileConfig, type CompiledUpstream } from '../../../sidecar/config/compile.js';
import { Routes } from '../../../sidecar/routes.js';
import { stackStepCaller } from '../../../sidecar/saga/index.js';
import { CallSignal, Upstream, type StackResponse } from '../../../sidecar/stack/index.js';
import {
  answer,
  endpoints,
  FakeTransport,
  networkError,
  stalledAnswer,
  type Script,
} from './fake-transport.js';

/**
 * The stack's call path with a fake transport at the I/O edge: no Consul, no sockets.
 * Each upstream is built from a real sidecar config, compiled as on load.
 */
type UpstreamInput = NonNullable<SidecarConfigInput['upstreams']>[number];

const quiet = createLogger('test', {
  level: 'error',
  destination: new Writable({ write: (_chunk, _encoding, done) => done() }),
});
const tracing = { tracer: trace.getTracer('test'), enabled: false };

function compile(upstreams: UpstreamInput[]) {
  return compileConfig(sidecarConfig.parse({ service: { name: 'caller', port: 1 }, upstreams }));
}

function upstreamOf(
  input: Omit<UpstreamInput, 'name'>,
  script: Script,
  ids = ['a', 'b', 'c'],
): { upstream: Upstream; transport: FakeTransport; metrics: SidecarMetrics } {
  const [config] = compile([{ name: 'echo', ...input }]).upstreams as [CompiledUpstream];
  const transport = new FakeTransport(script);
  const metrics = sidecarMetrics();
  const upstream = new Upstream(config, { metrics, log: quiet, tracing, transport, random: () => 0 });
  upstream.setEndpoints(endpoints(...ids), false);
  return { upstream, transport, metrics };
}

async function text(response: StackResponse): Promise<string> {
  return Buffer.concat(await response.body.toArray()).toString();
}

async function failure(promise: Promise<unknown>): Promise<AimeshError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AimeshError) return error;
    throw error;
  }
  throw new Error('expected the call to fail');
}

const get = { method: 'GET', path: '/x', headers: {} };

describe('the stack: retries, budget, balancer', () => {
  it('retries a 5xx on another endpoint and answers with the good one', async () => {
    const { upstream, transport, metrics } = upstreamOf(
      { loadBalancer: { strategy: 'round-robin' }, retries: { attempts: 2, retryOn: ['5xx'] } },
      (endpoint) => (endpoint.id === 'a' ? answer(503, 'down') : answer(200, `from ${endpoint.id}`)),
    );
    const response = await upstream.call(get);
    expect(response).toMatchObject({ status: 200, attempts: 2 });
    expect(response.endpoint).not.toBe('a');
    expect(await text(response)).toBe(`from ${response.endpoint}`);
    expect(transport.sent.map((t) => t.endpoint)).toEqual(['a', response.endpoint]);
    expect(await metrics.registry.getSingleMetricAsString('aimesh_sidecar_retries_total')).toMatch(
      /upstream="echo"} 1/,
    );
  });

  it('gives the upstream its answer when no retry may be made, never an error of its own', async () => {
    const { upstream, transport } = upstreamOf({ retries: { attempts: 2, retryOn: ['5xx'] } }, () =>
      answer(500, 'broken'),
    );
    const response = await upstream.call({ ...get, method: 'POST' });
    // POST is not retried (retryNonIdempotent is off): the one answer is the outcome.
    expect(response.status).toBe(500);
    expect(await text(response)).toBe('broken');
    expect(transport.sent).toHaveLength(1);
  });

  it('names the endpoint and the network failure when every try fails to connect', async () => {
    const { upstream, transport } = upstreamOf(
      { retries: { attempts: 2, retryOn: ['connect-failure'], backoff: { initial: '1ms', max: '1ms' } } },
      () => {
        throw networkError('EHOSTUNREACH');
      },
    );
    const error = await failure(upstream.call(get));
    expect(error.code).toBe('upstream.unavailable');
    expect(error.message).toMatch(/^echo: [abc]: connect EHOSTUNREACH/);
    expect(transport.sent).toHaveLength(3);
  });

  it('says when there is no endpoint to call', async () => {
    const { upstream } = upstreamOf({}, () => answer(200), []);
    const error = await failure(upstream.call(get));
    expect(error).toMatchObject({ code: 'upstream.no-endpoint', httpStatus: 503 });
  });

  it('a call made before discovery has answered waits for its first answer', async () => {
    const [config] = compile([{ name: 'echo' }]).upstreams as [CompiledUpstream];
    const transport = new FakeTransport(() => answer(200, 'found'));
    const upstream = new Upstream(config, { metrics: sidecarMetrics(), log: quiet, tracing, transport });
    const call = upstream.call(get);
    setTimeout(() => upstream.setEndpoints(endpoints('late'), false), 30);
    const response = await call;
    expect(response.endpoint).toBe('late');
    expect(await text(response)).toBe('found');
  });

  it('opens the breaker after consecutive failures and stops calling the endpoint', async () => {
    const { upstream, transport } = upstreamOf(
      { circuitBreaker: { consecutiveFailures: 2, openFor: '60s', halfOpenRequests: 1 } },
      () => answer(502),
      ['a'],
    );
    for (let i = 0; i < 2; i++) (await upstream.call(get)).body.resume();
    expect((await failure(upstream.call(get))).code).toBe('upstream.no-endpoint');
    expect(transport.sent).toHaveLength(2);
    expect(upstream.policy.view(Date.now())[0]?.breaker).toBe('open');
  });
});

describe('the stack: request bodies and retries', () => {
  const flaky: Script = (_endpoint, _request, n) => (n === 1 ? answer(503) : answer(200, 'ok'));
  const retries = { attempts: 2, retryOn: ['5xx' as const], retryNonIdempotent: true };
  /** A POST whose body arrives in these chunks. */
  const post = (chunks: string[]) => ({
    method: 'POST',
    path: '/x',
    headers: {},
    body: Readable.from(chunks.map((c) => Buffer.from(c))),
  });

  it('buffers a body within the limit and resends it whole on a retry', async () => {
    const { upstream, transport } = upstreamOf({ retries }, flaky);
    const response = await upstream.call(post(['hello ', 'world']));
    expect(response.status).toBe(200);
    expect(transport.sent.map((t) => t.body)).toEqual(['hello world', 'hello world']);
  });

  it('sends a body past the limit once, streamed, and does not retry it', async () => {
    const { upstream, transport } = upstreamOf({ retries }, flaky);
    const big = Buffer.alloc(70 * 1024, 'x');
    const body = Readable.from([big.subarray(0, 40 * 1024), big.subarray(40 * 1024)]);
    const response = await upstream.call({ method: 'POST', path: '/x', headers: {}, body });
    expect(response.status).toBe(503);
    expect(transport.sent).toHaveLength(1);
    expect(transport.sent[0]?.body).toBe(big.toString());
  });

  it('takes its buffer size from retries.bufferBytes; 0 sends every body once', async () => {
    const small = upstreamOf({ retries: { ...retries, bufferBytes: 8 } }, flaky);
    const fits = await small.upstream.call(post(['12345678']));
    expect(fits.status).toBe(200);
    expect(small.transport.sent.map((t) => t.body)).toEqual(['12345678', '12345678']);
    const over = upstreamOf({ retries: { ...retries, bufferBytes: 8 } }, flaky);
    const sentOnce = await over.upstream.call(post(['12345', '6789']));
    expect(sentOnce.status).toBe(503);
    expect(over.transport.sent.map((t) => t.body)).toEqual(['123456789']);
    const none = upstreamOf({ retries: { ...retries, bufferBytes: 0 } }, flaky);
    const once = await none.upstream.call(post(['x']));
    expect(once.status).toBe(503);
    expect(none.transport.sent).toHaveLength(1);
    // A request without a body has nothing to keep: it is retried still.
    const empty = upstreamOf({ retries: { ...retries, bufferBytes: 0 } }, flaky);
    expect((await empty.upstream.call(get)).status).toBe(200);
  });

  it('retries a POST that carries an Idempotency-Key, and not one without', async () => {
    const keyed = upstreamOf({ retries: { attempts: 2, retryOn: ['5xx'] } }, flaky);
    const withKey = {
      method: 'POST',
      path: '/x',
      headers: { 'idempotency-key': 'k-1' },
      body: Buffer.from('b'),
    };
    expect((await keyed.upstream.call(withKey)).status).toBe(200);
    expect(keyed.transport.sent).toHaveLength(2);
    const plain = upstreamOf({ retries: { attempts: 2, retryOn: ['5xx'] } }, flaky);
    expect((await plain.upstream.call({ ...withKey, headers: {} })).status).toBe(503);
    expect(plain.transport.sent).toHaveLength(1);
  });
});

describe('compiling retries.bufferBytes', () => {
  it('defaults to 64 KiB, carries a configured size, and refuses more than 10 MiB', () => {
    const [byDefault, configured, zero] = compile([
      { name: 'a', retries: {} },
      { name: 'b', retries: { bufferBytes: 1024 } },
      { name: 'c', retries: { bufferBytes: 0 } },
    ]).upstreams;
    expect(byDefault?.retryBufferBytes).toBe(64 * 1024);
    expect(configured?.retryBufferBytes).toBe(1024);
    expect(zero?.retryBufferBytes).toBe(0);
    // A changed size is a changed behaviour: a reload must not keep the old upstream.
    expect(configured?.signature).not.toBe(compile([{ name: 'b', retries: {} }]).upstreams[0]?.signature);
    const tooLarge = sidecarConfig.safeParse({
      service: { name: 'caller', port: 1 },
      upstreams: [{ name: 'a', retries: { bufferBytes: 10 * 1024 * 1024 + 1 } }],
    });
    expect(tooLarge.success).toBe(false);
    expect(JSON.stringify(tooLarge.error?.issues)).toContain('bufferBytes');
  });
});

describe('the stack: deadline and cancellation', () => {
  it('cuts a try that waits for headers past the upstream timeout', async () => {
    const { upstream, transport } = upstreamOf({ timeout: '50ms' }, () => new Promise(() => undefined));
    const started = Date.now();
    const error = await failure(upstream.call(get));
    expect(error).toMatchObject({ code: 'upstream.timeout', httpStatus: 504 });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(transport.sent[0]?.aborted).toBe('upstream.timeout');
  });

  it('cuts a caller whose upload stalls while it is buffered for retries', async () => {
    const { upstream, transport } = upstreamOf(
      { timeout: '50ms', retries: { attempts: 2, retryNonIdempotent: true } },
      () => answer(200),
    );
    const stalled = new Readable({ read() {} });
    stalled.push('half a body');
    const error = await failure(upstream.call({ method: 'POST', path: '/x', headers: {}, body: stalled }));
    expect(error.code).toBe('upstream.timeout');
    expect(transport.sent).toEqual([]);
  });

  it('cuts a body that stalls after the headers: the timeout bounds the whole exchange', async () => {
    const { upstream } = upstreamOf({ timeout: '50ms' }, () => stalledAnswer());
    const response = await upstream.call(get);
    expect(response.status).toBe(200);
    const error = await failure(text(response));
    expect(error.code).toBe('upstream.timeout');
  });

  it('a caller that leaves cancels the call, and the endpoint is not blamed for it', async () => {
    const { upstream, transport } = upstreamOf(
      { circuitBreaker: { consecutiveFailures: 1, openFor: '60s', halfOpenRequests: 1 } },
      () => new Promise(() => undefined),
      ['a'],
    );
    const signal = new CallSignal();
    const call = upstream.call({ ...get, signal });
    setTimeout(
      () => signal.abort(new AimeshError('upstream.failed', 'caller left', { details: { cancelled: true } })),
      10,
    );
    expect((await failure(call)).message).toBe('caller left');
    expect(transport.sent[0]?.aborted).toBe('upstream.failed');
    expect(upstream.policy.view(Date.now())[0]?.breaker).toBe('closed');
  });
});

describe('the stack: headers', () => {
  it('passes on neither hop-by-hop headers nor the ones the upstream names in Connection', async () => {
    const { upstream, transport } = upstreamOf({}, () =>
      answer(200, 'ok', {
        connection: 'keep-alive, x-hop-secret',
        'x-hop-secret': 'for this hop only',
        'keep-alive': 'timeout=5',
        'x-kept': 'yes',
      }),
    );
    const response = await upstream.call({ ...get, headers: { 'x-request-id': 'r-1' } });
    expect(response.headers).toEqual({ 'x-kept': 'yes' });
    expect(response.requestId).toBe('r-1');
    expect(transport.sent[0]?.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
});

describe('routes: compiled once, swapped whole', () => {
  it('keeps unchanged upstreams with their state, retires changed ones after their last call', async () => {
    const transports: FakeTransport[] = [];
    const deps = {
      metrics: sidecarMetrics(),
      log: quiet,
      tracing,
      transport: () => {
        const transport = new FakeTransport(() => stalledAnswer());
        transports.push(transport);
        return transport;
      },
    };
    const first = Routes.build(compile([{ name: 'a' }, { name: 'b', timeout: '5s' }]), deps);
    first.upstream('b').setEndpoints(endpoints('b1'), false);
    const inFlight = await first.upstream('b').call(get);
    const second = Routes.build(compile([{ name: 'a' }, { name: 'b', timeout: '9s' }]), deps, first);
    first.retireUnusedBy(second);
    expect(second.upstream('a')).toBe(first.upstream('a'));
    expect(second.upstream('b')).not.toBe(first.upstream('b'));
    expect(second.upstream('b').config.timeoutMs).toBe(9000);
    // The call that started on the old config keeps its connections until it is over.
    expect(transports[1]?.closed).toBe(false);
    inFlight.body.destroy();
    await new Promise((resolve) => setImmediate(resolve));
    expect(transports[1]?.closed).toBe(true);
    expect(() => second.upstream('c')).toThrow('"c" is not an upstream of this service');
  });
});

describe('saga steps through the stack, in-process', () => {
  function routesWith(script: Script) {
    const transport = new FakeTransport(script);
    const routes = Routes.build(compile([{ name: 'users' }]), {
      metrics: sidecarMetrics(),
      log: quiet,
      tracing,
      transport: () => transport,
    });
    routes.upstream('users').setEndpoints(endpoints('u1'), false);
    return { call: stackStepCaller(() => routes), transport };
  }
  const step = {
    service: 'users',
    method: 'POST',
    path: '/users/1/validate',
    headers: { 'x-tenant': 't' },
    body: { id: 1 },
    timeoutMs: 1000,
    idempotencyKey: 'e-1:validate:action',
  };

  it('sends the step with its idempotency key and reads a JSON answer', async () => {
    const { call, transport } = routesWith(() =>
      answer(200, '{"valid":true}', { 'content-type': 'application/json' }),
    );
    expect(await call(step)).toEqual({
      ok: true,
      response: { status: 200, headers: { 'content-type': 'application/json' }, body: { valid: true } },
    });
    expect(transport.sent[0]).toMatchObject({
      path: '/users/1/validate',
      body: '{"id":1}',
      headers: { 'idempotency-key': 'e-1:validate:action', 'x-tenant': 't', host: 'users' },
    });
  });

  it('reports what the stack says, in the state machine’s terms', async () => {
    const { call } = routesWith(() => {
      throw networkError('ECONNREFUSED');
    });
    expect(await call(step)).toMatchObject({ ok: false, failure: { error: 'connect-failure' } });
    expect(await call({ ...step, service: 'nobody' })).toMatchObject({
      ok: false,
      failure: { status: 404 },
      message: expect.stringContaining('"nobody" is not an upstream of this service') as unknown as string,
    });
    const slow = routesWith(() => new Promise(() => undefined));
    expect(await slow.call({ ...step, timeoutMs: 20 })).toMatchObject({
      ok: false,
      failure: { error: 'timeout' },
    });
  });
});
