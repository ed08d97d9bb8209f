/**
 * Outlier ejection with Envoy's semantics: an endpoint with N consecutive 5xx is ejected
 * for baseEjectionTime × (times ejected), capped at maxEjectionTime; at most
 * maxEjectionPercent of the endpoints are ejected at once, but at least one may be (as in
 * Envoy) unless the percent is 0. The ejection multiplier shrinks by one for each interval an endpoint stays
 * healthy. Pure: time is passed in.
 */
export interface OutlierSettings {
  consecutive5xx: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
  maxEjectionMs: number;
}

export const DEFAULT_OUTLIER: OutlierSettings = {
  consecutive5xx: 5,
  intervalMs: 10_000,
  baseEjectionMs: 30_000,
  maxEjectionPercent: 10,
  maxEjectionMs: 300_000,
};

interface EndpointRecord {
  consecutive5xx: number;
  ejectedUntil: number;
  multiplier: number;
  healthySince: number;
}

export class OutlierDetector {
  private readonly records = new Map<string, EndpointRecord>();

  constructor(
    private readonly settings: OutlierSettings = DEFAULT_OUTLIER,
    private readonly onEject: (id: string, forMs: number) => void = () => undefined,
  ) {}

  isEjected(id: string, nowMs: number): boolean {
    const record = this.records.get(id);
    if (!record || record.ejectedUntil === 0) return false;
    if (nowMs < record.ejectedUntil) return true;
    record.ejectedUntil = 0;
    record.healthySince = nowMs;
    return false;
  }

  /** Records a response (5xx or a connection failure counts as `serverError`). */
  record(id: string, serverError: boolean, endpointCount: number, nowMs: number): void {
    const record = this.recordOf(id, nowMs);
    if (!serverError) {
      record.consecutive5xx = 0;
      return;
    }
    if (++record.consecutive5xx < this.settings.consecutive5xx || this.isEjected(id, nowMs)) return;
    if (this.ejectedCount(nowMs) >= this.maxEjected(endpointCount)) return;
    const healthyIntervals = Math.floor((nowMs - record.healthySince) / this.settings.intervalMs);
    record.multiplier = Math.max(0, record.multiplier - healthyIntervals) + 1;
    const forMs = Math.min(this.settings.baseEjectionMs * record.multiplier, this.settings.maxEjectionMs);
    record.ejectedUntil = nowMs + forMs;
    record.consecutive5xx = 0;
    this.onEject(id, forMs);
  }

  /** Forgets endpoints discovery no longer reports. */
  retain(ids: ReadonlySet<string>): void {
    for (const id of this.records.keys()) if (!ids.has(id)) this.records.delete(id);
  }

  ejected(nowMs: number): string[] {
    return [...this.records.keys()].filter((id) => this.isEjected(id, nowMs));
  }

  private ejectedCount(nowMs: number): number {
    return this.ejected(nowMs).length;
  }

  private maxEjected(endpointCount: number): number {
    if (this.settings.maxEjectionPercent === 0) return 0;
    return Math.max(1, Math.floor((endpointCount * this.settings.maxEjectionPercent) / 100));
  }

  private recordOf(id: string, nowMs: number): EndpointRecord {
    let record = this.records.get(id);
    if (!record) {
      record = { consecutive5xx: 0, ejectedUntil: 0, multiplier: 0, healthySince: nowMs };
      this.records.set(id, record);
    }
    return record;
  }
}
