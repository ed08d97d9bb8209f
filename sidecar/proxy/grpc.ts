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
      downstream.respond(
        {
          [HTTP2_HEADER_STATUS]: 200,
          'content-type': 'application/grpc',
          'grpc-status': '14',
          'grpc-message': `aimesh: no healthy endpoint for ${name}`,
        },
        { endStream: true },
      );
      return resolve();
    }
    const started = Date.now();
    policy.started(endpoint.id);
    const headers: Record<string, string | string[]> = {};
    for (const [key, value] of Object.entries(req.headers)) {
      if (value === undefined || key === ':authority' || key === ':scheme' || key === 'connection') continue;
      headers[key] = value;
    }
    headers[HTTP2_HEADER_PATH] = path;
    headers[HTTP2_HEADER_METHOD] = 'POST';
    headers[':authority'] = name;
    const upstream = pools.session(endpoint.address, endpoint.port).request(headers);
    let ok = false;
    const finish = (failed: boolean) => {
      policy.finished(endpoint.id, { ok: ok && !failed, latencyMs: Date.now() - started }, Date.now());
      resolve();
    };
    let trailers: Record<string, string | string[] | undefined> = {};
    upstream.on('response', (responseHeaders) => {
      const status = Number(responseHeaders[HTTP2_HEADER_STATUS]);
      ok = status < 500 && !FAILED_STATUSES.has(String(responseHeaders['grpc-status']));
      if (responseHeaders['grpc-status'] !== undefined) {
        // A trailers-only response (an error before any message): headers end the stream.
        downstream.respond({ ...responseHeaders }, { endStream: true });
        return;
      }
      downstream.respond({ ...responseHeaders }, { waitForTrailers: true });
      downstream.once('wantTrailers', () => downstream.sendTrailers(trailers));
      upstream.pipe(downstream);
    });
    upstream.on('trailers', (received) => {
      if (FAILED_STATUSES.has(String(received['grpc-status']))) ok = false;
      trailers = { ...received };
    });
    upstream.on('end', () => finish(false));
    upstream.on('error', (error) => {
      if (!downstream.headersSent) {
        downstream.respond(
          {
            [HTTP2_HEADER_STATUS]: 200,
            'content-type': 'application/grpc',
            'grpc-status': '14',
            'grpc-message': encodeURIComponent(`aimesh: ${name}: ${error.message}`),
          },
          { endStream: true },
        );
      } else {
        downstream.close(constants.NGHTTP2_INTERNAL_ERROR);
      }
      finish(true);
    });
    downstream.on('close', () => {
      if (!upstream.closed) upstream.close(constants.NGHTTP2_CANCEL);
    });
    downstream.pipe(upstream);
  });
}
