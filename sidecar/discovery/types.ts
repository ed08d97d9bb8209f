/** One reachable instance of an upstream service, as discovery reports it. */
export interface DiscoveredEndpoint {
  /** Stable id (Consul service id, or address:port). */
  id: string;
  address: string;
  port: number;
  /** Consul service meta (weight, priority, version, ...). */
  meta: Record<string, string>;
  tags: string[];
}

export interface UpstreamState {
  service: string;
  endpoints: DiscoveredEndpoint[];
  /** True while the source cannot be reached and `endpoints` are the last known ones. */
  stale: boolean;
  /** Last error talking to the source, while stale. */
  error?: string;
  /** When the endpoints last changed or were confirmed (ms since epoch); 0 before the first answer. */
  updatedAt: number;
}

export type UpstreamListener = (state: UpstreamState) => void;

/** Where upstream instances come from: Consul, Kubernetes Service DNS, or a local registry. */
export interface Discovery {
  /** Starts watching `service` (idempotent) and calls `listener` on every change. */
  watch(service: string, listener: UpstreamListener): () => void;
  /** Current state of every watched service. */
  states(): UpstreamState[];
  close(): Promise<void>;
}
