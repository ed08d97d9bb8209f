import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type SidecarMetrics = ReturnType<typeof sidecarMetrics>;

/** A registry's metrics as prom-client JSON: what crosses from the saga thread. */
export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/**
 * One exposition of `registry` and other threads' registries: series of the same name and
 * labels are merged by their metric's aggregator (counters and histograms sum; the gauges
 * both threads set keep the larger value), so each series shows once.
 */
export async function aggregatedMetrics(registry: Registry, others: MetricsJson[]): Promise<string> {
  if (others.length === 0) return registry.metrics();
  const shared = new Set(others.flat().map((m) => m.name));
  // A metric only this registry has passes as it is: its aggregator is for merging copies of
  // it, and some of prom-client's process metrics (process_start_time_seconds) omit themselves.
  const own = (await registry.getMetricsAsJSON()).map((m) =>
    shared.has(m.name) ? m : { ...m, aggregator: 'first' as const },
  );
  return AggregatorRegistry.aggregate([own, ...others]).metrics();
}

/**
 * The sidecar's Prometheus metrics, in their own registry (one sidecar per process). The saga
 * thread has a registry of its own, aggregated with the main one into one exposition: it
 * leaves out the process metrics (the main thread reports the process once), and the gauges
 * both threads set for the same upstream keep the larger value rather than a sum.
 */
export function sidecarMetrics(options: { processMetrics?: boolean } = {}) {
  const metrics = registeredMetrics(options.processMetrics ?? true);
  return { ...metrics, perEndpoint: new EndpointSeries(metrics) };
}

function registeredMetrics(processMetrics: boolean) {
  const registry = new Registry();
  if (processMetrics) collectDefaultMetrics({ register: registry, prefix: 'aimesh_sidecar_' });
  return {
    registry,
    requests: new Counter({
      name: 'aimesh_sidecar_requests_total',
      help: 'Outbound requests by upstream, endpoint and response code (0 when no response).',
      labelNames: ['upstream', 'endpoint', 'code'] as const,
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'aimesh_sidecar_request_duration_seconds',
      help: 'Outbound request latency until response headers, retries included.',
      labelNames: ['upstream'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    edgeClosed: new Counter({
      name: 'aimesh_sidecar_edge_closed_total',
      help: 'App connections the outbound proxy closed on its own: connection-limit, first-byte-timeout.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    retries: new Counter({
      name: 'aimesh_sidecar_retries_total',
      help: 'Retries by upstream.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    retriesDenied: new Counter({
      name: 'aimesh_sidecar_retries_denied_total',
      help: 'Retries not made because the retry budget was spent.',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    breakerState: new Gauge({
      name: 'aimesh_sidecar_breaker_state',
      help: 'Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.',
      labelNames: ['upstream', 'endpoint'] as const,
      registers: [registry],
      // Each thread has its own breakers: the worse state shows.
      aggregator: 'max',
    }),
    ejections: new Counter({
      name: 'aimesh_sidecar_ejections_total',
      help: 'Outlier ejections by upstream and endpoint.',
      labelNames: ['upstream', 'endpoint'] as const,
      registers: [registry],
    }),
    endpoints: new Gauge({
      name: 'aimesh_sidecar_endpoints',
      help: 'Endpoints known per upstream.',
      labelNames: ['upstream'] as const,
      registers: [registry],
      // Both threads know the upstream: the same count, not twice it.
      aggregator: 'max',
    }),
    discoveryStale: new Gauge({
      name: 'aimesh_sidecar_discovery_stale',
      help: '1 while an upstream is served from last-known endpoints because discovery is unreachable.',
      labelNames: ['upstream'] as const,
      registers: [registry],
      // Both threads hear the same discovery.
      aggregator: 'max',
    }),
    aiRequests: new Counter({
      name: 'aimesh_ai_requests_total',
      help: 'AI calls by provider channel and status (0: no answer).',
      labelNames: ['provider', 'code'] as const,
      registers: [registry],
    }),
    aiFailovers: new Counter({
      name: 'aimesh_ai_failovers_total',
      help: 'AI calls moved on from a channel, by channel.',
      labelNames: ['provider'] as const,
      registers: [registry],
    }),
    aiCacheHits: new Counter({
      name: 'aimesh_ai_cache_hits_total',
      help: 'AI calls answered from the response cache.',
      registers: [registry],
    }),
    aiTokens: new Counter({
      name: 'aimesh_ai_tokens_total',
      help: 'Tokens charged to channels: reported by providers, or estimated for streams without usage.',
      labelNames: ['provider'] as const,
      registers: [registry],
    }),
    aiKeyErrors: new Counter({
      name: 'aimesh_ai_key_errors_total',
      help: 'Calls a channel was skipped for because its API key file could not be read: alert on this.',
      labelNames: ['provider'] as const,
      registers: [registry],
    }),
    fallbacks: new Counter({
      name: 'aimesh_sidecar_fallbacks_total',
      help: 'Requests answered by a fallback, by upstream and kind.',
      labelNames: ['upstream', 'kind'] as const,
      registers: [registry],
    }),
  };
}

/** Endpoint label of calls that got no answer from any endpoint. */
export const NO_ENDPOINT = 'none';
/** Endpoint label of calls answered by an endpoint discovery no longer lists. */
export const GONE_ENDPOINT = 'gone';
const LABELS_NOT_OF_ENDPOINTS = [NO_ENDPOINT, GONE_ENDPOINT];

/**
 * The series labelled by endpoint live as long as discovery lists the endpoint. Endpoint ids
 * name instances (a Consul service id is the pod's), so without this every rollout would leave
 * its old pods' series behind for as long as the sidecar runs. Kept by upstream name, not by
 * Upstream object: a reload that replaces an upstream keeps counting on the same series.
 */
export class EndpointSeries {
  /** Upstream name -> endpoint label -> response codes counted for it. */
  private readonly known = new Map<string, Map<string, Set<string>>>();

  constructor(private readonly metrics: ReturnType<typeof registeredMetrics>) {}

  /** Discovery's current list: series of endpoints no longer in it are removed. */
  setEndpoints(upstream: string, ids: Iterable<string>): void {
    const current = new Set(ids);
    const endpoints = this.endpointsOf(upstream);
    for (const [endpoint, codes] of endpoints) {
      if (current.has(endpoint) || LABELS_NOT_OF_ENDPOINTS.includes(endpoint)) continue;
      this.remove(upstream, endpoint, codes);
      endpoints.delete(endpoint);
    }
    for (const id of current) if (!endpoints.has(id)) endpoints.set(id, new Set());
  }

  /** The upstream left the config: every series of its endpoints goes. */
  forgetUpstream(upstream: string): void {
    for (const [endpoint, codes] of this.known.get(upstream) ?? []) this.remove(upstream, endpoint, codes);
    this.known.delete(upstream);
  }

  /** A call's count; one that ends after its endpoint left is counted as "gone", so no series outlives it. */
  countRequest(upstream: string, endpoint: string, code: string): void {
    const endpoints = this.endpointsOf(upstream);
    const label = endpoints.has(endpoint) || endpoint === NO_ENDPOINT ? endpoint : GONE_ENDPOINT;
    let codes = endpoints.get(label);
    if (!codes) endpoints.set(label, (codes = new Set()));
    codes.add(code);
    this.metrics.requests.inc({ upstream, endpoint: label, code });
  }

  breakerChanged(upstream: string, endpoint: string, state: number): void {
    if (this.known.get(upstream)?.has(endpoint)) this.metrics.breakerState.set({ upstream, endpoint }, state);
  }

  ejected(upstream: string, endpoint: string): void {
    if (this.known.get(upstream)?.has(endpoint)) this.metrics.ejections.inc({ upstream, endpoint });
  }

  private endpointsOf(upstream: string): Map<string, Set<string>> {
    let endpoints = this.known.get(upstream);
    if (!endpoints) this.known.set(upstream, (endpoints = new Map()));
    return endpoints;
  }

  private remove(upstream: string, endpoint: string, codes: Set<string>): void {
    for (const code of codes) this.metrics.requests.remove({ upstream, endpoint, code });
    this.metrics.breakerState.remove({ upstream, endpoint });
    this.metrics.ejections.remove({ upstream, endpoint });
  }
}
