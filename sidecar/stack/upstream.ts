/**
 * One upstream and the one composition of layers every call to it goes through, whoever
 * makes the call (the proxy for the app, the saga engine in-process, the AI route for a
 * provider channel):
 *
 *   trace → deadline → retry (budgeted, body buffered up to a limit) →
 *   balancer over usable endpoints (outlier ejection, breaker) → endpoint (transport)
 *
 * Discovery feeds the endpoints in; the decisions are pure (sidecar/routing); the only I/O
 * is the transport. Failures are AimeshErrors; an answer from the upstream, even a 5xx
 * that was not retried, is returned as an answer.
 */
import { context, propagation, SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api';
import { Readable } from 'node:stream';
import { AimeshError, asAimeshError, classifyNetworkError, describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import { NO_ENDPOINT, type SidecarMetrics } from '../admin/index.js';
import type { CompiledUpstream } from '../config/compile.js';
import type { DiscoveredEndpoint } from '../discovery/index.js';
import type { Failure } from '../routing/index.js';
import { ResponseCache } from './cache.js';
import { endToEnd } from './headers.js';
import { createRoutingPolicy, type RoutingPolicy } from './policy.js';
import { propagate } from './trace.js';
import {
  CallSignal,
  type Headers,
  type StackEndpoint,
  type StackRequest,
  type StackResponse,
  type Transport,
  type TransportResponse,
  type Upgraded,
  type UpgradeRequest,
} from './types.js';

/** Spans are made only when tracing is configured: the hot path stays free of them otherwise. */
/** Longest a call waits for discovery's first answer (Consul's first query is one round trip). */
const FIRST_DISCOVERY_WAIT_MS = 5000;

export interface StackTracing {
  tracer: Tracer;
  enabled: boolean;
}

export interface UpstreamDeps {
  metrics: SidecarMetrics;
  log: Logger;
  tracing: StackTracing;
  transport: Transport;
  /** https for provider channels; http otherwise. */
  scheme?: string;
  random?: () => number;
}

export class Upstream {
  readonly policy: RoutingPolicy;
  readonly cache = new ResponseCache();
  private readonly metrics: SidecarMetrics;
  /** Calls whose exchange is not over yet; a retired upstream closes when they are done. */
  private active = 0;
  private retired = false;
  /** Whether discovery has answered at least once; until then calls wait for it. */
  private discovered = false;
  private readonly firstAnswer = Promise.withResolvers<void>();

  constructor(
    readonly config: CompiledUpstream,
    private readonly deps: UpstreamDeps,
  ) {
    const { metrics } = deps;
    const name = config.name;
    this.metrics = metrics;
    this.policy = createRoutingPolicy(
      config,
      {
        onBreakerChange: (endpoint, state) =>
          metrics.perEndpoint.breakerChanged(name, endpoint, { closed: 0, 'half-open': 1, open: 2 }[state]),
        onEjection: (endpoint) => metrics.perEndpoint.ejected(name, endpoint),
        onRetryDenied: () => metrics.retriesDenied.inc({ upstream: name }),
      },
      deps.random,
    );
  }

  setEndpoints(endpoints: readonly DiscoveredEndpoint[], stale: boolean): void {
    const port = this.config.port;
    this.policy.setEndpoints(port ? endpoints.map((e) => ({ ...e, port })) : endpoints, this.deps.scheme);
    if (!this.discovered) {
      this.discovered = true;
      this.firstAnswer.resolve();
    }
    this.deps.transport.retain(new Set(this.policy.endpoints().map((e) => e.origin)));
    this.metrics.perEndpoint.setEndpoints(
      this.config.name,
      this.policy.endpoints().map((e) => e.id),
    );
    this.metrics.endpoints.set({ upstream: this.config.name }, endpoints.length);
    this.metrics.discoveryStale.set({ upstream: this.config.name }, stale ? 1 : 0);
  }

  /** One call through every layer; resolves at the response headers. */
  async call(request: StackRequest): Promise<StackResponse> {
    const startedAt = Date.now();
    this.active++;
    const trace = this.traceLayer(request);
    const signal = request.signal ?? new CallSignal();
    const deadline = this.deadlineLayer(signal, request.timeoutMs);
    try {
      const response = await this.retryLayer(request, trace.headers, signal, deadline.at);
      this.metrics.perEndpoint.countRequest(this.config.name, response.endpoint, String(response.status));
      response.body.once('close', () => {
        deadline.clear();
        trace.end(response.status);
        this.done();
      });
      response.requestId = trace.headers['x-request-id'] as string;
      return response;
    } catch (error) {
      deadline.clear();
      trace.end(0);
      this.done();
      this.metrics.perEndpoint.countRequest(this.config.name, NO_ENDPOINT, '0');
      throw asAimeshError(error);
    } finally {
      this.metrics.duration.observe({ upstream: this.config.name }, (Date.now() - startedAt) / 1000);
    }
  }

  /**
   * An HTTP/1.1 upgrade (websocket): discovery, balancer, breaker and trace context as for
   * a call, to one endpoint and never retried (the endpoint may have started a session).
   * The deadline bounds the handshake only; what the upgraded connection carries is
   * bounded by the edge's idle timeout, as with any long-lived stream.
   */
  async upgrade(request: UpgradeRequest): Promise<Upgraded> {
    const name = this.config.name;
    const transport = this.deps.transport;
    if (!transport.upgrade)
      throw new AimeshError('input.unsupported', `${name} speaks gRPC: it takes no HTTP/1.1 upgrade`, {
        details: { upstream: name },
      });
    this.active++;
    const trace = this.traceLayer({ ...request, headers: request.headers });
    const signal = request.signal ?? new CallSignal();
    const deadline = this.deadlineLayer(signal);
    try {
      if (!this.discovered) await this.discoveryLayer(signal, deadline.at);
      if (signal.isAborted) throw signal.reason as AimeshError;
      const endpoint = this.policy.pick(request.hashKey, new Set(), Date.now());
      if (!endpoint)
        throw new AimeshError(
          'upstream.no-endpoint',
          `${name}: no healthy endpoint (none known, or all ejected or open)`,
          {
            details: { upstream: name },
          },
        );
      const started = Date.now();
      this.policy.started(endpoint.id);
      let upgraded: Omit<Upgraded, 'endpoint'>;
      try {
        upgraded = await transport.upgrade(endpoint, { ...request, headers: trace.headers, signal });
      } catch (error) {
        const latencyMs = Date.now() - started;
        this.policy.finished(endpoint.id, { ok: cancelledByCaller(signal), latencyMs }, Date.now());
        if (signal.isAborted) throw signal.reason as AimeshError;
        throw new AimeshError(
          'upstream.failed',
          `${name}: ${endpoint.id} did not switch protocols: ${describe(error)}`,
          { cause: error, details: { upstream: name, endpoint: endpoint.id } },
        );
      }
      this.policy.finished(
        endpoint.id,
        { ok: true, status: 101, latencyMs: Date.now() - started },
        Date.now(),
      );
      this.metrics.requests.inc({ upstream: name, endpoint: endpoint.id, code: '101' });
      trace.end(101);
      upgraded.socket.once('close', () => this.done());
      return { ...upgraded, endpoint: endpoint.id };
    } catch (error) {
      trace.end(0);
      this.done();
      this.metrics.requests.inc({ upstream: name, endpoint: 'none', code: '0' });
      throw asAimeshError(error);
    } finally {
      deadline.clear();
    }
  }

  async close(): Promise<void> {
    await this.deps.transport.close();
  }

  /** Left out of a reloaded config: closes once the calls that started on it are over. */
  retire(): void {
    this.retired = true;
    if (this.active === 0) this.closeInBackground();
  }

  /** The upstream left the config: its per-endpoint series and gauges go with it. */
  forgetSeries(): void {
    const upstream = this.config.name;
    this.metrics.perEndpoint.forgetUpstream(upstream);
    this.metrics.endpoints.remove({ upstream });
    this.metrics.discoveryStale.remove({ upstream });
  }

  private done(): void {
    if (--this.active === 0 && this.retired) this.closeInBackground();
  }

  private closeInBackground(): void {
    this.close().catch((error: unknown) =>
      this.deps.log.warn('closing connections of a retired upstream failed', {
        upstream: this.config.name,
        error,
      }),
    );
  }

  /** Trace context for the upstream: this hop's span id, the caller's trace, a request id. */
  private traceLayer(request: StackRequest): { headers: Headers; end: (status: number) => void } {
    const incoming = request.headers;
    const propagated = propagate({
      traceparent: first(incoming.traceparent),
      tracestate: first(incoming.tracestate),
      requestId: first(incoming['x-request-id']),
    });
    const headers: Headers = { ...incoming, ...propagated };
    if (!this.deps.tracing.enabled) return { headers, end: () => undefined };
    const span = this.deps.tracing.tracer.startSpan(
      `${request.method} ${this.config.name}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'http.request.method': request.method,
          'server.address': this.config.name,
          'url.path': request.path.split('?')[0] ?? '/',
          'aimesh.request_id': propagated['x-request-id'],
        },
      },
      propagation.extract(context.active(), incoming),
    );
    const spanContext = span.spanContext();
    // The upstream sees this hop's span as its parent.
    headers.traceparent = `00-${spanContext.traceId}-${spanContext.spanId}-0${spanContext.traceFlags}`;
    let ended = false;
    return {
      headers,
      end: (status) => {
        if (ended) return;
        ended = true;
        span.setAttribute('http.response.status_code', status);
        if (status === 0 || status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      },
    };
  }

  /**
   * The upstream's timeout bounds the whole exchange: a try waiting for headers, the
   * waits between retries, and a response body that stalls after its headers are all cut
   * when it passes.
   */
  private deadlineLayer(signal: CallSignal, callerTimeoutMs?: number): { at: number; clear: () => void } {
    const timeoutMs = Math.min(this.config.timeoutMs ?? Infinity, callerTimeoutMs ?? Infinity);
    if (timeoutMs === Infinity) return { at: Infinity, clear: () => undefined };
    const timer = setTimeout(
      () =>
        signal.abort(
          new AimeshError(
            'upstream.timeout',
            `${this.config.name}: no complete answer within ${timeoutMs} ms`,
            {
              details: { upstream: this.config.name },
            },
          ),
        ),
      timeoutMs,
    );
    return { at: Date.now() + timeoutMs, clear: () => clearTimeout(timer) };
  }

  /**
   * Tries endpoints until one answers well, a failure may not be retried, the budget is
   * spent, or the deadline is near. A body is resent only when it was buffered whole.
   */
  private async retryLayer(
    request: StackRequest,
    headers: Headers,
    signal: CallSignal,
    deadlineAt: number,
  ): Promise<StackResponse> {
    if (!this.discovered) await this.discoveryLayer(signal, deadlineAt);
    // Most requests have no body: no buffering step, and no await, for them.
    const { body, replayable } =
      request.body === undefined || Buffer.isBuffer(request.body)
        ? { body: request.body, replayable: request.body }
        : await this.bufferLayer(request.body, request.headers, signal);
    const tried = new Set<string>();
    this.policy.deposit(Date.now());
    let lastFailure: AimeshError | undefined;
    for (let attempt = 1; ; attempt++) {
      if (signal.isAborted) throw signal.reason as AimeshError;
      const endpoint = this.policy.pick(request.hashKey, tried, Date.now());
      if (!endpoint) {
        throw (
          lastFailure ??
          new AimeshError(
            'upstream.no-endpoint',
            `${this.config.name}: no healthy endpoint (none known, or all ejected or open)`,
            { details: { upstream: this.config.name } },
          )
        );
      }
      tried.add(endpoint.id);
      const outcome = await this.endpointLayer(
        endpoint,
        request,
        headers,
        replayable ?? body ?? null,
        signal,
        deadlineAt,
      );
      if ('response' in outcome && outcome.ok) return withAttempts(outcome.response, endpoint, attempt);
      if (signal.isAborted) {
        outcome.response?.body.destroy();
        throw signal.reason as AimeshError;
      }
      const decision =
        body !== undefined && replayable === undefined
          ? ({ retry: false, reason: 'body not buffered whole' } as const)
          : this.policy.retryDecision({
              attempt,
              method: request.method,
              hasIdempotencyKey: first(request.headers['idempotency-key']) !== undefined,
              failure: outcome.failure,
              nowMs: Date.now(),
            });
      const retry = decision.retry && Date.now() + decision.delayMs < deadlineAt;
      // The upstream answered: that answer is the outcome, not an error of ours.
      if (!retry && outcome.response) return withAttempts(outcome.response, endpoint, attempt);
      if (!retry) throw outcome.error as AimeshError;
      lastFailure = outcome.error;
      outcome.response?.body.resume();
      this.metrics.retries.inc({ upstream: this.config.name });
      if (decision.retry && decision.delayMs > 0) await sleep(decision.delayMs);
    }
  }

  /**
   * A call made before discovery's first answer (a sidecar just started, a saga engine
   * resuming executions at once) waits for that answer, within its deadline, instead of
   * failing for want of endpoints nobody has looked up yet.
   */
  private async discoveryLayer(signal: CallSignal, deadlineAt: number): Promise<void> {
    const waitMs = Math.min(FIRST_DISCOVERY_WAIT_MS, deadlineAt - Date.now());
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    await Promise.race([
      this.firstAnswer.promise,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, waitMs);
        onAbort = resolve;
        signal.once('abort', onAbort);
      }),
    ]);
    clearTimeout(timer);
    if (onAbort) signal.off('abort', onAbort);
  }

  /** Reads a streamed body up to the retry limit: whole means resendable, past it means sent once. */
  private async bufferLayer(
    body: Readable,
    headers: Headers,
    signal: CallSignal,
  ): Promise<{ body: Readable | Buffer; replayable?: Buffer }> {
    const limit = this.config.retryBufferBytes;
    const declared = Number(first(headers['content-length']));
    if (!this.config.retry || this.config.protocol === 'grpc' || declared > limit) return { body };
    // A caller whose upload stalls is bounded by the deadline too.
    const onAbort = () => body.destroy(signal.reason);
    signal.once('abort', onAbort);
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      // Leaving the loop early must not destroy the body: the rest is still to be sent.
      for await (const chunk of body.iterator({ destroyOnReturn: false })) {
        const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
        chunks.push(buffer);
        size += buffer.length;
        if (size > limit) return { body: Readable.from(concatThenRest(chunks, body)) };
      }
    } finally {
      signal.off('abort', onAbort);
    }
    return { body: Buffer.concat(chunks), replayable: Buffer.concat(chunks) };
  }

  /** One try against one endpoint, with the endpoint's load, breaker and outlier bookkeeping. */
  private async endpointLayer(
    endpoint: StackEndpoint,
    request: StackRequest,
    headers: Headers,
    body: Readable | Buffer | null,
    signal: CallSignal,
    deadlineAt: number,
  ): Promise<
    | { ok: true; response: TransportResponse }
    | { ok: false; failure: Failure; response: TransportResponse; error?: undefined }
    | { ok: false; failure: Failure; error: AimeshError; response?: undefined }
  > {
    const started = Date.now();
    const perTry = Math.min(this.config.perTryTimeoutMs ?? Infinity, deadlineAt - started);
    this.policy.started(endpoint.id);
    let response: TransportResponse;
    try {
      response = await this.deps.transport.send(endpoint, {
        method: request.method,
        path: request.path,
        headers,
        body,
        signal,
        ...(Number.isFinite(perTry) ? { headersTimeoutMs: perTry } : {}),
      });
    } catch (error) {
      this.policy.finished(
        endpoint.id,
        { ok: cancelledByCaller(signal), latencyMs: Date.now() - started },
        Date.now(),
      );
      const network = classifyNetworkError(error);
      const failure = asAimeshError(signal.isAborted ? signal.reason : error);
      return {
        ok: false,
        failure: { error: network === 'dns' || network === undefined ? 'connect-failure' : network },
        error:
          failure.code === 'internal' || signal.isAborted
            ? failure
            : new AimeshError(failure.code, `${this.config.name}: ${endpoint.id}: ${describe(error)}`, {
                cause: error,
                details: { upstream: this.config.name, endpoint: endpoint.id },
              }),
      };
    }
    const latencyMs = Date.now() - started;
    if (response.settled) {
      void response.settled.then((ok) =>
        this.policy.finished(
          endpoint.id,
          { ok: ok || cancelledByCaller(signal), status: response.status, latencyMs },
          Date.now(),
        ),
      );
    } else {
      this.policy.finished(
        endpoint.id,
        { ok: response.status < 500, status: response.status, latencyMs },
        Date.now(),
      );
    }
    if (response.status < 500) return { ok: true, response };
    return { ok: false, failure: { status: response.status }, response };
  }
}

/** A caller that left says nothing about the endpoint: its try is not counted as a failure. */
function cancelledByCaller(signal: CallSignal): boolean {
  return signal.isAborted && signal.reason?.details.cancelled === true;
}

function withAttempts(response: TransportResponse, endpoint: StackEndpoint, attempts: number): StackResponse {
  return {
    status: response.status,
    headers: endToEnd(response.headers),
    body: response.body,
    endpoint: endpoint.id,
    attempts,
    // Set by the call, which knows the trace headers.
    requestId: '',
  };
}

async function* concatThenRest(head: Buffer[], rest: Readable): AsyncGenerator<Buffer> {
  yield Buffer.concat(head);
  for await (const chunk of rest) yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
