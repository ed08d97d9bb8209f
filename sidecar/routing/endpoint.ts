import type { DiscoveredEndpoint } from '../discovery/index.js';

/** An upstream instance as the balancers see it. */
export interface RoutedEndpoint {
  id: string;
  address: string;
  port: number;
  /** From Consul meta "weight" (default 1); 0 takes the instance out of weighted picks. */
  weight: number;
  /** From Consul meta "priority" (default 0); higher groups are tried first. */
  priority: number;
}

/** Load the balancers read; the I/O layer updates it around each request. */
export interface EndpointLoad {
  inFlight: number;
  /** Peak-EWMA latency in ms. */
  ewmaMs: number;
  /** When ewmaMs was last updated (ms); negative before the first response. */
  ewmaAt: number;
}

export function toRoutedEndpoint(endpoint: DiscoveredEndpoint): RoutedEndpoint {
  return {
    id: endpoint.id,
    address: endpoint.address,
    port: endpoint.port,
    weight: nonNegative(endpoint.meta.weight, 1),
    priority: finite(endpoint.meta.priority, 0),
  };
}

function nonNegative(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && Number.isFinite(n) && n >= 0 ? n : fallback;
}

function finite(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && Number.isFinite(n) ? n : fallback;
}

export function newEndpointLoad(): EndpointLoad {
  return { inFlight: 0, ewmaMs: 0, ewmaAt: -1 };
}
