/**
 * Consul discovery: one blocking-query loop per upstream over the passing instances.
 * Follows Consul's blocking-query rules: reset the index when it goes backwards or is 0,
 * back off with jitter after errors, and rate-limit wake-ups so a flapping service
 * cannot spin the loop. While Consul is unreachable the last known endpoints keep
 * serving and the state says it is stale.
 */
import type { Logger } from '../../lib/log/index.js';
import { ConsulClient, type HealthEntry } from './consul-client.js';
import type { DiscoveredEndpoint, Discovery, UpstreamListener, UpstreamState } from './types.js';

export interface ConsulDiscoveryOptions {
  client: ConsulClient;
  /** How long one blocking query waits for a change. */
  wait?: string;
  /** Shortest time between two queries of one service, even when Consul answers at once. */
  minIntervalMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  onError?: (service: string, error: Error) => void;
  /** Told when an upstream goes stale (Consul unreachable) and when it is fresh again. */
  log?: Logger;
  /**
   * After an outage or a restarted agent (its index went back), an empty answer is believed
   * only once the index has moved past that first answer, or after this long: a freshly
   * started agent answers before its services re-register, and dropping the good
   * endpoints for that answer would turn every call into a 503.
   */
  resyncGraceMs?: number;
}

interface Watched {
  state: UpstreamState;
  listeners: Set<UpstreamListener>;
  abort: AbortController;
  loop: Promise<void>;
}

export class ConsulDiscovery implements Discovery {
  private readonly watched = new Map<string, Watched>();

  constructor(private readonly options: ConsulDiscoveryOptions) {}

  watch(service: string, listener: UpstreamListener): () => void {
    let entry = this.watched.get(service);
    if (!entry) {
      const abort = new AbortController();
      const state: UpstreamState = { service, endpoints: [], stale: false, updatedAt: 0 };
      entry = { state, listeners: new Set(), abort, loop: Promise.resolve() };
      this.watched.set(service, entry);
      entry.loop = this.run(entry, abort.signal);
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
    for (const entry of this.watched.values()) entry.abort.abort();
    await Promise.all([...this.watched.values()].map((w) => w.loop));
    this.watched.clear();
  }

  private async run(entry: Watched, signal: AbortSignal): Promise<void> {
    const { wait = '30s', minIntervalMs = 100, backoffInitialMs = 250, backoffMaxMs = 10_000 } = this.options;
    const resyncGraceMs = this.options.resyncGraceMs ?? 30_000;
    let index = 0;
    let failures = 0;
    // Set after an outage or an index that went back: the registry may not have resynced.
    let resync: { firstIndex?: number; since: number } | undefined;
    while (!signal.aborted) {
      const started = Date.now();
      try {
        const answer = await this.options.client.passingInstances(entry.state.service, index, wait, signal);
        failures = 0;
        if (answer.index < index) resync ??= { since: Date.now() };
        const changed = answer.index !== index || entry.state.stale || entry.state.updatedAt === 0;
        // Consul's rules: an index that went backwards means start over with 0; never block on 0.
        index = answer.index < index ? 0 : Math.max(answer.index, 1);
        const endpoints = answer.entries.map(toEndpoint);
        if (resync && endpoints.length === 0 && entry.state.endpoints.length > 0) {
          resync.firstIndex ??= answer.index;
          const synced = answer.index > resync.firstIndex || Date.now() - resync.since >= resyncGraceMs;
          if (!synced) {
            if (!entry.state.stale || entry.state.error !== RESYNCING)
              this.publish(entry, { endpoints: entry.state.endpoints, stale: true, error: RESYNCING });
            await sleep(Math.max(minIntervalMs, backoffInitialMs), signal);
            continue;
          }
        }
        resync = undefined;
        if (entry.state.stale)
          this.options.log?.info('Consul answers again', { service: entry.state.service });
        if (changed) this.publish(entry, { endpoints, stale: false });
        await sleep(Math.max(0, minIntervalMs - (Date.now() - started)), signal);
      } catch (error) {
        if (signal.aborted) return;
        failures++;
        index = 0;
        resync ??= { since: Date.now() };
        this.options.onError?.(entry.state.service, error as Error);
        if (!entry.state.stale) {
          this.options.log?.warn('Consul query failed; serving the last known endpoints', {
            service: entry.state.service,
            error,
          });
          this.publish(entry, {
            endpoints: entry.state.endpoints,
            stale: true,
            error: (error as Error).message,
          });
        }
        const ceiling = Math.min(backoffMaxMs, backoffInitialMs * 2 ** (failures - 1));
        await sleep(ceiling / 2 + Math.random() * (ceiling / 2), signal);
      }
    }
  }

  private publish(entry: Watched, next: Pick<UpstreamState, 'endpoints' | 'stale' | 'error'>): void {
    entry.state = {
      service: entry.state.service,
      endpoints: next.endpoints,
      stale: next.stale,
      ...(next.error ? { error: next.error } : {}),
      updatedAt: Date.now(),
    };
    for (const listener of entry.listeners) listener(entry.state);
  }
}

const RESYNCING =
  'Consul answered with no instance right after an outage or a restart; keeping the last known endpoints until it resyncs';

function toEndpoint(entry: HealthEntry): DiscoveredEndpoint {
  return {
    id: entry.Service.ID,
    // An empty service address means "the node's address" in Consul.
    address: entry.Service.Address || entry.Node.Address,
    port: entry.Service.Port,
    meta: entry.Service.Meta ?? {},
    tags: entry.Service.Tags ?? [],
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
