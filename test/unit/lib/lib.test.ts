import { describe, expect, it } from '@jest/globals';
import { Writable } from 'node:stream';
import { AimeshError, asAimeshError, classifyNetworkError, errorBody } from '../../../lib/errors/index.js';
import { decodePath, headerValue, keySegment, pathSegment, pathUnder } from '../../../lib/encode/index.js';
import { canonicalJson } from '../../../lib/json/index.js';
import { createLogger } from '../../../lib/log/index.js';

describe('logger', () => {
  const capture = () => {
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    return { lines, destination };
  };

  it('writes one JSON object per line with time, level, component and message', () => {
    const { lines, destination } = capture();
    createLogger('operator', { destination }).info('reconciled', { key: 'ns/a' });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      component: 'operator',
      message: 'reconciled',
      key: 'ns/a',
    });
    expect(typeof lines[0]?.time).toBe('string');
  });

  it('redacts credentials wherever they sit in the fields', () => {
    const { lines, destination } = capture();
    createLogger('sidecar', { destination }).warn('config', {
      token: 'abc',
      headers: { authorization: 'Bearer s3cret', accept: 'json' },
      provider: { settings: { apiKey: 'sk-1' } },
    });
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain('s3cret');
    expect(text).not.toContain('sk-1');
    expect(text).not.toContain('"abc"');
    expect(lines[0]).toMatchObject({ headers: { accept: 'json', authorization: '[redacted]' } });
  });

  it('respects the level and logs errors with their code', () => {
    const { lines, destination } = capture();
    const log = createLogger('x', { destination, level: 'warn' });
    log.info('hidden');
    log.child({ upstream: 'a' }).error('failed', { error: new AimeshError('upstream.timeout', 'too slow') });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      upstream: 'a',
      error: { message: 'too slow', code: 'upstream.timeout' },
    });
  });
});

describe('error model', () => {
  it('gives every code one HTTP and one gRPC status', () => {
    const error = new AimeshError('upstream.no-endpoint', 'no endpoint of "rag" is healthy', {
      details: { upstream: 'rag' },
    });
    expect([error.httpStatus, error.grpcStatus]).toEqual([503, 14]);
    expect(errorBody(error)).toEqual({
      upstream: 'rag',
      error: 'no endpoint of "rag" is healthy',
      code: 'upstream.no-endpoint',
    });
    expect(error.terminal).toBe(false);
    expect(new AimeshError('input.invalid', 'bad').terminal).toBe(true);
  });

  it.each([
    [{ code: 'ECONNREFUSED' }, 'connect-failure'],
    [{ code: 'EHOSTUNREACH' }, 'connect-failure'],
    [{ name: 'ConnectTimeoutError', code: 'UND_ERR_CONNECT_TIMEOUT' }, 'connect-failure'],
    [{ message: 'fetch failed', cause: { code: 'ECONNREFUSED' } }, 'connect-failure'],
    [{ code: 'ENOTFOUND' }, 'dns'],
    [{ name: 'TimeoutError' }, 'timeout'],
    [{ code: 'UND_ERR_HEADERS_TIMEOUT' }, 'timeout'],
    [{ code: 'ECONNRESET' }, 'reset'],
    [{ code: 'UND_ERR_SOCKET' }, 'reset'],
  ])('classifies %j as %s', (error, expected) => {
    expect(classifyNetworkError(error)).toBe(expected);
  });

  it('does not call other errors network failures', () => {
    expect(classifyNetworkError(new TypeError('x is undefined'))).toBeUndefined();
    expect(asAimeshError(new TypeError('x is undefined')).code).toBe('internal');
    expect(asAimeshError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })).code).toBe(
      'upstream.unavailable',
    );
  });
});

describe('encoding values into places', () => {
  it('keeps a path segment one segment', () => {
    expect(pathSegment('a/../b?x=1#f')).toBe('a%2F..%2Fb%3Fx%3D1%23f');
    expect(pathSegment('%2e%2e')).toBe('%252e%252e');
    expect(() => pathSegment('..')).toThrow(/cannot be a URL path segment/);
    expect(() => pathSegment('')).toThrow(AimeshError);
  });

  it('refuses header values that would split the header', () => {
    expect(headerValue('abc 123')).toBe('abc 123');
    expect(() => headerValue('a\r\nx-evil: 1', 'header x-user')).toThrow(
      /header x-user contains a line break/,
    );
    expect(() => headerValue('a\0')).toThrow(AimeshError);
  });

  it('makes keys that cannot climb or nest', () => {
    expect(keySegment('../etc/passwd')).toBe('%2E%2E%2Fetc%2Fpasswd');
    expect(() => keySegment('..')).toThrow(AimeshError);
  });

  it('rebuilds a caller path under a base and never leaves it', () => {
    const segments = decodePath('/chat/completions?stream=true');
    expect(pathUnder('https://api.example.test/v1/', segments).href).toBe(
      'https://api.example.test/v1/chat/completions',
    );
    expect(() => decodePath('/../admin')).toThrow(/would leave the base path/);
    expect(() => decodePath('/%2e%2e/admin')).toThrow(/would leave the base path/);
    expect(() => decodePath('/a%2fb')).toThrow(/would leave the base path/);
    expect(pathUnder('http://h:1/base', ['a b', 'c?d'], { q: 'x&y' }).href).toBe(
      'http://h:1/base/a%20b/c%3Fd?q=x%26y',
    );
  });
});

describe('canonical JSON', () => {
  it('gives the same text whatever order keys arrive in, arrays kept in order', () => {
    const a = { b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } };
    const b = { a: { c: null, d: [3, { y: 2, z: 1 }] }, b: 1 };
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(canonicalJson(a, 0)).toBe('{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}');
  });
});

describe('probe server', () => {
  it('serves probes and, to loopback callers, the admin routes', async () => {
    const { Registry } = await import('prom-client');
    const { startProbeServer } = await import('../../../lib/probe/index.js');
    const probes = await startProbeServer({
      host: '127.0.0.1',
      port: 0,
      registry: new Registry(),
      ready: () => ({ ready: true, reason: 'ok' }),
      routes: { '/admin/config': () => ({ upstreams: [] }) },
      routesFromLoopbackOnly: true,
    });
    try {
      expect((await fetch(`http://127.0.0.1:${probes.port}/admin/config`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${probes.port}/healthz`)).status).toBe(200);
    } finally {
      await probes.close();
    }
  });

  it('tells loopback callers from callers on the pod network', async () => {
    const { isLoopback } = await import('../../../lib/probe/index.js');
    for (const address of ['127.0.0.1', '127.0.0.53', '::1', '::ffff:127.0.0.1'])
      expect(isLoopback(address)).toBe(true);
    for (const address of ['10.244.0.7', '::ffff:10.244.0.7', 'fd00::1', undefined])
      expect(isLoopback(address)).toBe(false);
  });
});
