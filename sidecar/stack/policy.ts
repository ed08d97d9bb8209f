/**
 * Composes the pure routing pieces for one upstream into the policy the stack's layers
 * consult: usable endpoints (not ejected, breaker allows) → balancer → per-endpoint load,
 * breaker and outlier bookkeeping → retry decision within the budget.
 */
import type { DiscoveredEndpoint } from '../discovery/index.js';
import {
  CircuitBreaker,
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
  type Failure,
} from '../routing/index.js';
import type { CompiledUpstream } from '../config/compile.js';
import { originOf } from './transport.js';
import type { StackEndpoint } from './types.js';

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

export type RetryDecision = { retry: true; delayMs: number } | { retry: false; reason: string };

export interface RoutingPolicy {
  /** Replaces the endpoints; `origin` builds each one's connection key. */
  setEndpoints(endpoints: readonly DiscoveredEndpoint[], scheme?: string): void;
  endpoints(): readonly StackEndpoint[];
  /** An endpoint to try, avoiding `exclude` when others are usable; undefined when none may be used. */
  pick(hashKey: string | undefined, exclude: ReadonlySet<string>, nowMs: number): StackEndpoint | undefined;
  /** Whether any endpoint may be used now (not ejected, breaker allows). */
  usable(nowMs: number): boolean;
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
    hasIdempotencyKey?: boolean;
    failure: Failure;
    nowMs: number;
  }): RetryDecision;
  view(nowMs: number): EndpointView[];
}

export function createRoutingPolicy(
  upstream: CompiledUpstream,
  hooks: PolicyHooks,
  random: () => number = Math.random,
): RoutingPolicy {
  const balancer = createBalancer(upstream.strategy, random);
  const outlier = new OutlierDetector(upstream.outlier, hooks.onEjection);
  const retry = upstream.retry;
  const budget = new RetryBudget(upstream.budget);
  const breakerSettings = upstream.breaker;

  let endpoints: StackEndpoint[] = [];
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
      breaker = new CircuitBreaker(breakerSettings, (state) => hooks.onBreakerChange(id, state));
      breakers.set(id, breaker);
    }
    return breaker;
  };
  const usableNow = (nowMs: number) =>
    endpoints.filter((e) => !outlier.isEjected(e.id, nowMs) && (breakerOf(e.id)?.allows(nowMs) ?? true));

  return {
    setEndpoints(discovered, scheme = 'http') {
      endpoints = discovered.map((e) => ({
        ...toRoutedEndpoint(e),
        origin: originOf(e.address, e.port, scheme),
      }));
      const ids = new Set(endpoints.map((e) => e.id));
      outlier.retain(ids);
      for (const id of [...loads.keys()]) if (!ids.has(id)) loads.delete(id);
      for (const id of [...breakers.keys()]) if (!ids.has(id)) breakers.delete(id);
    },

    endpoints: () => endpoints,

    pick(hashKey, exclude, nowMs) {
      const usable = usableNow(nowMs);
      // Prefer endpoints not tried yet for this request; fall back to any usable one.
      const fresh = exclude.size === 0 ? usable : usable.filter((e) => !exclude.has(e.id));
      const chosen = balancer.pick(fresh.length > 0 ? fresh : usable, { hashKey, nowMs, load: loadOf });
      if (!chosen) return undefined;
      if (breakerOf(chosen.id)?.acquire(nowMs) === false) return undefined;
      return chosen as StackEndpoint;
    },

    usable: (nowMs) => usableNow(nowMs).length > 0,

    started(id) {
      loadOf(id).inFlight++;
    },

    finished(id, outcome, nowMs) {
      const load = loadOf(id);
      load.inFlight = Math.max(0, load.inFlight - 1);
      observeLatency(load, outcome.latencyMs, nowMs);
      breakerOf(id)?.record(outcome.ok, nowMs);
      outlier.record(id, !outcome.ok, endpoints.length, nowMs);
    },

    deposit(nowMs) {
      budget.deposit(nowMs);
    },

    retryDecision({ attempt, method, hasIdempotencyKey, failure, nowMs }) {
      if (!retry) return { retry: false, reason: 'no retry policy' };
      if (!retryable(retry, attempt, method, failure, hasIdempotencyKey))
        return { retry: false, reason: 'not retryable' };
      if (!budget.tryWithdraw(nowMs)) {
        hooks.onRetryDenied();
        return { retry: false, reason: 'retry budget spent' };
      }
      return { retry: true, delayMs: backoffDelay(attempt, retry, random) };
    },

    view(nowMs) {
      return endpoints.map((e) => ({
        id: e.id,
        address: e.address,
        port: e.port,
        weight: e.weight,
        priority: e.priority,
        inFlight: loadOf(e.id).inFlight,
        ewmaMs: Math.round(loadOf(e.id).ewmaMs * 10) / 10,
        breaker: breakerOf(e.id)?.state(nowMs) ?? 'closed',
        ejected: outlier.isEjected(e.id, nowMs),
      }));
    },
  };
}
