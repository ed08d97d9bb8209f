/**
 * The last good response to each GET, kept per upstream to answer when the upstream
 * cannot (fallback staleCache). Bounded by entries and by body size. Pure (time passed in).
 */
export interface CachedResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
  storedAt: number;
}

export class StaleCache {
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

  get size(): number {
    return this.entries.size;
  }
}
