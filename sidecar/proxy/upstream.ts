/**
 * One upstream's request path, composed in one place from small layers:
 * discovery → balancer → outlier ejection / breaker → retry (budgeted) → timeout → endpoint,
 * with a fallback when every try failed. The decisions are pure (sidecar/routing); this
 * module does the I/O: connections, streaming, timers.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import type { UpstreamConfig } from './config.js';
import type { ConnectionPools } from './pools.js';

/** What the pure routing layer decides for one upstream (see sidecar/routing). */
export interface RoutingPolicy {
  /** An endpoint to try, avoiding `exclude` when others are available; undefined when none may be used. */
  pick(hashKey: string | undefined, exclude: ReadonlySet<string>, nowMs: number): PolicyEndpoint | undefined;
  started(endpointId: string): void;
  finished(
    endpointId: string,
    outcome: { ok: boolean; status?: number; latencyMs: number },
    nowMs: number,
  ): void;
  /** Counts a request toward the retry budget. */
  deposit(nowMs: number): void;
  retryDecision(input: {
    attempt: number;
    method: string;
    status?: number;
    error?: 'connect-failure' | 'reset' | 'timeout';
    nowMs: number;
  }): { retry: true; delayMs: number } | { retry: false; reason: string };
}

export interface PolicyEndpoint {
  id: string;
  address: string;
  port: number;
}

export interface OutboundRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  /** The body as it arrives; `undefined` for requests without one. */
  body?: Readable;
  hashKey?: string;
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable;
  endpoint?: string;
  attempts: number;
}

export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly attempts: number,
  ) {
    super(message);
  }
}

/** Bodies up to this size are kept so a retry can resend them; larger ones stream once. */
const REPLAYABLE_BODY_BYTES = 64 * 1024;

export async function callUpstream(
  config: UpstreamConfig,
  policy: RoutingPolicy,
  pools: ConnectionPools,
  request: OutboundRequest,
  onRetry: () => void,
): Promise<UpstreamResponse> {
  const deadline = config.timeoutMs ? Date.now() + config.timeoutMs : Infinity;
  const { body, replayable } = await replayableBody(request.body, config.retriesEnabled);
  const tried = new Set<string>();
  policy.deposit(Date.now());
  let lastFailure = 'no endpoint available';
  for (let attempt = 0; ; attempt++) {
    const endpoint = policy.pick(request.hashKey, tried, Date.now());
    if (!endpoint) {
      throw new UpstreamError(
        `${config.name}: no healthy endpoint (${tried.size > 0 ? lastFailure : 'none known, or all ejected or open'})`,
        503,
        attempt,
      );
    }
    tried.add(endpoint.id);
    const remaining = deadline - Date.now();
    const tryTimeout = Math.min(config.perTryTimeoutMs ?? Infinity, remaining);
    const started = Date.now();
    policy.started(endpoint.id);
    let outcome: {
      status?: number;
      error?: 'connect-failure' | 'reset' | 'timeout';
      response?: UpstreamResponse;
    };
    try {
      const response = await pools.pool(endpoint.address, endpoint.port).request({
        method: request.method as 'GET',
        path: request.path,
        headers: request.headers,
        body: replayable ? Readable.from(replayable.length > 0 ? [replayable] : []) : (body ?? null),
        // undici's own timer, not an AbortSignal per try: it is much cheaper on the hot path.
        ...(Number.isFinite(tryTimeout) ? { headersTimeout: Math.max(1, tryTimeout) } : {}),
      });
      outcome = {
        status: response.statusCode,
        response: {
          status: response.statusCode,
          headers: response.headers as IncomingHttpHeaders,
          body: response.body,
          endpoint: endpoint.id,
          attempts: attempt + 1,
        },
      };
    } catch (error) {
      outcome = { error: classify(error) };
      lastFailure = `${endpoint.id}: ${(error as Error).message}`;
    }
    const latencyMs = Date.now() - started;
    const ok = outcome.status !== undefined && outcome.status < 500;
    policy.finished(endpoint.id, { ok, status: outcome.status, latencyMs }, Date.now());
    if (ok && outcome.response) return outcome.response;

    const canResend = body === undefined || replayable !== undefined;
    const decision = canResend
      ? policy.retryDecision({
          attempt: attempt + 1,
          method: request.method,
          status: outcome.status,
          error: outcome.error,
          nowMs: Date.now(),
        })
      : ({ retry: false, reason: 'request body too large to resend' } as const);
    if (!decision.retry || Date.now() + decision.delayMs >= deadline) {
      if (outcome.response) return outcome.response;
      throw new UpstreamError(
        `${config.name}: ${lastFailure}`,
        outcome.error === 'timeout' ? 504 : 503,
        attempt + 1,
      );
    }
    if (outcome.response) {
      lastFailure = `${endpoint.id}: status ${outcome.status}`;
      outcome.response.body.resume();
    }
    onRetry();
    await new Promise((resolve) => setTimeout(resolve, decision.delayMs));
  }
}

async function replayableBody(
  body: Readable | undefined,
  retriesEnabled: boolean,
): Promise<{ body?: Readable; replayable?: Buffer }> {
  // A replayable body is sent from the buffer on every try; a streamed one only once.
  if (!body) return {};
  if (!retriesEnabled) return { body };
  // Read up to the limit; if the body is larger, stream what was read followed by the rest.
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    chunks.push(buffer);
    size += buffer.length;
    if (size > REPLAYABLE_BODY_BYTES) {
      return { body: Readable.from(concatThenRest(chunks, body)) };
    }
  }
  return { replayable: Buffer.concat(chunks) };
}

async function* concatThenRest(head: Buffer[], rest: Readable): AsyncGenerator<Buffer> {
  yield Buffer.concat(head);
  for await (const chunk of rest) yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
}

function classify(error: unknown): 'connect-failure' | 'reset' | 'timeout' {
  const e = error as { name?: string; code?: string; cause?: { code?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError' || e.code === 'UND_ERR_HEADERS_TIMEOUT')
    return 'timeout';
  const code = e.code ?? e.cause?.code ?? '';
  if (['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENOTFOUND'].includes(code))
    return 'connect-failure';
  return 'reset';
}
