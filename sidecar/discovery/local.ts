/**
 * The embedded local registry for `aimesh run` on one machine (no Consul, no cluster):
 * each sidecar writes its instance as a JSON file under one folder and removes it on
 * stop; discovery polls the folder. Files of processes that died are ignored.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { isAlive } from '../../lib/process/index.js';
import type { DiscoveredEndpoint, Discovery, UpstreamListener, UpstreamState } from './types.js';

export const DEFAULT_LOCAL_REGISTRY = join(homedir(), '.aimesh', 'registry');

interface LocalInstance extends DiscoveredEndpoint {
  service: string;
  pid: number;
}

/** Registers one instance; returns a function that removes it. */
export function registerLocally(
  directory: string,
  instance: Omit<LocalInstance, 'pid'> & { pid?: number },
): () => void {
  const folder = join(directory, instance.service);
  mkdirSync(folder, { recursive: true });
  const file = join(folder, `${encodeURIComponent(instance.id)}.json`);
  // Write then rename, so a reader never sees half a file.
  writeFileSync(`${file}.tmp`, JSON.stringify({ pid: process.pid, ...instance }));
  renameSync(`${file}.tmp`, file);
  return () => rmSync(file, { force: true });
}

export class LocalDiscovery implements Discovery {
  private readonly watched = new Map<string, { state: UpstreamState; listeners: Set<UpstreamListener> }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly directory: string = DEFAULT_LOCAL_REGISTRY,
    refreshMs = 500,
  ) {
    this.timer = setInterval(() => this.refreshAll(), refreshMs);
    this.timer.unref();
  }

  watch(service: string, listener: UpstreamListener): () => void {
    let entry = this.watched.get(service);
    if (!entry) {
      entry = { state: { service, endpoints: [], stale: false, updatedAt: 0 }, listeners: new Set() };
      this.watched.set(service, entry);
      this.refresh(service);
    }
    entry.listeners.add(listener);
    listener(entry.state);
    const watched = entry;
    return () => watched.listeners.delete(listener);
  }

  states(): UpstreamState[] {
    return [...this.watched.values()].map((w) => w.state);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.watched.clear();
  }

  private refreshAll(): void {
    for (const service of this.watched.keys()) this.refresh(service);
  }

  private refresh(service: string): void {
    const entry = this.watched.get(service);
    if (!entry) return;
    const endpoints = readInstances(join(this.directory, service));
    if (entry.state.updatedAt > 0 && JSON.stringify(endpoints) === JSON.stringify(entry.state.endpoints))
      return;
    entry.state = { service, endpoints, stale: false, updatedAt: Date.now() };
    for (const listener of entry.listeners) listener(entry.state);
  }
}

function readInstances(folder: string): DiscoveredEndpoint[] {
  let files: string[];
  try {
    files = readdirSync(folder)
      .filter((f) => f.endsWith('.json'))
      .sort();
  } catch {
    return [];
  }
  const endpoints: DiscoveredEndpoint[] = [];
  for (const file of files) {
    try {
      const instance = JSON.parse(readFileSync(join(folder, file), 'utf8')) as LocalInstance;
      if (!isAlive(instance.pid)) continue;
      endpoints.push({
        id: instance.id,
        address: instance.address,
        port: instance.port,
        meta: instance.meta ?? {},
        tags: instance.tags ?? [],
      });
    } catch {
      // A file removed between readdir and read, or not ours: skip it.
    }
  }
  return endpoints;
}
