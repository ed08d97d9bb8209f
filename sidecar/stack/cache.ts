/**
 * The one response cache: the last good answer per key, bounded by entries and by body
 * size, served while younger than the age the reader allows. The proxy keeps one per
 * upstream for the stale-cache fallback (GETs, read only when the upstream fails); the AI
 * route keeps one for identical non-streamed completions (read first, with its TTL). Pure:
 * time is passed in.
 */
import type { Headers } from './types.js';

export interface CachedResponse {
  status: number;
  headers: Headers;
  body: Buffer;
  storedAt: number;
  /** Who answered (an endpoint or a provider channel). */
  source?: string;
}

export class ResponseCache {
  private readonly entries = new Map<string, CachedResponse>();

  constructor(
    private readonly maxEntries = 1000,
    readonly maxBodyBytes = 1024 * 1024,
  ) {}

  set(key: string, response: CachedResponse): void {
    if (response.body.length > this.maxBodyBytes) return;
    this.entries.delete(key);
    this.entries.set(key, response);
    // Map keeps insertion order: the first key is the least recently stored.
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }

  get(key: string, maxAgeMs: number, nowMs: number): CachedResponse | undefined {
    const entry = this.entries.get(key);
    return entry && nowMs - entry.storedAt <= maxAgeMs ? entry : undefined;
  }
}
