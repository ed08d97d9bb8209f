/**
 * Kubernetes Service DNS discovery: resolves <service>.<namespace>.svc.<domain> on an
 * interval. With a headless Service each pod is an endpoint; with a ClusterIP Service the
 * one virtual IP is (kube-proxy or Istio then balance). Keeps the last answer on errors.
 */
import { Resolver } from 'node:dns/promises';
import type { DiscoveredEndpoint, Discovery, UpstreamListener, UpstreamState } from './types.js';

export interface KubernetesDnsOptions {
  namespace: string;
  clusterDomain: string;
  /** Port used when the upstream names none. */
  defaultPort: (service: string) => number;
  refreshMs?: number;
  resolver?: Pick<Resolver, 'resolve4'>;
}

export class KubernetesDnsDiscovery implements Discovery {
  private readonly watched = new Map<
    string,
    { state: UpstreamState; listeners: Set<UpstreamListener>; timer: NodeJS.Timeout }
  >();
  private readonly resolver: Pick<Resolver, 'resolve4'>;

  constructor(private readonly options: KubernetesDnsOptions) {
    this.resolver = options.resolver ?? new Resolver({ timeout: 2000, tries: 2 });
  }

  hostname(service: string): string {
    return `${service}.${this.options.namespace}.svc.${this.options.clusterDomain}`;
  }

  watch(service: string, listener: UpstreamListener): () => void {
    let entry = this.watched.get(service);
    if (!entry) {
      const state: UpstreamState = { service, endpoints: [], stale: false, updatedAt: 0 };
      const timer = setInterval(() => void this.refresh(service), this.options.refreshMs ?? 5000);
      timer.unref();
      entry = { state, listeners: new Set(), timer };
      this.watched.set(service, entry);
      void this.refresh(service);
    }
    entry.listeners.add(listener);
    if (entry.state.updatedAt > 0) listener(entry.state);
    const watched = entry;
    return () => watched.listeners.delete(listener);
  }

  states(): UpstreamState[] {
    return [...this.watched.values()].map((w) => w.state);
  }

  async close(): Promise<void> {
    for (const entry of this.watched.values()) clearInterval(entry.timer);
    this.watched.clear();
  }

  private async refresh(service: string): Promise<void> {
    const entry = this.watched.get(service);
    if (!entry) return;
    const port = this.options.defaultPort(service);
    let next: UpstreamState;
    try {
      const addresses = (await this.resolver.resolve4(this.hostname(service))).sort();
      const endpoints: DiscoveredEndpoint[] = addresses.map((address) => ({
        id: `${address}:${port}`,
        address,
        port,
        meta: {},
        tags: [],
      }));
      const same =
        !entry.state.stale &&
        entry.state.updatedAt > 0 &&
        JSON.stringify(endpoints) === JSON.stringify(entry.state.endpoints);
      if (same) return;
      next = { service, endpoints, stale: false, updatedAt: Date.now() };
    } catch (error) {
      if (entry.state.stale) return;
      next = { ...entry.state, stale: true, error: (error as Error).message, updatedAt: Date.now() };
    }
    entry.state = next;
    for (const listener of entry.listeners) listener(next);
  }
}
