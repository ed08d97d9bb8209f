import { describe, expect, it } from '@jest/globals';
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
  type EndpointLoad,
  type RetrySettings,
  type RoutedEndpoint,
  type Strategy,
} from '../../../sidecar/routing/index.js';

/** A seeded PRNG, so statistical tests give the same answer every run. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function endpoint(id: string, weight = 1, priority = 0): RoutedEndpoint {
  return { id, address: '10.0.0.1', port: 8080, weight, priority };
}

const idle = (): EndpointLoad => newEndpointLoad();

function counts(strategy: Strategy, endpoints: RoutedEndpoint[], picks: number, load = idle, seed = 1) {
  const balancer = createBalancer(strategy, mulberry32(seed));
  const result: Record<string, number> = {};
  for (let i = 0; i < picks; i++) {
    const chosen = balancer.pick(endpoints, { nowMs: 0, load: () => load() });
    if (chosen) result[chosen.id] = (result[chosen.id] ?? 0) + 1;
  }
  return result;
}

describe('balancers', () => {
  const three = [endpoint('a'), endpoint('b'), endpoint('c')];

  it('round-robin visits endpoints in turn', () => {
    const balancer = createBalancer('round-robin');
    const order = Array.from({ length: 6 }, () => balancer.pick(three, { nowMs: 0, load: idle })?.id);
    expect(order).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('random gives each endpoint its share within 3%', () => {
    const result = counts('random', three, 30_000);
    for (const id of ['a', 'b', 'c']) expect(Math.abs((result[id] ?? 0) / 30_000 - 1 / 3)).toBeLessThan(0.03);
  });

  it('smooth weighted round-robin interleaves (nginx: 5,1,1 → a a b a c a a)', () => {
    const balancer = createBalancer('weighted-round-robin');
    const weighted = [endpoint('a', 5), endpoint('b', 1), endpoint('c', 1)];
    const order = Array.from({ length: 7 }, () => balancer.pick(weighted, { nowMs: 0, load: idle })?.id);
    expect(order).toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a']);
    expect(
      counts('weighted-round-robin', [endpoint('a', 1), endpoint('b', 2), endpoint('c', 3)], 600),
    ).toEqual({
      a: 100,
      b: 200,
      c: 300,
    });
  });

  it('least-request (P2C) prefers the endpoint with fewer requests in flight', () => {
    const loads: Record<string, EndpointLoad> = {
      a: { inFlight: 10, ewmaMs: 0, ewmaAt: -1 },
      b: { inFlight: 0, ewmaMs: 0, ewmaAt: -1 },
      c: { inFlight: 0, ewmaMs: 0, ewmaAt: -1 },
    };
    const balancer = createBalancer('least-request', mulberry32(7));
    const result: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) {
      const id = balancer.pick(three, { nowMs: 0, load: (x) => loads[x] as EndpointLoad })?.id as string;
      result[id] = (result[id] ?? 0) + 1;
    }
    // a only wins when both samples are a, which P2C never does (it samples two distinct).
    expect(result.a).toBeUndefined();
    expect(Math.abs((result.b ?? 0) - (result.c ?? 0))).toBeLessThan(300);
  });

  it('peak-EWMA moves traffic away from a slow endpoint and back once it recovers', () => {
    const loads: Record<string, EndpointLoad> = { a: idle(), b: idle(), c: idle() };
    observeLatency(loads.a as EndpointLoad, 5, 0);
    observeLatency(loads.b as EndpointLoad, 500, 0);
    observeLatency(loads.c as EndpointLoad, 5, 0);
    const balancer = createBalancer('ewma', mulberry32(3));
    const share = (nowMs: number) => {
      let slow = 0;
      for (let i = 0; i < 3000; i++) {
        if (balancer.pick(three, { nowMs, load: (x) => loads[x] as EndpointLoad })?.id === 'b') slow++;
      }
      return slow / 3000;
    };
    // P2C: b wins only against itself, never: about 0 share while it is slow.
    expect(share(0)).toBe(0);
    // A fast answer does not erase a peak at once: the EWMA decays toward it.
    observeLatency(loads.b as EndpointLoad, 5, 1000);
    expect((loads.b as EndpointLoad).ewmaMs).toBeGreaterThan(400);
    // After many decay time constants the peak is forgotten: b is as fast as it answers now,
    // and once it is the fastest it wins every pair it is in (2 of 3 pairs).
    observeLatency(loads.b as EndpointLoad, 5, 100_000);
    expect((loads.b as EndpointLoad).ewmaMs).toBeLessThan(5.1);
    for (const id of ['a', 'c']) observeLatency(loads[id] as EndpointLoad, 8, 100_000);
    expect(share(100_000)).toBeGreaterThan(0.6);
  });

  it('a slower sample raises the EWMA at once (the peak)', () => {
    const load = idle();
    observeLatency(load, 10, 0);
    observeLatency(load, 300, 1);
    expect(load.ewmaMs).toBe(300);
  });

  it('consistent hash keeps keys on their endpoint and moves only about 1/N when one leaves', () => {
    const ten = Array.from({ length: 10 }, (_, i) => endpoint(`e${i}`));
    const balancer = createBalancer('consistent-hash');
    const owner = (endpoints: RoutedEndpoint[], key: string) =>
      balancer.pick(endpoints, { hashKey: key, nowMs: 0, load: idle })?.id;
    const keys = Array.from({ length: 5000 }, (_, i) => `user-${i}`);
    const before = keys.map((k) => owner(ten, k));
    expect(keys.map((k) => owner(ten, k))).toEqual(before);
    const nine = ten.filter((e) => e.id !== 'e3');
    const after = keys.map((k) => owner(nine, k));
    const moved = keys.filter((_, i) => before[i] !== after[i]).length;
    const ownedByE3 = before.filter((id) => id === 'e3').length;
    // Only the keys e3 owned move.
    expect(moved).toBe(ownedByE3);
    expect(moved / keys.length).toBeGreaterThan(0.05);
    expect(moved / keys.length).toBeLessThan(0.15);
  });

  it('priority uses the highest group, weighted within it, and fails over to the next', () => {
    const groups = [endpoint('p1', 1, 10), endpoint('p2', 3, 10), endpoint('backup', 1, 1)];
    const top = counts('priority', groups, 8000);
    expect(top.backup).toBeUndefined();
    expect(Math.abs((top.p2 ?? 0) / 8000 - 0.75)).toBeLessThan(0.03);
    expect(counts('priority', [endpoint('backup', 1, 1)], 10)).toEqual({ backup: 10 });
  });

  it('reads weight and priority from Consul meta, with safe defaults', () => {
    const base = { id: 'x', address: '10.0.0.2', port: 80, tags: [] };
    expect(toRoutedEndpoint({ ...base, meta: { weight: '3', priority: '5' } })).toMatchObject({
      weight: 3,
      priority: 5,
    });
    expect(toRoutedEndpoint({ ...base, meta: { weight: 'heavy' } })).toMatchObject({
      weight: 1,
      priority: 0,
    });
  });
});

describe('circuit breaker', () => {
  it('opens after consecutive failures, half-opens after openFor, and closes after the trials succeed', () => {
    const changes: string[] = [];
    const breaker = new CircuitBreaker(
      { consecutiveFailures: 5, openForMs: 60_000, halfOpenRequests: 2 },
      (s) => changes.push(s),
    );
    for (let i = 0; i < 4; i++) breaker.record(false, i);
    breaker.record(true, 4);
    for (let i = 0; i < 4; i++) breaker.record(false, 10 + i);
    expect(breaker.state(20)).toBe('closed');
    breaker.record(false, 20);
    expect(breaker.state(21)).toBe('open');
    expect(breaker.acquire(59_000)).toBe(false);
    expect(breaker.state(60_020)).toBe('half-open');
    expect(breaker.acquire(60_020)).toBe(true);
    expect(breaker.acquire(60_020)).toBe(true);
    // Only halfOpenRequests trials at once.
    expect(breaker.acquire(60_020)).toBe(false);
    breaker.record(true, 60_030);
    expect(breaker.state(60_030)).toBe('half-open');
    breaker.record(true, 60_040);
    expect(breaker.state(60_040)).toBe('closed');
    expect(changes).toEqual(['open', 'half-open', 'closed']);
  });

  it('opens again on a failed trial', () => {
    const breaker = new CircuitBreaker({ consecutiveFailures: 1, openForMs: 1000, halfOpenRequests: 2 });
    breaker.record(false, 0);
    expect(breaker.acquire(1000)).toBe(true);
    breaker.record(false, 1001);
    expect(breaker.state(1500)).toBe('open');
    expect(breaker.state(2001)).toBe('half-open');
  });
});

describe('outlier ejection', () => {
  const settings = {
    consecutive5xx: 3,
    intervalMs: 10_000,
    baseEjectionMs: 30_000,
    maxEjectionPercent: 50,
    maxEjectionMs: 300_000,
  };

  it('ejects after consecutive 5xx, for longer each time, and un-ejects when the time is up', () => {
    const ejections: number[] = [];
    const detector = new OutlierDetector(settings, (_id, forMs) => ejections.push(forMs));
    for (let i = 0; i < 3; i++) detector.record('a', true, 4, 0);
    expect(detector.isEjected('a', 1)).toBe(true);
    expect(detector.isEjected('a', 30_000)).toBe(false);
    for (let i = 0; i < 3; i++) detector.record('a', true, 4, 31_000);
    expect(detector.isEjected('a', 31_000 + 59_999)).toBe(true);
    expect(ejections).toEqual([30_000, 60_000]);
  });

  it('a success resets the count', () => {
    const detector = new OutlierDetector(settings);
    detector.record('a', true, 4, 0);
    detector.record('a', true, 4, 0);
    detector.record('a', false, 4, 0);
    detector.record('a', true, 4, 0);
    expect(detector.isEjected('a', 1)).toBe(false);
  });

  it('never ejects more than maxEjectionPercent, but at least one endpoint', () => {
    const detector = new OutlierDetector({ ...settings, maxEjectionPercent: 10 });
    for (const id of ['a', 'b']) for (let i = 0; i < 3; i++) detector.record(id, true, 4, 0);
    expect(detector.ejected(1)).toEqual(['a']);
  });

  it('the ejection time shrinks back after healthy intervals', () => {
    const ejections: number[] = [];
    const detector = new OutlierDetector(settings, (_id, forMs) => ejections.push(forMs));
    for (let i = 0; i < 3; i++) detector.record('a', true, 4, 0);
    detector.isEjected('a', 30_000);
    // Healthy for 10 intervals after the ejection ended.
    for (let i = 0; i < 3; i++) detector.record('a', true, 4, 130_000);
    expect(ejections).toEqual([30_000, 30_000]);
  });
});

describe('retries', () => {
  const policy: RetrySettings = {
    attempts: 2,
    retryOn: ['5xx', 'connect-failure'],
    retriableStatusCodes: [],
    backoffInitialMs: 25,
    backoffMaxMs: 250,
    retryNonIdempotent: false,
  };

  it('retries 5xx on idempotent methods only, and connect failures on any method', () => {
    expect(retryable(policy, 1, 'GET', { status: 503 })).toBe(true);
    expect(retryable(policy, 1, 'POST', { status: 503 })).toBe(false);
    expect(retryable({ ...policy, retryNonIdempotent: true }, 1, 'POST', { status: 503 })).toBe(true);
    expect(retryable(policy, 1, 'POST', { error: 'connect-failure' })).toBe(true);
    expect(retryable(policy, 1, 'GET', { status: 404 })).toBe(false);
    expect(retryable(policy, 3, 'GET', { status: 503 })).toBe(false);
    expect(
      retryable({ ...policy, retryOn: ['retriable-status-codes'], retriableStatusCodes: [409] }, 1, 'PUT', {
        status: 409,
      }),
    ).toBe(true);
    expect(retryable({ ...policy, retryOn: ['gateway-error'] }, 1, 'GET', { status: 500 })).toBe(false);
  });

  it('retries a POST or PATCH that carries an idempotency key, as an idempotent method', () => {
    expect(retryable(policy, 1, 'POST', { status: 503 }, true)).toBe(true);
    expect(retryable(policy, 1, 'PATCH', { error: 'reset' }, true)).toBe(true);
    expect(retryable(policy, 1, 'PATCH', { error: 'reset' })).toBe(false);
  });

  it('backs off exponentially with full jitter, never above the maximum', () => {
    const random = mulberry32(11);
    for (let retry = 1; retry <= 8; retry++) {
      const ceiling = Math.min(250, 25 * 2 ** (retry - 1));
      for (let i = 0; i < 200; i++) {
        const delay = backoffDelay(retry, policy, random);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThan(ceiling);
      }
    }
    expect(backoffDelay(3, policy, () => 0.999)).toBe(99);
  });

  it('the budget allows the floor per second, then about percent of requests', () => {
    const budget = new RetryBudget({ percent: 20, minPerSecond: 10, windowMs: 10_000 });
    // No traffic: only the floor (10/s over a 10 s window).
    let granted = 0;
    for (let i = 0; i < 500; i++) if (budget.tryWithdraw(0)) granted++;
    expect(granted).toBe(100);
    // Total outage under load: 1000 requests, one retry wanted for each.
    const outage = new RetryBudget({ percent: 20, minPerSecond: 0 });
    let retries = 0;
    for (let i = 0; i < 1000; i++) {
      outage.deposit(i);
      if (outage.tryWithdraw(i)) retries++;
    }
    expect(retries).toBe(200);
  });

  it('the budget window slides: old requests stop counting', () => {
    const budget = new RetryBudget({ percent: 50, minPerSecond: 0, windowMs: 10_000 });
    for (let i = 0; i < 100; i++) budget.deposit(0);
    expect(budget.tryWithdraw(0)).toBe(true);
    expect(budget.tryWithdraw(20_000)).toBe(false);
  });
});
