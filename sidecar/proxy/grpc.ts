/**
 * gRPC through the sidecar: the app's h2c stream goes through the upstream's stack as one
 * HTTP/2 stream to an endpoint, headers, messages and trailers (grpc-status lives in
 * trailers) included. The upstream's timeout, or the caller's grpc-timeout when shorter,
 * bounds the call. Streams are not retried: a gRPC call may be a long stream that cannot
 * be replayed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants, type Http2ServerRequest } from 'node:http2';
import type { Readable } from 'node:stream';
import { AimeshError, asAimeshError } from '../../lib/errors/index.js';
import { grpcTrailers } from '../error-response.js';
import { endToEnd, type CallSignal, type Upstream } from '../stack/index.js';

const TRAILER_ONLY = new Set(['grpc-status', 'grpc-message', 'grpc-status-details-bin']);
/** grpc-timeout units (gRPC over HTTP/2 spec) in milliseconds. */
const TIMEOUT_UNITS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};

export async function forwardGrpc(
  upstream: Upstream,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  signal: CallSignal,
): Promise<void> {
  const name = upstream.config.name;
  if (req.httpVersionMajor !== 2)
    throw new AimeshError('input.invalid', `${name} speaks gRPC: send HTTP/2 (h2c) to the sidecar`);
  const timeoutMs = grpcTimeoutMs(req.headers['grpc-timeout']);
  const response = await upstream.call({
    method: 'POST',
    path,
    // TE is hop-by-hop, but gRPC requires `te: trailers` on every hop.
    headers: { ...endToEnd(req.headers), te: 'trailers', host: name },
    body: req as Readable,
    signal,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
  // The compatibility response sends its trailers when the stream ends; gRPC's status
  // travels there, so headers go out first and everything with a grpc- prefix after.
  const headers: Record<string, string | string[]> = {};
  const trailersOnly: Record<string, string> = {};
  for (const [key, value] of Object.entries(response.headers)) {
    if (TRAILER_ONLY.has(key)) trailersOnly[key] = String(value);
    else headers[key] = value;
  }
  res.writeHead(response.status, headers);
  if (Object.keys(trailersOnly).length > 0) res.addTrailers(trailersOnly);
  const body = response.body;
  body.on('trailers', (trailers: Record<string, unknown>) => res.addTrailers(withoutPseudo(trailers)));
  await new Promise<void>((resolve) => {
    body.once('error', (error) => {
      const failure = asAimeshError(error);
      // A deadline or cancellation has a status to tell; anything else resets the stream.
      if (failure.code === 'upstream.timeout' && !res.writableEnded) {
        res.addTrailers(grpcTrailers(failure));
        res.end();
      } else {
        (req as unknown as Http2ServerRequest).stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      }
      resolve();
    });
    res.once('close', () => {
      if (!body.readableEnded) body.destroy();
      resolve();
    });
    body.pipe(res);
  });
}

function grpcTimeoutMs(value: string | string[] | undefined): number | undefined {
  const match = typeof value === 'string' ? /^(\d{1,8})([HMSmun])$/.exec(value) : null;
  if (!match) return undefined;
  return Math.max(1, Number(match[1]) * (TIMEOUT_UNITS[match[2] as string] as number));
}

function withoutPseudo(headers: Record<string, unknown>): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (!key.startsWith(':') && value !== undefined)
      result[key] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return result;
}
