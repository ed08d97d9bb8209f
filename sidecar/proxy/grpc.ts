/**
 * gRPC through the sidecar: the app's h2c stream is forwarded as one HTTP/2 stream to an
 * endpoint, headers, messages and trailers (grpc-status lives in trailers) included.
 * Streams are not retried: a gRPC call may be a long stream that cannot be replayed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants, type Http2ServerRequest } from 'node:http2';
import type { ConnectionPools } from './pools.js';
import type { RoutingPolicy } from './upstream.js';

const { HTTP2_HEADER_PATH, HTTP2_HEADER_METHOD, HTTP2_HEADER_STATUS } = constants;
/** UNAVAILABLE and DEADLINE_EXCEEDED count against the endpoint; other codes are the app's answer. */
const FAILED_STATUSES = new Set(['4', '14']);

export function forwardGrpc(
  name: string,
  policy: RoutingPolicy,
  pools: ConnectionPools,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<void> {
  return new Promise((resolve) => {
    if (req.httpVersionMajor !== 2) {
      res.writeHead(505, { 'content-type': 'text/plain' });
      res.end(`${name} speaks gRPC: send HTTP/2 (h2c) to the sidecar\n`);
      return resolve();
    }
    const downstream = (req as unknown as Http2ServerRequest).stream;
    const endpoint = policy.pick(undefined, new Set(), Date.now());
    if (!endpoint) {
      respondStatus(res, '14', `aimesh: no healthy endpoint for ${name}`);
      return resolve();
    }
    const started = Date.now();
    policy.started(endpoint.id);
    const headers: Record<string, string | string[]> = {};
    for (const [key, value] of Object.entries(req.headers)) {
      if (value === undefined || key.startsWith(':') || key === 'connection' || key === 'host') continue;
      headers[key] = value;
    }
    headers[HTTP2_HEADER_PATH] = path;
    headers[HTTP2_HEADER_METHOD] = 'POST';
    headers[':authority'] = name;
    const upstream = pools.session(endpoint.address, endpoint.port).request(headers);
    let ok = false;
    let settled = false;
    const finish = (failed: boolean) => {
      if (settled) return;
      settled = true;
      policy.finished(endpoint.id, { ok: ok && !failed, latencyMs: Date.now() - started }, Date.now());
      resolve();
    };
    // The compatibility response sends its trailers when the stream ends; gRPC's status
    // travels there, so headers go out first and everything with a grpc- prefix after.
    upstream.on('response', (responseHeaders) => {
      const status = Number(responseHeaders[HTTP2_HEADER_STATUS]);
      const { trailersOnly, rest } = splitTrailersOnly(responseHeaders);
      ok = status < 500 && !FAILED_STATUSES.has(String(trailersOnly['grpc-status']));
      res.writeHead(status, rest);
      if (Object.keys(trailersOnly).length > 0) res.addTrailers(trailersOnly);
      upstream.pipe(res);
    });
    upstream.on('trailers', (trailers) => {
      if (FAILED_STATUSES.has(String(trailers['grpc-status']))) ok = false;
      res.addTrailers(withoutPseudo(trailers));
    });
    upstream.on('end', () => finish(false));
    upstream.on('error', (error) => {
      if (!res.headersSent) respondStatus(res, '14', `aimesh: ${name}: ${error.message}`);
      else downstream.close(constants.NGHTTP2_INTERNAL_ERROR);
      finish(true);
    });
    downstream.on('close', () => {
      if (!upstream.closed) upstream.close(constants.NGHTTP2_CANCEL);
      finish(true);
    });
    req.pipe(upstream);
  });
}

/** A status answer the gRPC way: HTTP 200, the outcome in trailers. */
export function respondStatus(res: ServerResponse, code: string, message: string): void {
  res.writeHead(200, { 'content-type': 'application/grpc', 'x-aimesh-error': 'true' });
  res.addTrailers({ 'grpc-status': code, 'grpc-message': encodeURIComponent(message) });
  res.end();
}

function splitTrailersOnly(headers: Record<string, unknown>): {
  trailersOnly: Record<string, string>;
  rest: Record<string, string | string[]>;
} {
  const trailersOnly: Record<string, string> = {};
  const rest: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (key.startsWith(':') || value === undefined) continue;
    if (key === 'grpc-status' || key === 'grpc-message' || key === 'grpc-status-details-bin')
      trailersOnly[key] = String(value);
    else rest[key] = value as string | string[];
  }
  return { trailersOnly, rest };
}

function withoutPseudo(headers: Record<string, unknown>): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (!key.startsWith(':') && value !== undefined)
      result[key] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return result;
}
