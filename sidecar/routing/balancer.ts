/**
 * Load balancers: pick one endpoint from the usable ones. Pure: randomness is injected,
 * time is passed in, load comes from the caller's EndpointLoad table.
 */
import type { EndpointLoad, RoutedEndpoint } from './endpoint.js';

export type Strategy =
  | 'round-robin'
  | 'random'
  | 'weighted-round-robin'
  | 'least-request'
  | 'ewma'
  | 'consistent-hash'
  | 'priority';

export interface PickContext {
  hashKey?: string;
  nowMs: number;
  load: (id: string) => EndpointLoad;
}

export interface Balancer {
  pick(endpoints: readonly RoutedEndpoint[], context: PickContext): RoutedEndpoint | undefined;
}

export type Random = () => number;

export function createBalancer(strategy: Strategy, random: Random = Math.random): Balancer {
  switch (strategy) {
    case 'round-robin':
      return new RoundRobin();
    case 'random':
      return { pick: (endpoints) => endpoints[Math.floor(random() * endpoints.length)] };
    case 'weighted-round-robin':
      return new SmoothWeightedRoundRobin();
    case 'least-request':
      return new PowerOfTwoChoices(random, (load) => load.inFlight);
    case 'ewma':
      return new PowerOfTwoChoices(random, peakEwmaCost);
    case 'consistent-hash':
      return new ConsistentHash(random);
    case 'priority':
      return new PriorityGroups(random);
  }
}

class RoundRobin implements Balancer {
  private next = 0;
  pick(endpoints: readonly RoutedEndpoint[]): RoutedEndpoint | undefined {
    if (endpoints.length === 0) return undefined;
    const chosen = endpoints[this.next % endpoints.length];
    this.next = (this.next + 1) % Number.MAX_SAFE_INTEGER;
    return chosen;
  }
}

/** nginx's smooth weighted round-robin: weights 5,1,1 give a a b a c a a, never bursts. */
export class SmoothWeightedRoundRobin implements Balancer {
  private readonly current = new Map<string, number>();

  pick(endpoints: readonly RoutedEndpoint[]): RoutedEndpoint | undefined {
    const weighted = endpoints.filter((e) => e.weight > 0);
    if (weighted.length === 0) return endpoints[0];
    let total = 0;
    let best: RoutedEndpoint | undefined;
    let bestValue = -Infinity;
    for (const endpoint of weighted) {
      const value = (this.current.get(endpoint.id) ?? 0) + endpoint.weight;
      this.current.set(endpoint.id, value);
      total += endpoint.weight;
      if (value > bestValue) {
        bestValue = value;
        best = endpoint;
      }
    }
    if (best) this.current.set(best.id, bestValue - total);
    // Forget endpoints that left, so a returning one starts fresh.
    if (this.current.size > weighted.length * 2) {
      const ids = new Set(weighted.map((e) => e.id));
      for (const id of this.current.keys()) if (!ids.has(id)) this.current.delete(id);
    }
    return best;
  }
}

/** Power of two choices: sample two, take the cheaper (least-request or peak-EWMA). */
class PowerOfTwoChoices implements Balancer {
  constructor(
    private readonly random: Random,
    private readonly cost: (load: EndpointLoad, nowMs: number) => number,
  ) {}

  pick(endpoints: readonly RoutedEndpoint[], context: PickContext): RoutedEndpoint | undefined {
    if (endpoints.length <= 1) return endpoints[0];
    const a = Math.floor(this.random() * endpoints.length);
    let b = Math.floor(this.random() * (endpoints.length - 1));
    if (b >= a) b++;
    const first = endpoints[a] as RoutedEndpoint;
    const second = endpoints[b] as RoutedEndpoint;
    const costA = this.cost(context.load(first.id), context.nowMs) / Math.max(first.weight, 1e-9);
    const costB = this.cost(context.load(second.id), context.nowMs) / Math.max(second.weight, 1e-9);
    return costB < costA ? second : first;
  }
}

/** Default latency guess for an endpoint with no responses yet, so new ones get tried. */
const EWMA_DEFAULT_MS = 1;
/** Decay time constant: how fast a past latency is forgotten (linkerd and Finagle use 10 s). */
export const EWMA_DECAY_MS = 10_000;

/** Peak-EWMA cost as in Finagle/linkerd: latency estimate × (in-flight + 1). */
export function peakEwmaCost(load: EndpointLoad, nowMs: number): number {
  const latency = load.ewmaAt < 0 ? EWMA_DEFAULT_MS : decayedEwma(load, nowMs);
  return latency * (load.inFlight + 1);
}

function decayedEwma(load: EndpointLoad, nowMs: number): number {
  const elapsed = Math.max(0, nowMs - load.ewmaAt);
  return load.ewmaMs * Math.exp(-elapsed / EWMA_DECAY_MS);
}

/** Updates an EWMA with a new latency; a slower sample replaces it at once (the "peak"). */
export function observeLatency(load: EndpointLoad, latencyMs: number, nowMs: number): void {
  if (load.ewmaAt < 0 || latencyMs > load.ewmaMs) {
    load.ewmaMs = latencyMs;
  } else {
    const elapsed = Math.max(0, nowMs - load.ewmaAt);
    const w = Math.exp(-elapsed / EWMA_DECAY_MS);
    load.ewmaMs = load.ewmaMs * w + latencyMs * (1 - w);
  }
  load.ewmaAt = nowMs;
}

/**
 * A hash ring with virtual nodes (Ketama style): a key keeps its endpoint while the set
 * is stable, and only about 1/N of keys move when an endpoint joins or leaves.
 */
class ConsistentHash implements Balancer {
  private ring: { point: number; endpoint: RoutedEndpoint }[] = [];
  private ringOf = '';

  constructor(
    private readonly random: Random,
    private readonly virtualNodes = 160,
  ) {}

  pick(endpoints: readonly RoutedEndpoint[], context: PickContext): RoutedEndpoint | undefined {
    if (endpoints.length === 0) return undefined;
    if (context.hashKey === undefined) return endpoints[Math.floor(this.random() * endpoints.length)];
    const signature = endpoints.map((e) => `${e.id}*${e.weight}`).join(',');
    if (signature !== this.ringOf) this.build(endpoints, signature);
    const point = fnv1a(context.hashKey);
    let low = 0;
    let high = this.ring.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if ((this.ring[mid] as { point: number }).point < point) low = mid + 1;
      else high = mid;
    }
    return (this.ring[low % this.ring.length] as { endpoint: RoutedEndpoint }).endpoint;
  }

  private build(endpoints: readonly RoutedEndpoint[], signature: string): void {
    const ring: { point: number; endpoint: RoutedEndpoint }[] = [];
    for (const endpoint of endpoints) {
      const nodes = Math.max(1, Math.round(this.virtualNodes * (endpoint.weight > 0 ? endpoint.weight : 1)));
      for (let i = 0; i < nodes; i++) ring.push({ point: fnv1a(`${endpoint.id}#${i}`), endpoint });
    }
    ring.sort((a, b) => a.point - b.point);
    this.ring = ring;
    this.ringOf = signature;
  }
}

/** 32-bit FNV-1a with a final avalanche, so nearby strings land far apart on the ring. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

/** Priority groups: the highest priority with usable endpoints wins; weighted random inside it. */
class PriorityGroups implements Balancer {
  constructor(private readonly random: Random) {}

  pick(endpoints: readonly RoutedEndpoint[]): RoutedEndpoint | undefined {
    if (endpoints.length === 0) return undefined;
    const top = Math.max(...endpoints.map((e) => e.priority));
    return weightedRandom(
      endpoints.filter((e) => e.priority === top),
      this.random,
    );
  }
}

export function weightedRandom(
  endpoints: readonly RoutedEndpoint[],
  random: Random,
): RoutedEndpoint | undefined {
  const total = endpoints.reduce((sum, e) => sum + e.weight, 0);
  if (total <= 0) return endpoints[Math.floor(random() * endpoints.length)];
  let point = random() * total;
  for (const endpoint of endpoints) {
    point -= endpoint.weight;
    if (point < 0) return endpoint;
  }
  return endpoints[endpoints.length - 1];
}
