/**
 * Composes the pure routing pieces for one upstream into the RoutingPolicy the request
 * path uses: usable endpoints (not ejected, breaker allows) → balancer → per-endpoint
 * load, breaker and outlier bookkeeping → retry decision within the budget.
 */
import { durationMs, type SidecarConfig } from '../../api/index.js';
import type { DiscoveredEndpoint } from '../discovery/index.js';
import {
  CircuitBreaker,
  DEFAULT_BREAKER,
  DEFAULT_OUTLIER,
  OutlierDetector,
  RetryBudget,
  backoffDelay,
  createBalancer,
  newEndpointLoad,
  observeLatency,
  retryable,
  toRoutedEndpoint,
  type BreakerState,
  type EndpointLoad,
  type RetrySettings,
  type RoutedEndpoint,
} from '../routing/index.js';
import type { RoutingPolicy } from './upstream.js';

type UpstreamSpec = SidecarConfig['upstreams'][number];

export interface PolicyHooks {
  onBreakerChange: (endpoint: string, state: BreakerState) => void;
  onEjection: (endpoint: string) => void;
  onRetryDenied: () => void;
}

export interface EndpointView {
  id: string;
  address: string;
  port: number;
  weight: number;
  priority: number;
  inFlight: number;
  ewmaMs: number;
  breaker: BreakerState;
  ejected: boolean;
}

export interface LiveRoutingPolicy extends RoutingPolicy {
  setEndpoints(endpoints: DiscoveredEndpoint[]): void;
  view(nowMs: number): EndpointView[];
}

export function createRoutingPolicy(
  spec: UpstreamSpec,
  hooks: PolicyHooks,
  random: () => number = Math.random,
): LiveRoutingPolicy {
  const balancer = createBalancer(spec.loadBalancer.strategy, random);
  const breakerSettings = spec.circuitBreaker
    ? {
        consecutiveFailures: spec.circuitBreaker.consecutiveFailures,
        openForMs: durationMs(spec.circuitBreaker.openFor),
        halfOpenRequests: spec.circuitBreaker.halfOpenRequests,
      }
    : undefined;
  const outlier = new OutlierDetector(
    spec.outlierDetection
      ? {
          ...DEFAULT_OUTLIER,
          consecutive5xx: spec.outlierDetection.consecutive5xx,
          intervalMs: durationMs(spec.outlierDetection.interval),
          baseEjectionMs: durationMs(spec.outlierDetection.baseEjectionTime),
          maxEjectionPercent: spec.outlierDetection.maxEjectionPercent,
        }
      : // Without outlierDetection, nothing is ejected (Envoy: outlier detection is opt-in).
        { ...DEFAULT_OUTLIER, consecutive5xx: Number.MAX_SAFE_INTEGER },
    hooks.onEjection,
  );
  const retry: RetrySettings | undefined = spec.retries
    ? {
        attempts: spec.retries.attempts,
        retryOn: spec.retries.retryOn,
        retriableStatusCodes: spec.retries.retriableStatusCodes,
        backoffInitialMs: durationMs(spec.retries.backoff.initial),
        backoffMaxMs: durationMs(spec.retries.backoff.max),
        retryNonIdempotent: spec.retries.retryNonIdempotent,
      }
    : undefined;
  const budget = new RetryBudget(spec.retries?.budget ?? { percent: 20, minPerSecond: 10 });

  let endpoints: RoutedEndpoint[] = [];
  const loads = new Map<string, EndpointLoad>();
  const breakers = new Map<string, CircuitBreaker>();
  const loadOf = (id: string): EndpointLoad => {
    let load = loads.get(id);
    if (!load) {
      load = newEndpointLoad();
      loads.set(id, load);
    }
    return load;
  };
  const breakerOf = (id: string): CircuitBreaker | undefined => {
    if (!breakerSettings) return undefined;
    let breaker = breakers.get(id);
    if (!breaker) {
      breaker = new CircuitBreaker(breakerSettings ?? DEFAULT_BREAKER, (state) =>
        hooks.onBreakerChange(id, state),
      );
      breakers.set(id, breaker);
    }
    return breaker;
  };

  return {
    setEndpoints(discovered) {
      endpoints = discovered.map(toRoutedEndpoint);
      const ids = new Set(endpoints.map((e) => e.id));
      outlier.retain(ids);
      for (const id of [...loads.keys()]) if (!ids.has(id)) loads.delete(id);
      for (const id of [...breakers.keys()]) if (!ids.has(id)) breakers.delete(id);
    },

    pick(hashKey, exclude, nowMs) {
      const usable = endpoints.filter(
        (e) => !outlier.isEjected(e.id, nowMs) && (breakerOf(e.id)?.allows(nowMs) ?? true),
      );
      // Prefer endpoints not tried yet for this request; fall back to any usable one.
      const fresh = usable.filter((e) => !exclude.has(e.id));
      const chosen = balancer.pick(fresh.length > 0 ? fresh : usable, { hashKey, nowMs, load: loadOf });
      if (!chosen) return undefined;
      if (breakerOf(chosen.id)?.acquire(nowMs) === false) return undefined;
      return chosen;
    },

    started(id) {
      loadOf(id).inFlight++;
    },

    finished(id, outcome, nowMs) {
      const load = loadOf(id);
      load.inFlight = Math.max(0, load.inFlight - 1);
      observeLatency(load, outcome.latencyMs, nowMs);
      breakerOf(id)?.record(outcome.ok, nowMs);
      const serverError = outcome.status === undefined || outcome.status >= 500;
      outlier.record(id, serverError, endpoints.length, nowMs);
    },

    deposit(nowMs) {
      budget.deposit(nowMs);
    },

    retryDecision({ attempt, method, status, error, nowMs }) {
      if (!retry) return { retry: false, reason: 'no retry policy' };
      const failure = status !== undefined ? { status } : { error: error ?? 'reset' };
      if (!retryable(retry, attempt, method, failure)) return { retry: false, reason: 'not retryable' };
      if (!budget.tryWithdraw(nowMs)) {
        hooks.onRetryDenied();
        return { retry: false, reason: 'retry budget spent' };
      }
      return { retry: true, delayMs: backoffDelay(attempt, retry, random) };
    },

    view(nowMs) {
      return endpoints.map((e) => ({
        ...e,
        inFlight: loadOf(e.id).inFlight,
        ewmaMs: Math.round(loadOf(e.id).ewmaMs * 10) / 10,
        breaker: breakerOf(e.id)?.state(nowMs) ?? 'closed',
        ejected: outlier.isEjected(e.id, nowMs),
      }));
    },
  };
}
