/**
 * Every upstream of this sidecar with its live parts: compiled config, routing policy
 * (balancer, breakers, outlier ejection, retry budget), connection pools, stale cache.
 * Rebuilt on config reload; endpoints are pushed in by discovery.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SidecarConfig } from '../../api/index.js';
import type { SidecarMetrics } from '../admin/index.js';
import type { DiscoveredEndpoint } from '../discovery/index.js';
import { compileUpstream, type UpstreamConfig } from './config.js';
import { forwardGrpc } from './grpc.js';
import { createRoutingPolicy, type LiveRoutingPolicy } from './policy.js';
import { ConnectionPools } from './pools.js';
import { StaleCache } from './stale-cache.js';

export class Upstream {
  readonly pools = new ConnectionPools();
  readonly cache = new StaleCache();
  readonly policy: LiveRoutingPolicy;

  constructor(
    readonly config: UpstreamConfig,
    readonly metrics: SidecarMetrics,
  ) {
    this.policy = createRoutingPolicy(config.spec, {
      onBreakerChange: (endpoint, state) =>
        metrics.breakerState.set(
          { upstream: config.name, endpoint },
          { closed: 0, 'half-open': 1, open: 2 }[state],
        ),
      onEjection: (endpoint) => metrics.ejections.inc({ upstream: config.name, endpoint }),
      onRetryDenied: () => metrics.retriesDenied.inc({ upstream: config.name }),
    });
  }

  setEndpoints(endpoints: DiscoveredEndpoint[], stale: boolean): void {
    const port = this.config.port;
    const resolved = endpoints.map((e) => (port ? { ...e, port } : e));
    this.policy.setEndpoints(resolved);
    this.pools.retain(new Set(resolved.map((e) => `${e.address}:${e.port}`)));
    this.metrics.endpoints.set({ upstream: this.config.name }, resolved.length);
    this.metrics.discoveryStale.set({ upstream: this.config.name }, stale ? 1 : 0);
  }

  /** The consistent-hash key of a request: a header, a cookie, or the caller's address. */
  hashKey(req: IncomingMessage): string | undefined {
    const on = this.config.hashOn;
    if (!on) return undefined;
    if (on.header) {
      const value = req.headers[on.header.toLowerCase()];
      return Array.isArray(value) ? value[0] : value;
    }
    if (on.cookie) {
      const cookies = String(req.headers.cookie ?? '').split(';');
      const match = cookies.map((c) => c.trim()).find((c) => c.startsWith(`${on.cookie}=`));
      return match?.slice((on.cookie as string).length + 1);
    }
    return req.socket.remoteAddress;
  }

  forwardGrpc(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    return forwardGrpc(this.config.name, this.policy, this.pools, req, res, path);
  }

  async close(): Promise<void> {
    await this.pools.close();
  }
}

export class Upstreams {
  private readonly byName = new Map<string, Upstream>();

  constructor(private readonly metrics: SidecarMetrics) {}

  /** Applies a (re)loaded config: new upstreams appear, removed ones close, changed ones rebuild. */
  configure(config: SidecarConfig): { added: string[]; removed: string[] } {
    const wanted = new Map(config.upstreams.map((spec) => [spec.name, spec]));
    const added: string[] = [];
    const removed: string[] = [];
    for (const [name, upstream] of this.byName) {
      const spec = wanted.get(name);
      if (!spec || JSON.stringify(spec) !== JSON.stringify(upstream.config.spec)) {
        this.byName.delete(name);
        void upstream.close();
        if (!spec) removed.push(name);
      }
    }
    for (const [name, spec] of wanted) {
      if (this.byName.has(name)) continue;
      this.byName.set(name, new Upstream(compileUpstream(spec), this.metrics));
      added.push(name);
    }
    return { added, removed };
  }

  get(name: string): Upstream | undefined {
    return this.byName.get(name);
  }

  all(): Upstream[] {
    return [...this.byName.values()];
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((u) => u.close()));
    this.byName.clear();
  }
}
