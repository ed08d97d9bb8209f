/**
 * The outbound request handler: find the upstream, call it through its layers, stream
 * the answer back, and fall back (backup service, static response, stale cached GET) when
 * it cannot answer. Errors the sidecar produces say which upstream and why, in JSON, with
 * the header `x-aimesh-error` so apps can tell them from upstream answers.
 */
import { context, propagation, SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { PassThrough, type Readable } from 'node:stream';
import { respondStatus } from './grpc.js';
import { resolveTarget } from './target.js';
import { propagate } from './trace.js';
import { callUpstream, UpstreamError, type OutboundRequest, type UpstreamResponse } from './upstream.js';
import type { Upstreams } from './upstreams.js';

const AI_PATH = '/v1/ai/';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and HTTP/2 pseudo-headers are not forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

type Request = IncomingMessage;
type Response = ServerResponse;

/** Spans are made only when tracing is configured: the hot path stays free of them otherwise. */
export interface ProxyTracing {
  tracer: Tracer;
  enabled: boolean;
}

/** OpenAI-compatible calls under /v1/ai/ go to the provider channels (sidecar/ai). */
export interface AiCalls {
  handle: (req: Request, res: Response, path: string) => Promise<void>;
}

export function outboundHandler(
  upstreams: Upstreams,
  tracing?: ProxyTracing,
  ai?: () => AiCalls | undefined,
) {
  return (req: Request, res: Response): void => {
    const url = req.url ?? '/';
    if (url.startsWith(AI_PATH)) {
      const route = ai?.();
      const done = route
        ? route.handle(req, res, url.slice(AI_PATH.length))
        : Promise.resolve(
            sendError(res, 404, 'no provider channels are configured: add spec.providers to the AiService'),
          );
      done.catch((error: unknown) => {
        if (!res.headersSent) sendError(res, 502, `AI route error: ${(error as Error).message}`);
        else res.destroy(error as Error);
      });
      return;
    }
    handle(upstreams, req, res, tracing).catch((error: unknown) => {
      if (!res.headersSent) sendError(res, 502, `proxy error: ${(error as Error).message}`);
      else res.destroy(error as Error);
    });
  };
}

async function handle(
  upstreams: Upstreams,
  req: Request,
  res: Response,
  tracing?: ProxyTracing,
): Promise<void> {
  const host = (req.headers[':authority'] as string | undefined) ?? req.headers.host;
  const resolved = resolveTarget(req.url ?? '/', host);
  if (!resolved.ok) return sendError(res, resolved.status, resolved.message);
  const upstream = upstreams.get(resolved.target.service);
  if (!upstream) {
    return sendError(
      res,
      404,
      `"${resolved.target.service}" is not an upstream of this service; add it to spec.upstreams of the AiService`,
    );
  }
  if (upstream.config.protocol === 'grpc' || isGrpc(req))
    return upstream.forwardGrpc(req, res, resolved.target.path);

  const trace = propagate({
    traceparent: header(req, 'traceparent'),
    tracestate: header(req, 'tracestate'),
    requestId: header(req, 'x-request-id'),
  });
  if (tracing?.enabled) {
    const span = tracing.tracer.startSpan(
      `${req.method ?? 'GET'} ${upstream.config.name}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'http.request.method': req.method ?? 'GET',
          'server.address': upstream.config.name,
          'url.path': resolved.target.path.split('?')[0] ?? '/',
          'aimesh.request_id': trace['x-request-id'],
        },
      },
      propagation.extract(context.active(), req.headers),
    );
    const spanContext = span.spanContext();
    // The upstream sees this hop's span as its parent.
    trace.traceparent = `00-${spanContext.traceId}-${spanContext.spanId}-0${spanContext.traceFlags}`;
    res.once('close', () => {
      span.setAttribute('http.response.status_code', res.statusCode);
      if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    });
  }
  const request: OutboundRequest = {
    method: req.method ?? 'GET',
    path: resolved.target.path,
    headers: { ...forwardHeaders(req), ...trace, host: resolved.target.service },
    body: hasBody(req) ? (req as Readable) : undefined,
    hashKey: upstream.hashKey(req),
  };
  const startedAt = Date.now();
  const cacheKey = request.method === 'GET' ? request.path : undefined;
  let response: UpstreamResponse;
  try {
    response = await callUpstream(upstream.config, upstream.policy, upstream.pools, request, () =>
      upstream.metrics.retries.inc({ upstream: upstream.config.name }),
    );
  } catch (error) {
    const failure = error instanceof UpstreamError ? error : new UpstreamError(String(error), 502, 0);
    upstream.metrics.requests.inc({ upstream: upstream.config.name, endpoint: 'none', code: '0' });
    return fallback(upstreams, upstream.config.name, res, request, cacheKey, failure);
  } finally {
    upstream.metrics.duration.observe({ upstream: upstream.config.name }, (Date.now() - startedAt) / 1000);
  }
  upstream.metrics.requests.inc({
    upstream: upstream.config.name,
    endpoint: response.endpoint ?? 'none',
    code: String(response.status),
  });
  if (response.status >= 500 && upstream.config.fallback) {
    response.body.resume();
    return fallback(
      upstreams,
      upstream.config.name,
      res,
      request,
      cacheKey,
      new UpstreamError(
        `${upstream.config.name} answered ${response.status}`,
        response.status,
        response.attempts,
      ),
    );
  }
  const headers = responseHeaders(response.headers);
  headers['x-request-id'] = trace['x-request-id'];
  const cache =
    cacheKey !== undefined && response.status === 200 && upstream.config.staleCacheMaxAgeMs !== undefined;
  res.writeHead(response.status, headers);
  // A stream without a length (server-sent events, chunked) must reach the app before its
  // first chunk; a response of known length goes out with its body in one write.
  if (headers['content-length'] === undefined) res.flushHeaders();
  if (!cache) return pipeBody(response.body, res);
  const chunks: Buffer[] = [];
  let size = 0;
  const tap = new PassThrough();
  tap.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= upstream.cache.maxBodyBytes) chunks.push(chunk);
  });
  response.body.pipe(tap);
  await pipeBody(tap, res);
  if (size <= upstream.cache.maxBodyBytes) {
    upstream.cache.set(cacheKey, { status: 200, headers, body: Buffer.concat(chunks), storedAt: Date.now() });
  }
}

async function fallback(
  upstreams: Upstreams,
  name: string,
  res: Response,
  request: OutboundRequest,
  cacheKey: string | undefined,
  failure: UpstreamError,
): Promise<void> {
  const upstream = upstreams.get(name);
  const config = upstream?.config.fallback;
  if (upstream && config?.response) {
    upstream.metrics.fallbacks.inc({ upstream: name, kind: 'response' });
    res.writeHead(config.response.status, { ...config.response.headers, 'x-aimesh-fallback': 'response' });
    res.end(config.response.body);
    return;
  }
  if (upstream && cacheKey !== undefined && upstream.config.staleCacheMaxAgeMs !== undefined) {
    const cached = upstream.cache.get(cacheKey, upstream.config.staleCacheMaxAgeMs, Date.now());
    if (cached) {
      upstream.metrics.fallbacks.inc({ upstream: name, kind: 'stale-cache' });
      const age = Math.round((Date.now() - cached.storedAt) / 1000);
      res.writeHead(cached.status, {
        ...cached.headers,
        'x-aimesh-fallback': 'stale-cache',
        age: String(age),
      });
      res.end(cached.body);
      return;
    }
  }
  const backup = config?.service ? upstreams.get(config.service) : undefined;
  // The original body was read by the failed tries; only body-less requests can go elsewhere.
  if (upstream && backup && request.body === undefined) {
    upstream.metrics.fallbacks.inc({ upstream: name, kind: 'service' });
    try {
      const response = await callUpstream(backup.config, backup.policy, backup.pools, request, () =>
        backup.metrics.retries.inc({ upstream: backup.config.name }),
      );
      res.writeHead(response.status, {
        ...responseHeaders(response.headers),
        'x-aimesh-fallback': `service=${backup.config.name}`,
      });
      return pipeBody(response.body, res);
    } catch (error) {
      return sendError(
        res,
        503,
        `${failure.message}; backup ${config?.service}: ${(error as Error).message}`,
      );
    }
  }
  sendError(res, failure.status, failure.message);
}

/**
 * Streams an upstream body to the app. Plain pipe rather than stream.pipeline: pipeline
 * builds an AbortController and a DOMException per call, measurable at thousands of
 * requests per second.
 */
function pipeBody(body: Readable, res: Response): Promise<void> {
  return new Promise((resolve) => {
    body.once('error', (error) => {
      res.destroy(error);
      resolve();
    });
    res.once('close', () => {
      if (!body.readableEnded) body.destroy();
      resolve();
    });
    body.pipe(res);
  });
}

/** gRPC codes for the sidecar's own errors, as Envoy maps them. */
const GRPC_STATUS_FOR_HTTP: Record<number, number> = { 400: 13, 404: 12, 502: 14, 503: 14, 504: 4 };

function sendError(res: Response, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (isGrpc(res.req)) {
    // gRPC clients read the outcome from grpc-status, not from the HTTP status.
    respondStatus(res, String(GRPC_STATUS_FOR_HTTP[status] ?? 2), message);
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'x-aimesh-error': 'true' });
  res.end(`${JSON.stringify({ error: message })}\n`);
}

function forwardHeaders(req: Request): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  const listedInConnection = new Set(
    String(req.headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name.startsWith(':') || HOP_BY_HOP.has(name) || listedInConnection.has(name))
      continue;
    headers[name] = value;
  }
  return headers;
}

function responseHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const result: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) result[name] = value;
  }
  return result;
}

function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  if (req.httpVersionMajor === 2) return !(req as unknown as Http2ServerRequest).stream.endAfterHeaders;
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

function isGrpc(req: Request): boolean {
  return String(req.headers['content-type'] ?? '').startsWith('application/grpc');
}

function header(req: Request, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
