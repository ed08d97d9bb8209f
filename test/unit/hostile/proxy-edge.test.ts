/**
 * The outbound proxy's client-side edge against hostile and careless clients, with raw
 * sockets: the real listener, handler and stack (real transports) in front of real
 * upstream servers on 127.0.0.1. Short configured timeouts; what is asserted is the
 * behaviour (closed, cut, refused, cancelled), never how long it took.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { trace } from '@opentelemetry/api';
import { EventEmitter, once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import {
  connect as connectHttp2,
  constants,
  createServer as createHttp2Server,
  type ClientHttp2Session,
  type Http2Server,
  type IncomingHttpHeaders as Http2Headers,
} from 'node:http2';
import { connect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import { edgeSchema, sidecarConfig, type SidecarConfigInput } from '../../../api/index.js';
import { createLogger } from '../../../lib/log/index.js';
import { sidecarMetrics } from '../../../sidecar/admin/index.js';
import { compileConfig, compileEdge } from '../../../sidecar/config/compile.js';
import {
  listenHttp1AndH2c,
  outboundHandler,
  outboundUpgradeHandler,
  type DualListener,
} from '../../../sidecar/proxy/index.js';
import { Routes } from '../../../sidecar/routes.js';

const quiet = createLogger('test', {
  level: 'error',
  destination: new Writable({ write: (_chunk, _encoding, done) => done() }),
});
/** What the upstreams saw: `closed:<path>` when a request of theirs ended before its answer did. */
const seen = new EventEmitter();
/** Longest any test waits for something that must happen; failing past it, not timing it. */
const GUARD_MS = 10_000;

const edge = compileEdge(
  edgeSchema.parse({
    firstByteTimeout: '300ms',
    headersTimeout: '500ms',
    requestTimeout: '1s',
    idleTimeout: '1s',
    maxHeaderBytes: 2048,
    maxConcurrentStreams: 2,
  }),
);

let web: HttpServer;
let grpc: Http2Server;
let llm: HttpServer;
let routes: Routes;
let listener: DualListener;
/** What the main listener reported closing on its own. */
const edgeClosed: string[] = [];
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  web = await listen(createHttpServer(webHandler), (server) => server.on('upgrade', webUpgrade));
  grpc = await listen(createHttp2Server(), grpcHandler);
  llm = await listen(createHttpServer(llmHandler));
  const config: SidecarConfigInput = {
    service: { name: 'caller', port: 1 },
    upstreams: [
      { name: 'web', timeout: '1m' },
      { name: 'hasty', timeout: '300ms' },
      { name: 'greeter', protocol: 'grpc', timeout: '1m' },
      { name: 'hasty-greeter', protocol: 'grpc', timeout: '300ms' },
    ],
    providers: [{ name: 'llm', baseUrl: `http://127.0.0.1:${portOf(llm)}/v1`, priority: 1 }],
    edge: { maxRequestBodyBytes: 2048 },
  };
  routes = Routes.build(compileConfig(sidecarConfig.parse(config)), {
    metrics: sidecarMetrics(),
    log: quiet,
    tracing: { tracer: trace.getTracer('test'), enabled: false },
  });
  for (const [name, server] of [
    ['web', web],
    ['hasty', web],
    ['greeter', grpc],
    ['hasty-greeter', grpc],
  ] as const)
    routes
      .upstream(name)
      .setEndpoints([{ id: name, address: '127.0.0.1', port: portOf(server), meta: {}, tags: [] }], false);
  listener = await listenHttp1AndH2c(
    '127.0.0.1',
    0,
    outboundHandler(() => routes, sidecarMetrics(), quiet),
    {
      edge,
      upgrade: outboundUpgradeHandler(() => routes, quiet),
      onEdgeClose: (reason) => edgeClosed.push(reason),
    },
  );
});

afterAll(async () => {
  for (const step of cleanup.reverse()) await step();
  await listener?.close(0);
  await Promise.all(routes?.all().map((u) => u.close()) ?? []);
  for (const server of [web, grpc, llm]) {
    if (!server) continue;
    (server as HttpServer).closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }
});

describe('the edge closes connections that hold it', () => {
  it('closes a connection that sends nothing after the first-byte timeout', async () => {
    const before = edgeClosed.length;
    const { data, closed } = rawClient(listener.port);
    await closed;
    expect(data()).toBe('');
    expect(edgeClosed.slice(before)).toEqual(['first-byte-timeout']);
  });

  it('closes a connection that sends part of the h2c preface and then nothing', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('PRI * HT');
    await closed;
    expect(data()).toBe('');
  });

  it('cuts headers that trickle in one byte at a time (slowloris) with 408', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nX-Slow: ');
    const drip = setInterval(() => socket.writable && socket.write('a'), 50);
    try {
      await closed;
    } finally {
      clearInterval(drip);
    }
    expect(data()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('cuts a request body that trickles past the request timeout with 408, and cancels its upstream call', async () => {
    const upstreamClosed = once(seen, 'closed:/upload');
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('POST /v1/invoke/web/upload HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n\r\n');
    const drip = setInterval(() => socket.writable && socket.write('a'), 50);
    try {
      await closed;
    } finally {
      clearInterval(drip);
    }
    expect(data()).toMatch(/^HTTP\/1\.1 408 /);
    await withGuard(upstreamClosed, 'the upstream request was not closed');
  });

  it('does not cut a streamed answer that lasts longer than the request timeout', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('GET /v1/invoke/web/slow-stream HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 200 /);
    expect(bodyOf(data())).toBe('0123456789');
  });

  it('a connection reset while its first bytes are read does not take the sidecar down', async () => {
    const { socket, closed } = rawClient(listener.port);
    socket.write('PRI');
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.resetAndDestroy();
    await closed;
    const session = await h2Session(listener.port);
    try {
      const { headers } = await h2Get(session, '/v1/invoke/web/echo');
      expect(headers[':status']).toBe(200);
    } finally {
      session.close();
    }
  });

  it('closes a keep-alive connection after the idle timeout, once its answer is complete', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\n\r\n');
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 200 /);
    expect(data()).toMatch(/\r\nkeep-alive: timeout=1\r\n/i);
  });

  it('closes an HTTP/2 connection with no open stream after the idle timeout', async () => {
    const session = connectHttp2(`http://127.0.0.1:${listener.port}`);
    session.on('error', () => undefined);
    await withGuard(closeOf(session), 'the idle session was not closed');
    expect(session.closed).toBe(true);
  });
});

describe('the edge refuses what is too big or too many', () => {
  it('answers a request header block over maxHeaderBytes with 431', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(`GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nX-Big: ${'b'.repeat(4096)}\r\n\r\n`);
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 431 /);
  });

  it('advertises its HTTP/2 limits and refuses an HTTP/2 header list over them', async () => {
    const session = await h2Session(listener.port);
    try {
      const settings = session.remoteSettings;
      expect(settings.maxConcurrentStreams).toBe(2);
      expect(settings.maxHeaderListSize).toBe(2048);
      const stream = session.request({ ':path': '/v1/invoke/web/echo', 'x-big': 'b'.repeat(4096) });
      let answered = false;
      stream.on('response', () => (answered = true));
      stream.on('error', () => undefined);
      stream.end();
      await withGuard(closeOf(stream), 'the oversized stream was not refused');
      expect(answered).toBe(false);
      expect(stream.rstCode).not.toBe(constants.NGHTTP2_NO_ERROR);
    } finally {
      session.close();
    }
  });

  it('refuses HTTP/2 streams beyond maxConcurrentStreams on one connection', async () => {
    // Streams opened before the sidecar's SETTINGS arrive: the client cannot hold them back,
    // so it is the sidecar that must refuse the one too many.
    const session = connectHttp2(`http://127.0.0.1:${listener.port}`);
    session.on('error', () => undefined);
    try {
      const streams = [0, 1, 2].map(() => {
        const stream = session.request({ ':path': '/v1/invoke/web/hang' });
        stream.on('error', () => undefined);
        stream.end();
        return stream;
      });
      const refused = await withGuard(
        Promise.race(streams.map((stream) => closeOf(stream).then(() => stream))),
        'no stream was refused',
      );
      expect(refused.rstCode).toBe(constants.NGHTTP2_REFUSED_STREAM);
      const served = streams.filter((stream) => stream !== refused);
      expect(served.map((stream) => stream.closed)).toEqual([false, false]);
      for (const stream of served) stream.close(constants.NGHTTP2_CANCEL);
      await Promise.all(served.map((stream) => withGuard(closeOf(stream), 'a stream did not close')));
    } finally {
      session.close();
    }
  });

  it('closes connections over maxConnections at once and serves again when one leaves', async () => {
    const limitedClosed: string[] = [];
    const limited = await listenHttp1AndH2c(
      '127.0.0.1',
      0,
      outboundHandler(() => routes, sidecarMetrics(), quiet),
      {
        edge: compileEdge(edgeSchema.parse({ maxConnections: 2 })),
        onEdgeClose: (reason) => limitedClosed.push(reason),
      },
    );
    cleanup.push(() => limited.close(0));
    const first = rawClient(limited.port);
    const second = rawClient(limited.port);
    await untilConnections(limited, 2);
    const third = rawClient(limited.port);
    await third.closed;
    expect(third.data()).toBe('');
    expect(limitedClosed).toEqual(['connection-limit']);
    expect(first.socket.destroyed || second.socket.destroyed).toBe(false);
    first.socket.destroy();
    await first.closed;
    await untilConnections(limited, 1);
    const fourth = rawClient(limited.port);
    fourth.socket.write('GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
    await fourth.closed;
    expect(fourth.data()).toMatch(/^HTTP\/1\.1 200 /);
    second.socket.destroy();
  });
});

describe('request bodies over maxRequestBodyBytes', () => {
  it('a declared length over the limit is answered 413 before any upstream call, and the connection closed', async () => {
    let arrived = false;
    seen.once('arrived:/declared-big', () => (arrived = true));
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('POST /v1/invoke/web/declared-big HTTP/1.1\r\nHost: web\r\nContent-Length: 4096\r\n\r\n');
    socket.write('x'.repeat(100));
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 413 /);
    expect(data()).toMatch(/\r\nconnection: close\r\n/i);
    expect(data()).toContain('"code":"input.too-large"');
    expect(data()).toContain('maxRequestBodyBytes');
    expect(arrived).toBe(false);
  });

  it('a streamed (chunked) body that grows past the limit cancels its upstream call and is answered 413', async () => {
    const upstreamClosed = once(seen, 'closed:/upload');
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('POST /v1/invoke/web/upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n');
    const chunk = 'y'.repeat(512);
    const drip = setInterval(
      () => socket.writable && socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`),
      20,
    );
    try {
      await closed;
    } finally {
      clearInterval(drip);
    }
    expect(data()).toMatch(/^HTTP\/1\.1 413 /);
    await withGuard(upstreamClosed, 'the upstream request was not closed');
  });

  it('a body within the limit goes through whole', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(
      `POST /v1/invoke/web/body-ok HTTP/1.1\r\nHost: web\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n${'z'.repeat(2000)}`,
    );
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 200 /);
    expect(data()).toContain('"url":"/body-ok"');
  });
});

describe('a reload of the edge limits', () => {
  it('applies to connections accepted after it; open ones keep theirs', async () => {
    const reloaded = await listenHttp1AndH2c(
      '127.0.0.1',
      0,
      outboundHandler(() => routes, sidecarMetrics(), quiet),
      { edge: compileEdge(edgeSchema.parse({ maxHeaderBytes: 8192 })) },
    );
    cleanup.push(() => reloaded.close(0));
    const bigRequest = `GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nConnection: close\r\nX-Big: ${'b'.repeat(4096)}\r\n\r\n`;
    const before = rawClient(reloaded.port);
    before.socket.write('G');
    // The limits a connection gets are those current when it is accepted.
    await untilConnections(reloaded, 1);
    reloaded.setEdge(compileEdge(edgeSchema.parse({ maxHeaderBytes: 2048 })));
    const after = rawClient(reloaded.port);
    before.socket.write(bigRequest.slice(1));
    after.socket.write(bigRequest);
    await Promise.all([before.closed, after.closed]);
    expect(before.data()).toMatch(/^HTTP\/1\.1 200 /);
    expect(after.data()).toMatch(/^HTTP\/1\.1 431 /);
  });
});

describe('sniffing HTTP/1 from h2c', () => {
  it('serves HTTP/1.1 whose first segment is "P", a prefix of the h2c preface', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('P');
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.write(
      'OST /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi',
    );
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('serves HTTP/2 whose preface arrives in two segments', async () => {
    const relay = await splittingRelay(listener.port, 8);
    cleanup.push(() => new Promise((resolve) => relay.close(() => resolve())));
    const session = await h2Session(portOf(relay));
    try {
      const { headers, body } = await h2Get(session, '/v1/invoke/web/echo');
      expect(headers[':status']).toBe(200);
      expect(JSON.parse(body)).toMatchObject({ url: '/echo' });
    } finally {
      session.close();
    }
  });
});

describe('websocket upgrades', () => {
  it('are proxied to the upstream: 101 with its headers, then bytes both ways, and closed together', async () => {
    const upstreamClosed = once(seen, 'closed:/ws');
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(
      'GET /v1/invoke/web/ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n' +
        'hello',
    );
    while (!data().includes('HELLO')) await withGuard(once(socket, 'data'), 'no upgraded answer');
    const head = (data().split('\r\n\r\n')[0] as string).toLowerCase();
    expect(head).toMatch(/^http\/1\.1 101 /);
    expect(head).toContain('\r\nupgrade: websocket');
    expect(head).toContain('\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=');
    expect(head).not.toContain('x-upstream-hop');
    socket.write(' world');
    while (!data().includes('WORLD')) await withGuard(once(socket, 'data'), 'no echo after the upgrade');
    socket.end();
    await closed;
    await withGuard(upstreamClosed, 'the upstream side was not closed');
  });

  it('an upgraded connection left idle is closed after the idle timeout, on both sides', async () => {
    const upstreamClosed = once(seen, 'closed:/ws');
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(
      'GET /v1/invoke/web/ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 101 /);
    await withGuard(upstreamClosed, 'the upstream side was not closed');
  });

  it('an upstream that does not switch protocols gets the app a 502 and the connection closed', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(
      'GET /v1/invoke/web/ws-refused HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 502 /);
    expect(JSON.parse(bodyOf(data()))).toMatchObject({ code: 'upstream.failed' });
  });

  it('are refused with 501 input.unsupported by gRPC upstreams and the AI route', async () => {
    for (const [path, host] of [
      ['/v1/invoke/greeter/ws', 'greeter'],
      ['/v1/ai/realtime', 'x'],
    ]) {
      const { socket, data, closed } = rawClient(listener.port);
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      );
      await closed;
      expect(data()).toMatch(/^HTTP\/1\.1 501 /);
      expect(data()).toMatch(/\r\nconnection: close/i);
      expect(JSON.parse(bodyOf(data()))).toMatchObject({ code: 'input.unsupported' });
    }
  });

  it('an h2c upgrade offer is ignored and the request served as HTTP/1.1', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(
      'GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n' +
        'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.end();
    await closed;
    expect(data()).toMatch(/^HTTP\/1\.1 200 /);
    const echoed = JSON.parse(bodyOf(data())) as { headers: Record<string, string> };
    expect(echoed.headers.upgrade).toBeUndefined();
    expect(echoed.headers['http2-settings']).toBeUndefined();
  });
});

describe('hop-by-hop headers', () => {
  it('are not sent upstream, nor the ones the client names in Connection', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write(
      'GET /v1/invoke/web/echo HTTP/1.1\r\nHost: web\r\nConnection: close, X-Client-Hop\r\n' +
        'X-Client-Hop: secret\r\nKeep-Alive: timeout=99\r\nProxy-Authorization: Basic c2VjcmV0\r\n' +
        'Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-End-To-End: kept\r\n\r\n',
    );
    await closed;
    const echoed = JSON.parse(bodyOf(data())) as { headers: Record<string, string> };
    expect(echoed.headers['x-end-to-end']).toBe('kept');
    for (const name of ['x-client-hop', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te'])
      expect(echoed.headers[name]).toBeUndefined();
  });

  it('are not passed back to an HTTP/1.1 client, nor the ones the upstream names in Connection', async () => {
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('GET /v1/invoke/web/hop HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n');
    await closed;
    const head = (data().split('\r\n\r\n')[0] as string).toLowerCase();
    expect(head).toMatch(/^http\/1\.1 200 /);
    expect(head).toContain('\r\nx-kept: yes');
    expect(head).not.toContain('x-upstream-hop');
    expect(head).not.toContain('proxy-authenticate');
    expect(head).not.toContain('timeout=5');
  });

  it('are not passed back to an HTTP/2 client either', async () => {
    const session = await h2Session(listener.port);
    try {
      const { headers } = await h2Get(session, '/v1/invoke/web/hop');
      expect(headers[':status']).toBe(200);
      expect(headers['x-kept']).toBe('yes');
      expect(headers['x-upstream-hop']).toBeUndefined();
      expect(headers['proxy-authenticate']).toBeUndefined();
    } finally {
      session.close();
    }
  });
});

describe('a client that leaves, and the upstream timeout, end the upstream exchange', () => {
  it('HTTP: the upstream request is closed when the client leaves before the answer', async () => {
    const upstreamClosed = once(seen, 'closed:/hang');
    const { socket, closed } = rawClient(listener.port);
    socket.write('GET /v1/invoke/web/hang HTTP/1.1\r\nHost: web\r\n\r\n');
    await once(seen, 'arrived:/hang');
    socket.destroy();
    await closed;
    await withGuard(upstreamClosed, 'the upstream request was not closed');
  });

  it('HTTP: a body that stalls after its headers is cut at the upstream timeout, on both sides', async () => {
    const upstreamClosed = once(seen, 'closed:/stall');
    const { socket, data, closed } = rawClient(listener.port);
    socket.write('GET /v1/invoke/hasty/stall HTTP/1.1\r\nHost: hasty\r\n\r\n');
    await closed;
    // The head and the first chunk came; the chunked body never got its last chunk.
    expect(data()).toMatch(/^HTTP\/1\.1 200 /);
    expect(data()).toContain('first');
    expect(data()).not.toMatch(/\r\n0\r\n\r\n$/);
    await withGuard(upstreamClosed, 'the upstream request was not closed');
  });

  it('gRPC: the upstream stream is cancelled when the client cancels', async () => {
    const upstreamClosed = once(seen, 'closed:/greeter.Greeter/Hang');
    const session = await h2Session(listener.port);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': '/greeter.Greeter/Hang',
        ':authority': 'greeter',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.on('error', () => undefined);
      stream.write(Buffer.from([0, 0, 0, 0, 0]));
      await once(seen, 'arrived:/greeter.Greeter/Hang');
      stream.close(constants.NGHTTP2_CANCEL);
      await withGuard(upstreamClosed, 'the upstream stream was not closed');
    } finally {
      session.close();
    }
  });

  it('gRPC: a call whose answer stalls after its first message ends with DEADLINE_EXCEEDED at the upstream timeout', async () => {
    const upstreamClosed = once(seen, 'closed:/greeter.Greeter/Stall');
    const session = await h2Session(listener.port);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': '/greeter.Greeter/Stall',
        ':authority': 'hasty-greeter',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.on('error', () => undefined);
      const trailers = new Promise<Http2Headers>((resolve) => stream.once('trailers', resolve));
      let received = 0;
      stream.on('data', (chunk: Buffer) => (received += chunk.length));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
      expect((await withGuard(trailers, 'no trailers'))['grpc-status']).toBe('4');
      expect(received).toBe(5);
      await withGuard(upstreamClosed, 'the upstream stream was not closed');
    } finally {
      session.close();
    }
  });

  it('AI streams: the provider stream is closed when the app leaves mid-stream', async () => {
    const upstreamClosed = once(seen, 'closed:/v1/chat/completions');
    const { socket, data, closed } = rawClient(listener.port);
    const body = JSON.stringify({ model: 'm', stream: true, messages: [] });
    socket.write(
      `POST /v1/ai/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    while (!data().includes('"n":1')) await withGuard(once(socket, 'data'), 'no first event');
    socket.destroy();
    await closed;
    await withGuard(upstreamClosed, 'the provider stream was not closed');
  });
});

/** The upstream app: echoes, hangs, stalls, and answers with hop-by-hop headers. */
function webHandler(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
  const path = req.url ?? '/';
  seen.emit(`arrived:${path}`);
  res.once('close', () => {
    if (!res.writableFinished) seen.emit(`closed:${path}`);
  });
  if (path === '/hang' || path === '/upload') {
    req.resume();
    return;
  }
  if (path === '/stall') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first');
    return;
  }
  if (path === '/slow-stream') {
    // Ten chunks over about twice the edge's request timeout.
    res.writeHead(200, { 'content-type': 'text/plain' });
    let n = 0;
    const tick = setInterval(() => {
      res.write(String(n++));
      if (n < 10) return;
      clearInterval(tick);
      res.end();
    }, 200);
    res.once('close', () => clearInterval(tick));
    return;
  }
  if (path === '/hop') {
    res.writeHead(200, {
      connection: 'keep-alive, x-upstream-hop',
      'x-upstream-hop': 'for this hop only',
      'keep-alive': 'timeout=5',
      'proxy-authenticate': 'Basic realm="upstream"',
      'x-kept': 'yes',
    });
    res.end('ok');
    return;
  }
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ url: path, headers: req.headers }));
  });
}

/**
 * The upstream's websocket side: switches protocols (with the RFC 6455 example's accept
 * value and a hop-by-hop header it names) and echoes upper-cased; or refuses to switch.
 */
function webUpgrade(req: import('node:http').IncomingMessage, socket: Duplex, head: Buffer): void {
  const path = req.url ?? '/';
  socket.on('error', () => undefined);
  socket.once('close', () => seen.emit(`closed:${path}`));
  if (path !== '/ws') {
    socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    return;
  }
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Upstream-Hop\r\n' +
      'X-Upstream-Hop: secret\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
  );
  const echo = (chunk: Buffer) => socket.write(chunk.toString().toUpperCase());
  if (head.length > 0) echo(head);
  socket.on('data', echo);
  socket.on('end', () => socket.end());
}

/** The gRPC upstream: accepts a call and never answers it, or answers one message and stalls. */
function grpcHandler(server: Http2Server): void {
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path']);
    seen.emit(`arrived:${path}`);
    stream.on('error', () => undefined);
    stream.once('close', () => seen.emit(`closed:${path}`));
    stream.resume();
    if (path.endsWith('/Stall')) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.write(Buffer.from([0, 0, 0, 0, 0]));
    }
  });
}

/** The provider: starts a server-sent event stream and never finishes it. */
function llmHandler(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
  const path = req.url ?? '/';
  res.once('close', () => {
    if (!res.writableFinished) seen.emit(`closed:${path}`);
  });
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: {"n":1}\n\n');
  });
}

async function listen<S extends HttpServer | Http2Server | NetServer>(
  server: S,
  setup?: (s: S) => void,
): Promise<S> {
  setup?.(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

function portOf(server: HttpServer | Http2Server | NetServer): number {
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('server is not listening');
  return address.port;
}

/** A raw TCP client; `closed` resolves when the server (or the test) ends the connection. */
function rawClient(port: number): { socket: Socket; data: () => string; closed: Promise<void> } {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  cleanup.push(() => void socket.destroy());
  return {
    socket,
    data: () => received,
    // A reset (the server closing while the client still writes) is a close too.
    closed: withGuard(closeOf(socket), 'the connection was not closed'),
  };
}

/** Waits until the listener holds `count` connections: accepting is asynchronous. */
async function untilConnections(target: DualListener, count: number): Promise<void> {
  const held = () =>
    new Promise<number>((resolve, reject) =>
      target.server.getConnections((error, n) => (error ? reject(error) : resolve(n))),
    );
  await withGuard(
    (async () => {
      while ((await held()) !== count) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    `the listener did not come to hold ${count} connections`,
  );
}

/** Resolves at 'close' whatever came before it; events.once would reject on an 'error'. */
function closeOf(emitter: EventEmitter): Promise<void> {
  return new Promise((resolve) => emitter.once('close', () => resolve()));
}

/** The body of a raw HTTP/1.1 response, chunked or not. */
function bodyOf(response: string): string {
  const at = response.indexOf('\r\n\r\n');
  const head = response.slice(0, at).toLowerCase();
  const body = response.slice(at + 4);
  return head.includes('\r\ntransfer-encoding: chunked') ? dechunked(body) : body;
}

function dechunked(body: string): string {
  let result = '';
  let rest = body;
  for (;;) {
    const lineEnd = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, lineEnd), 16);
    if (!(size > 0)) return result;
    result += rest.slice(lineEnd + 2, lineEnd + 2 + size);
    rest = rest.slice(lineEnd + 2 + size + 2);
  }
}

function withGuard<T>(promise: Promise<T>, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${message} within ${GUARD_MS} ms`)), GUARD_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function h2Session(port: number): Promise<ClientHttp2Session> {
  const session = connectHttp2(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  await withGuard(once(session, 'remoteSettings'), 'no HTTP/2 settings from the sidecar');
  return session;
}

async function h2Get(
  session: ClientHttp2Session,
  path: string,
): Promise<{ headers: Http2Headers; body: string }> {
  const stream = session.request({ ':path': path });
  stream.end();
  const [headers] = (await withGuard(once(stream, 'response'), 'no HTTP/2 response')) as [Http2Headers];
  let body = '';
  for await (const chunk of stream) body += (chunk as Buffer).toString();
  return { headers, body };
}

/**
 * A TCP relay that sends the first `cut` bytes of the client's first chunk, waits, then
 * the rest: what a client whose first segment is a prefix of the h2c preface looks like.
 */
async function splittingRelay(target: number, cut: number): Promise<NetServer> {
  const relay = createNetServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    upstream.setNoDelay(true);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    upstream.pipe(client);
    let first = true;
    client.on('data', (chunk: Buffer) => {
      if (!first) {
        upstream.write(chunk);
        return;
      }
      first = false;
      client.pause();
      upstream.write(chunk.subarray(0, cut));
      setTimeout(() => {
        upstream.write(chunk.subarray(cut));
        client.resume();
      }, 100);
    });
  });
  return listen(relay);
}
