/**
 * The outbound proxy's request path, top-down:
 *
 *   listener → route (which upstream, or the AI route) → one call through that upstream's
 *   stack → respond (stream the answer, or a fallback, or the error)
 *
 * A request keeps the routes (config) it started with to its end, and a caller that
 * leaves cancels its upstream call.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { PassThrough, Transform, type Duplex, type Readable } from 'node:stream';
import { AimeshError, asAimeshError, describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import type { SidecarMetrics } from '../admin/index.js';
import { AI_PREFIX } from '../ai/index.js';
import type { CompiledUpstream } from '../config/compile.js';
import { isGrpc, sendError, sendErrorOnSocket } from '../error-response.js';
import type { Routes } from '../routes.js';
import {
  CallSignal,
  endToEnd,
  type StackRequest,
  type StackResponse,
  type Upstream,
} from '../stack/index.js';
import { forwardGrpc } from './grpc.js';
import type { UpgradeHandler } from './listener.js';
import { resolveTarget } from './target.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export function outboundHandler(routes: () => Routes, metrics: SidecarMetrics, log: Logger): Handler {
  return (req, res) => {
    serve(routes(), metrics, req, res).catch((error: unknown) => {
      const failure = asAimeshError(error);
      if (failure.code === 'internal')
        log.error('proxy error', { url: req.url, error: failure, cause: failure.cause });
      else log.debug('request failed', { url: req.url, code: failure.code, error: failure.message });
      // The rest of a body over the limit is not read: the connection cannot carry another request.
      if (failure.code === 'input.too-large' && !res.headersSent) res.setHeader('connection', 'close');
      sendError(res, failure);
    });
  };
}

/**
 * An HTTP/1.1 upgrade (websocket) from the app: through the upstream's stack to one
 * endpoint; once it switches protocols, bytes flow both ways until either side closes (or
 * the edge's idle timeout, which the listener set on the app's socket, passes). An upgrade
 * to the AI route or a gRPC upstream is refused with 501.
 */
export function outboundUpgradeHandler(routes: () => Routes, log: Logger): UpgradeHandler {
  return (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    proxyUpgrade(routes(), req, socket, head).catch((error: unknown) => {
      const failure = asAimeshError(error);
      if (failure.code === 'internal')
        log.error('proxy error', { url: req.url, error: failure, cause: failure.cause });
      else log.debug('upgrade failed', { url: req.url, code: failure.code, error: failure.message });
      sendErrorOnSocket(socket, failure);
    });
  };
}

async function proxyUpgrade(
  routes: Routes,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const protocol = String(req.headers.upgrade);
  if ((req.url ?? '/').startsWith(AI_PREFIX))
    throw new AimeshError('input.unsupported', 'the AI route takes no HTTP/1.1 upgrade (websocket)');
  const target = route(req);
  const upstream = routes.upstream(target.service);
  const signal = new CallSignal();
  const onLeave = () =>
    signal.abort(
      new AimeshError('upstream.failed', 'the caller left before the upgrade was answered', {
        details: { cancelled: true },
      }),
    );
  socket.once('close', onLeave);
  const headers = endToEnd(req.headers);
  headers.host = target.service;
  const upgraded = await upstream.upgrade({
    method: req.method ?? 'GET',
    path: target.path,
    headers,
    protocol,
    ...hashKey(upstream.config, req),
    signal,
  });
  socket.off('close', onLeave);
  const answer = endToEnd(upgraded.headers);
  let head101 = 'HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n';
  head101 += `upgrade: ${String(upgraded.headers.upgrade ?? protocol)}\r\n`;
  for (const [name, value] of Object.entries(answer))
    for (const one of Array.isArray(value) ? value : [value]) head101 += `${name}: ${one}\r\n`;
  const peer = upgraded.socket;
  if (socket.destroyed) {
    peer.destroy();
    return;
  }
  peer.on('error', () => socket.destroy());
  socket.on('close', () => peer.destroy());
  peer.on('close', () => socket.destroy());
  socket.write(`${head101}\r\n`);
  if (head.length > 0) peer.write(head);
  socket.pipe(peer);
  peer.pipe(socket);
}

async function serve(
  routes: Routes,
  metrics: SidecarMetrics,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const signal = cancelWhenCallerLeaves(res);
  const url = req.url ?? '/';
  if (url.startsWith(AI_PREFIX)) {
    if (!routes.ai)
      throw new AimeshError(
        'input.not-found',
        'no provider channels are configured: add spec.providers to the AiService',
      );
    return routes.ai.handle(req, res, url.slice(AI_PREFIX.length), signal);
  }
  const target = route(req);
  const upstream = routes.upstream(target.service);
  if (upstream.config.protocol === 'grpc' || isGrpc(req))
    return forwardGrpc(upstream, req, res, target.path, signal);
  const body = hasBody(req)
    ? boundedBody(req, routes.config.source.edge.maxRequestBodyBytes, signal)
    : undefined;
  const headers = endToEnd(req.headers);
  headers.host = target.service;
  const request: StackRequest = {
    method: req.method ?? 'GET',
    path: target.path,
    headers,
    ...(body ? { body: body.stream } : {}),
    ...hashKey(upstream.config, req),
    signal,
  };
  let response: StackResponse;
  try {
    response = await upstream.call(request);
  } catch (error) {
    // The app's fault, not the upstream's: no fallback answers it.
    if (body?.overLimit) throw body.overLimit;
    return fallback(routes, metrics, upstream, request, res, asAimeshError(error));
  }
  if (response.status >= 500 && upstream.config.fallback) {
    response.body.resume();
    return fallback(
      routes,
      metrics,
      upstream,
      request,
      res,
      new AimeshError('upstream.failed', `${upstream.config.name} answered ${response.status}`, {
        details: { upstream: upstream.config.name, status: response.status },
      }),
    );
  }
  const keepForStaleCache =
    request.method === 'GET' &&
    response.status === 200 &&
    upstream.config.fallback?.staleCacheMaxAgeMs !== undefined;
  return respond(res, response, keepForStaleCache ? { upstream, key: request.path } : undefined);
}

/**
 * The request body, bounded by the edge's maxRequestBodyBytes. A declared length over it is
 * refused before any upstream call. A streamed body is counted as it passes; past the limit
 * the call is cancelled as if the app had left (so the upstream's breaker and outlier
 * detection do not count the app's fault against it) and the app gets 413.
 */
function boundedBody(
  req: IncomingMessage,
  max: number,
  signal: CallSignal,
): { stream: Readable; overLimit?: AimeshError } {
  const tooLarge = (what: string) =>
    new AimeshError(
      'input.too-large',
      `${what} is over the sidecar's limit of ${max} bytes (spec.sidecar.edge.maxRequestBodyBytes)`,
      { details: { limit: max, cancelled: true } },
    );
  const length = req.headers['content-length'];
  if (length !== undefined && /^\d+$/.test(length)) {
    if (Number(length) > max) throw tooLarge(`a request body of ${length} bytes`);
    return { stream: req };
  }
  const bounded: { stream: Readable; overLimit?: AimeshError } = { stream: req };
  let seen = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      seen += chunk.length;
      if (seen <= max) return done(null, chunk);
      bounded.overLimit ??= tooLarge('the streamed request body');
      signal.abort(bounded.overLimit);
      done(bounded.overLimit);
    },
  });
  req.once('error', (error) => counter.destroy(error));
  req.pipe(counter);
  bounded.stream = counter;
  return bounded;
}

/** Which upstream the app asked for: /v1/invoke/<service>/..., an absolute URI, or Host. */
function route(req: IncomingMessage): { service: string; path: string } {
  const host = (req.headers[':authority'] as string | undefined) ?? req.headers.host;
  const resolved = resolveTarget(req.url ?? '/', host);
  if (!resolved.ok) throw new AimeshError('input.invalid', resolved.message);
  return resolved.target;
}

/** The caller leaving before its answer is complete cancels the upstream call. */
function cancelWhenCallerLeaves(res: ServerResponse): CallSignal {
  const signal = new CallSignal();
  // writableEnded, not writableFinished: HTTP/2's compatibility response reports itself
  // finished once its stream has closed, however it closed (a client's RST_STREAM too).
  res.once('close', () => {
    if (!res.writableEnded)
      signal.abort(
        new AimeshError('upstream.failed', 'the caller left before the answer was complete', {
          details: { cancelled: true },
        }),
      );
  });
  return signal;
}

/**
 * Streams an answer to the app. A stream without a length (server-sent events, chunked)
 * must reach the app before its first chunk; one of known length goes out with its body in
 * one write. A GET of an upstream with a stale-cache fallback is kept as it passes.
 */
async function respond(
  res: ServerResponse,
  response: StackResponse,
  keep?: { upstream: Upstream; key: string },
): Promise<void> {
  // The stack made these headers for this response: add to them rather than copy them.
  const headers = response.headers;
  headers['x-request-id'] = response.requestId;
  res.writeHead(response.status, headers);
  // A body without a length may be a stream whose first chunk comes late (server-sent
  // events): its headers go out at once. Most such answers arrive whole with their headers,
  // and then the headers go out with the body in one write, not a system call of their own.
  if (headers['content-length'] === undefined && response.body.readableLength === 0) res.flushHeaders();
  if (!keep) {
    await pipeBody(response.body, res);
    return;
  }
  const { cache } = keep.upstream;
  const chunks: Buffer[] = [];
  let size = 0;
  const tap = new PassThrough();
  tap.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= cache.maxBodyBytes) chunks.push(chunk);
  });
  response.body.pipe(tap);
  const complete = await pipeBody(tap, res);
  if (complete && size <= cache.maxBodyBytes)
    cache.set(keep.key, { status: 200, headers, body: Buffer.concat(chunks), storedAt: Date.now() });
}

/**
 * When the upstream cannot answer: its static response, else the last good answer to the
 * same GET, else its backup service (for requests without a body, which the failed tries
 * consumed), else the failure itself.
 */
async function fallback(
  routes: Routes,
  metrics: SidecarMetrics,
  upstream: Upstream,
  request: StackRequest,
  res: ServerResponse,
  failure: AimeshError,
): Promise<void> {
  const name = upstream.config.name;
  const config = upstream.config.fallback;
  if (config?.response) {
    metrics.fallbacks.inc({ upstream: name, kind: 'response' });
    res.writeHead(config.response.status, { ...config.response.headers, 'x-aimesh-fallback': 'response' });
    res.end(config.response.body);
    return;
  }
  if (config?.staleCacheMaxAgeMs !== undefined && request.method === 'GET') {
    const cached = upstream.cache.get(request.path, config.staleCacheMaxAgeMs, Date.now());
    if (cached) {
      metrics.fallbacks.inc({ upstream: name, kind: 'stale-cache' });
      res.writeHead(cached.status, {
        ...cached.headers,
        'x-aimesh-fallback': 'stale-cache',
        age: String(Math.round((Date.now() - cached.storedAt) / 1000)),
      });
      res.end(cached.body);
      return;
    }
  }
  const backup = config?.service ? routes.find(config.service) : undefined;
  if (backup && request.body === undefined && !request.signal?.isAborted) {
    metrics.fallbacks.inc({ upstream: name, kind: 'service' });
    let response: StackResponse;
    try {
      response = await backup.call({ ...request, headers: { ...request.headers, host: backup.config.name } });
    } catch (error) {
      throw new AimeshError(
        'upstream.unavailable',
        `${failure.message}; backup ${backup.config.name}: ${describe(error)}`,
        {
          cause: error,
          details: { upstream: name, backup: backup.config.name },
        },
      );
    }
    return respond(res, {
      ...response,
      headers: { ...response.headers, 'x-aimesh-fallback': `service=${backup.config.name}` },
    });
  }
  throw failure;
}

/**
 * Pipes a body to the app; resolves true when it all went out. Plain pipe rather than
 * stream.pipeline: pipeline builds an AbortController and a DOMException per call,
 * measurable at thousands of requests per second.
 */
function pipeBody(body: Readable, res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    body.once('error', (error) => {
      // Cut, not ended: the app must not take a truncated body for a whole one.
      res.destroy(error);
      resolve(false);
    });
    res.once('close', () => {
      if (!body.readableEnded) body.destroy();
      resolve(res.writableEnded);
    });
    body.pipe(res);
  });
}

/** The consistent-hash key of a request: a header, a cookie, or the caller's address. */
function hashKey(upstream: CompiledUpstream, req: IncomingMessage): { hashKey?: string } {
  const on = upstream.hashOn;
  if (!on) return {};
  let key: string | undefined;
  if (on.header) {
    const value = req.headers[on.header.toLowerCase()];
    key = Array.isArray(value) ? value[0] : value;
  } else if (on.cookie) {
    const prefix = `${on.cookie}=`;
    key = String(req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim())
      .find((c) => c.startsWith(prefix))
      ?.slice(prefix.length);
  } else {
    key = req.socket.remoteAddress;
  }
  return key === undefined ? {} : { hashKey: key };
}

function hasBody(req: IncomingMessage): boolean {
  if (req.httpVersionMajor === 2) return !(req as unknown as Http2ServerRequest).stream.endAfterHeaders;
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}
