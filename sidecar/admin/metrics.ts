import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type SidecarMetrics = ReturnType<typeof sidecarMetrics>;

/** The sidecar's Prometheus metrics, in their own registry (one sidecar per process). */
export function sidecarMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'aimesh_sidecar_' });
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
    }),
    discoveryStale: new Gauge({
      name: 'aimesh_sidecar_discovery_stale',
      help: '1 while an upstream is served from last-known endpoints because discovery is unreachable.',
      labelNames: ['upstream'] as const,
      registers: [registry],
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
