/**
 * The one place where the sidecar's errors become answers. Every error is an AimeshError
 * (lib/errors); to an HTTP caller it is JSON from `errorBody` with the code's status and
 * the header `x-aimesh-error: true`, so apps can tell the sidecar's answers from their
 * upstreams'; to a gRPC caller it is `grpc-status` and `grpc-message` trailers, since gRPC
 * clients read the outcome there and not from the HTTP status.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { asAimeshError, errorBody, openAiErrorBody, type AimeshError } from '../lib/errors/index.js';
import { AI_PREFIX } from './ai/index.js';

/** Answers `req` with `error`; a response already under way can only be cut. */
export function sendError(res: ServerResponse, error: unknown): void {
  const failure = asAimeshError(error);
  if (res.headersSent) {
    res.destroy(failure);
    return;
  }
  if (isGrpc(res.req)) {
    res.writeHead(200, { 'content-type': 'application/grpc', 'x-aimesh-error': 'true' });
    res.addTrailers(grpcTrailers(failure));
    res.end();
    return;
  }
  res.writeHead(httpStatus(failure), { 'content-type': 'application/json', 'x-aimesh-error': 'true' });
  // The AI route speaks OpenAI's API, errors included; every other route the one error body.
  const body = res.req?.url?.startsWith(AI_PREFIX) ? openAiErrorBody(failure) : errorBody(failure);
  res.end(`${JSON.stringify(body)}\n`);
}

/**
 * Answers an HTTP/1.1 upgrade request, which has a socket and no response object, with
 * `error` in the same form, and closes the connection.
 */
export function sendErrorOnSocket(socket: Duplex, error: unknown): void {
  const failure = asAimeshError(error);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const status = httpStatus(failure);
  const body = `${JSON.stringify(errorBody(failure))}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n` +
      `x-aimesh-error: true\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** What a grpc-js server callback takes for an error. */
export function grpcStatusOf(error: unknown): { code: number; details: string } {
  const failure = asAimeshError(error);
  return { code: failure.grpcStatus, details: failure.message };
}

export function grpcTrailers(error: AimeshError): Record<string, string> {
  return { 'grpc-status': String(error.grpcStatus), 'grpc-message': encodeURIComponent(error.message) };
}

export function isGrpc(req: IncomingMessage | undefined): boolean {
  return String(req?.headers['content-type'] ?? '').startsWith('application/grpc');
}

/**
 * The code's status, except that an upstream's own 5xx that no fallback could replace
 * keeps its status (in `details.status`): the app sees what the upstream said, marked as
 * relayed by the sidecar.
 */
function httpStatus(error: AimeshError): number {
  const relayed = error.details.status;
  return error.code === 'upstream.failed' && typeof relayed === 'number' && relayed >= 500 && relayed <= 599
    ? relayed
    : error.httpStatus;
}
