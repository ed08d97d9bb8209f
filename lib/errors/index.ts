/**
 * The one error model. Every error aimesh makes on purpose is an `AimeshError` with a
 * stable `code` that callers, tests and dashboards match on (never the message), and
 * every code has one HTTP status and one gRPC status, so errors are turned into
 * responses in exactly one way. Network failures are named by one classifier.
 */

/** Stable error codes; the part before the dot says which layer raised it. */
export const ERROR_CODES = {
  // Bad input from a user or a caller: fix the input, retrying will not help.
  'input.invalid': { http: 400, grpc: 3 /* INVALID_ARGUMENT */ },
  'input.too-large': { http: 413, grpc: 8 /* RESOURCE_EXHAUSTED */ },
  'input.unauthenticated': { http: 401, grpc: 16 /* UNAUTHENTICATED */ },
  'input.forbidden': { http: 403, grpc: 7 /* PERMISSION_DENIED */ },
  'input.not-found': { http: 404, grpc: 5 /* NOT_FOUND */ },
  'input.conflict': { http: 409, grpc: 6 /* ALREADY_EXISTS */ },
  // A protocol feature the target does not take (an upgrade to a gRPC upstream or the AI route).
  'input.unsupported': { http: 501, grpc: 12 /* UNIMPLEMENTED */ },
  // Routing: the sidecar could not get an answer from an upstream.
  'upstream.unknown': { http: 404, grpc: 5 /* NOT_FOUND */ },
  'upstream.no-endpoint': { http: 503, grpc: 14 /* UNAVAILABLE */ },
  'upstream.unavailable': { http: 503, grpc: 14 /* UNAVAILABLE */ },
  'upstream.timeout': { http: 504, grpc: 4 /* DEADLINE_EXCEEDED */ },
  'upstream.failed': { http: 502, grpc: 14 /* UNAVAILABLE */ },
  'upstream.rate-limited': { http: 429, grpc: 8 /* RESOURCE_EXHAUSTED */ },
  // State: a concurrent writer won, or a store refused.
  'state.conflict': { http: 409, grpc: 10 /* ABORTED */ },
  'state.unavailable': { http: 503, grpc: 14 /* UNAVAILABLE */ },
  // A dependency (API server, Consul) answered with an error.
  'dependency.failed': { http: 502, grpc: 14 /* UNAVAILABLE */ },
  // Not ready yet, or shutting down.
  'process.unavailable': { http: 503, grpc: 14 /* UNAVAILABLE */ },
  // A bug: should not happen.
  internal: { http: 500, grpc: 13 /* INTERNAL */ },
} as const satisfies Record<string, { http: number; grpc: number }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface AimeshErrorOptions {
  /** What led to it; logged, never shown to remote callers. */
  cause?: unknown;
  /** Structured context for logs and for the response body. */
  details?: Record<string, unknown>;
  /**
   * Set when retrying the same thing cannot succeed (bad input, a refused spec): a
   * controller gives up on it instead of requeueing with backoff.
   */
  terminal?: boolean;
}

export class AimeshError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly terminal: boolean;

  constructor(code: ErrorCode, message: string, options: AimeshErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AimeshError';
    this.code = code;
    this.details = options.details ?? {};
    this.terminal = options.terminal ?? code.startsWith('input.');
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  get grpcStatus(): number {
    return ERROR_CODES[this.code].grpc;
  }
}

/** Anything thrown, as an AimeshError: ours as they are, anything else as `internal`. */
export function asAimeshError(error: unknown): AimeshError {
  if (error instanceof AimeshError) return error;
  const network = classifyNetworkError(error);
  if (network) return new AimeshError(NETWORK_CODES[network], describe(error), { cause: error });
  return new AimeshError('internal', describe(error), { cause: error });
}

/** The JSON body every aimesh-made HTTP error carries. */
export interface ErrorBody {
  error: string;
  code: ErrorCode;
  [detail: string]: unknown;
}

export function errorBody(error: AimeshError): ErrorBody {
  return { ...error.details, error: error.message, code: error.code };
}

/**
 * The same error in the shape OpenAI's API uses, `{"error": {"message", "type", "code",
 * "param"}}`, for the AI route: apps reach it with OpenAI client libraries, which read the
 * message and type from there. `code` is aimesh's stable code; `type` the OpenAI class.
 */
export function openAiErrorBody(error: AimeshError): { error: Record<string, unknown> } {
  return {
    error: {
      ...error.details,
      message: error.message,
      type: openAiType(error.code),
      code: error.code,
      param: null,
    },
  };
}

function openAiType(code: ErrorCode): string {
  if (code === 'input.unauthenticated') return 'authentication_error';
  if (code === 'input.forbidden') return 'permission_error';
  if (code === 'input.not-found' || code === 'upstream.unknown') return 'not_found_error';
  if (code === 'upstream.rate-limited') return 'rate_limit_error';
  if (code.startsWith('input.')) return 'invalid_request_error';
  return 'server_error';
}

/** What went wrong on the network, in the terms retry and outlier policies use. */
export type NetworkFailure = 'connect-failure' | 'timeout' | 'reset' | 'dns';

const NETWORK_CODES: Record<NetworkFailure, ErrorCode> = {
  'connect-failure': 'upstream.unavailable',
  dns: 'upstream.unavailable',
  timeout: 'upstream.timeout',
  reset: 'upstream.failed',
};

/** Raised by lib/http-client when a connection is not established in time. */
export const CONNECT_TIMEOUT_CODE = 'ERR_CONNECT_TIMEOUT';
/** Raised by lib/http-client when response headers do not come in time. */
export const HEADERS_TIMEOUT_CODE = 'ERR_HEADERS_TIMEOUT';
/** Raised by lib/http-client for an exchange asked of a client already closed. */
export const CLIENT_CLOSED_CODE = 'ERR_CLIENT_CLOSED';

const CONNECT_CODES = new Set([
  CONNECT_TIMEOUT_CODE,
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CONNECT',
]);
const TIMEOUT_CODES = new Set([
  HEADERS_TIMEOUT_CODE,
  'ETIMEDOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME']);
const RESET_CODES = new Set([
  CLIENT_CLOSED_CODE,
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_HTTP2_STREAM_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_GOAWAY_SESSION',
  'ERR_HTTP2_STREAM_CANCEL',
  'HPE_INVALID_CONSTANT',
]);

/**
 * Names a network failure, looking through `cause` chains (undici and fetch wrap the
 * socket error), or undefined when the error is not a network failure. A connect timeout
 * is a connect failure (nothing reached the peer, safe to try elsewhere), not a timeout.
 */
export function classifyNetworkError(error: unknown): NetworkFailure | undefined {
  for (let e = error as ErrorLike | undefined, depth = 0; e && depth < 5; e = e.cause, depth++) {
    const code = typeof e.code === 'string' ? e.code : '';
    if (CONNECT_CODES.has(code)) return 'connect-failure';
    if (DNS_CODES.has(code)) return 'dns';
    if (TIMEOUT_CODES.has(code) || e.name === 'TimeoutError') return 'timeout';
    if (RESET_CODES.has(code)) return 'reset';
    if (e.name === 'AbortError') return typeof e.cause === 'object' ? 'timeout' : 'reset';
  }
  return undefined;
}

interface ErrorLike {
  name?: string;
  code?: unknown;
  message?: string;
  cause?: ErrorLike;
}

/** A one-line description of anything thrown, for logs and messages. */
export function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
