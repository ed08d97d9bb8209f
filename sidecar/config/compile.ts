/**
 * The sidecar config compiled for the request path: every duration turned into
 * milliseconds, every default filled in, every policy in the shape its layer takes. Done
 * once per load; a reload compiles a new one and swaps it in whole, so no request ever
 * parses a duration or sees half of an old config and half of a new one. Pure.
 */
import {
  DEFAULT_RETRY_BUFFER_BYTES,
  durationMs,
  edgeSchema,
  type EdgeLimits,
  type SagaSpec,
  type SidecarConfig,
} from '../../api/index.js';
import {
  DEFAULT_OUTLIER,
  type BreakerSettings,
  type BudgetSettings,
  type OutlierSettings,
  type RetrySettings,
  type Strategy,
} from '../routing/index.js';

type UpstreamSpec = SidecarConfig['upstreams'][number];
type ProviderSpec = SidecarConfig['providers'][number];

export interface CompiledUpstream {
  name: string;
  protocol: 'http' | 'grpc';
  /** Port to call, when the upstream overrides the one discovery reports. */
  port?: number;
  strategy: Strategy;
  hashOn?: { header?: string; cookie?: string; sourceIp?: boolean };
  /** Bounds the whole exchange, retries and the response body included. */
  timeoutMs?: number;
  perTryTimeoutMs?: number;
  retry?: RetrySettings;
  budget: BudgetSettings;
  breaker?: BreakerSettings;
  outlier: OutlierSettings;
  /** Bodies up to this size are buffered and may be retried; larger ones are sent once. */
  retryBufferBytes: number;
  fallback?: {
    service?: string;
    response?: { status: number; headers: Record<string, string>; body: string };
    staleCacheMaxAgeMs?: number;
  };
  /** Equal signatures mean equal behaviour: a reload keeps that upstream's live state. */
  signature: string;
}

/** A provider channel: an upstream whose one endpoint is the provider's base URL. */
export interface CompiledChannel {
  name: string;
  baseUrl: URL;
  priority: number;
  weight: number;
  enabled: boolean;
  models: readonly string[];
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  timeoutMs: number;
  /** Whether streamed completions sent to it ask for their usage. */
  streamUsage: boolean;
  apiKeyFile?: string;
  signature: string;
}

export interface CompiledAiRouting {
  cooldownMs: number;
  breaker?: BreakerSettings;
  cache?: { ttlMs: number; maxEntries: number };
}

/** Each step's call timeouts; `compensation` only when the step has one. */
export interface StepTimeouts {
  action: number;
  compensation?: number;
}

export interface CompiledSaga {
  spec: SagaSpec;
  stepTimeoutsMs: StepTimeouts[];
}

export interface CompiledConfig {
  /** The config as validated, for the admin dump and for registration. */
  source: SidecarConfig;
  upstreams: CompiledUpstream[];
  channels: CompiledChannel[];
  ai: CompiledAiRouting;
  sagas: Map<string, CompiledSaga>;
}

export function compileConfig(config: SidecarConfig): CompiledConfig {
  return {
    source: config,
    upstreams: config.upstreams.map(compileUpstream),
    channels: config.providers.map(compileChannel),
    ai: compileAiRouting(config.aiRouting),
    sagas: new Map(config.sagas.map(({ name, spec }) => [name, compileSaga(spec)])),
  };
}

export function compileSaga(spec: SagaSpec): CompiledSaga {
  return {
    spec,
    stepTimeoutsMs: spec.steps.map((step) => ({
      action: durationMs(step.action.timeout),
      ...(step.compensation ? { compensation: durationMs(step.compensation.timeout) } : {}),
    })),
  };
}

export function compileUpstream(spec: UpstreamSpec): CompiledUpstream {
  const compiled: CompiledUpstream = {
    name: spec.name,
    protocol: spec.protocol,
    ...(spec.port ? { port: spec.port } : {}),
    strategy: spec.loadBalancer.strategy,
    ...(spec.loadBalancer.hashOn ? { hashOn: spec.loadBalancer.hashOn } : {}),
    ...(spec.timeout ? { timeoutMs: durationMs(spec.timeout) } : {}),
    ...(spec.retries?.perTryTimeout ? { perTryTimeoutMs: durationMs(spec.retries.perTryTimeout) } : {}),
    ...(spec.retries && spec.retries.attempts > 0
      ? {
          retry: {
            attempts: spec.retries.attempts,
            retryOn: spec.retries.retryOn,
            retriableStatusCodes: spec.retries.retriableStatusCodes,
            backoffInitialMs: durationMs(spec.retries.backoff.initial),
            backoffMaxMs: durationMs(spec.retries.backoff.max),
            retryNonIdempotent: spec.retries.retryNonIdempotent,
          },
        }
      : {}),
    budget: spec.retries?.budget ?? { percent: 20, minPerSecond: 10 },
    ...(spec.circuitBreaker ? { breaker: compileBreaker(spec.circuitBreaker) } : {}),
    outlier: spec.outlierDetection
      ? {
          ...DEFAULT_OUTLIER,
          consecutive5xx: spec.outlierDetection.consecutive5xx,
          intervalMs: durationMs(spec.outlierDetection.interval),
          baseEjectionMs: durationMs(spec.outlierDetection.baseEjectionTime),
          maxEjectionPercent: spec.outlierDetection.maxEjectionPercent,
        }
      : // Without outlierDetection nothing is ejected (in Envoy, outlier detection is opt-in).
        { ...DEFAULT_OUTLIER, consecutive5xx: Number.MAX_SAFE_INTEGER },
    retryBufferBytes: spec.retries?.bufferBytes ?? DEFAULT_RETRY_BUFFER_BYTES,
    ...(spec.fallback
      ? {
          fallback: {
            ...(spec.fallback.service ? { service: spec.fallback.service } : {}),
            ...(spec.fallback.response ? { response: spec.fallback.response } : {}),
            ...(spec.fallback.staleCache
              ? { staleCacheMaxAgeMs: durationMs(spec.fallback.staleCache.maxAge) }
              : {}),
          },
        }
      : {}),
    signature: '',
  };
  compiled.signature = JSON.stringify({ ...compiled, signature: undefined });
  return compiled;
}

function compileChannel(provider: ProviderSpec): CompiledChannel {
  const compiled: CompiledChannel = {
    name: provider.name,
    baseUrl: new URL(provider.baseUrl),
    priority: provider.priority,
    weight: provider.weight,
    enabled: provider.enabled,
    models: provider.models,
    ...(provider.quota?.requestsPerMinute ? { requestsPerMinute: provider.quota.requestsPerMinute } : {}),
    ...(provider.quota?.tokensPerMinute ? { tokensPerMinute: provider.quota.tokensPerMinute } : {}),
    timeoutMs: durationMs(provider.timeout),
    streamUsage: provider.streamUsage,
    ...(provider.apiKeyFile ? { apiKeyFile: provider.apiKeyFile } : {}),
    signature: '',
  };
  compiled.signature = JSON.stringify({ ...compiled, baseUrl: provider.baseUrl, signature: undefined });
  return compiled;
}

function compileAiRouting(routing: SidecarConfig['aiRouting']): CompiledAiRouting {
  return {
    cooldownMs: durationMs(routing?.cooldown ?? '30s'),
    ...(routing?.circuitBreaker ? { breaker: compileBreaker(routing.circuitBreaker) } : {}),
    ...(routing?.cache
      ? { cache: { ttlMs: durationMs(routing.cache.ttl), maxEntries: routing.cache.maxEntries } }
      : {}),
  };
}

function compileBreaker(spec: NonNullable<UpstreamSpec['circuitBreaker']>): BreakerSettings {
  return {
    consecutiveFailures: spec.consecutiveFailures,
    openForMs: durationMs(spec.openFor),
    halfOpenRequests: spec.halfOpenRequests,
  };
}

/** The proxy's client-side edge in milliseconds and counts, as the listener takes it. */
export interface CompiledEdge {
  firstByteTimeoutMs: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  maxHeaderBytes: number;
  maxConnections: number;
  maxConcurrentStreams: number;
}

export function compileEdge(edge: EdgeLimits = edgeSchema.parse({})): CompiledEdge {
  return {
    firstByteTimeoutMs: durationMs(edge.firstByteTimeout),
    headersTimeoutMs: durationMs(edge.headersTimeout),
    requestTimeoutMs: durationMs(edge.requestTimeout),
    idleTimeoutMs: durationMs(edge.idleTimeout),
    maxHeaderBytes: edge.maxHeaderBytes,
    maxConnections: edge.maxConnections,
    maxConcurrentStreams: edge.maxConcurrentStreams,
  };
}
