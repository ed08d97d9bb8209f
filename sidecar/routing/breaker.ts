/**
 * A circuit breaker per endpoint: closed → open after N failures in a row; open → half-open
 * after `openForMs`; half-open lets `halfOpenRequests` trial requests through and closes
 * when that many succeed in a row, or opens again on the first failure. Pure: time is
 * passed in.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerSettings {
  consecutiveFailures: number;
  openForMs: number;
  halfOpenRequests: number;
}

export const DEFAULT_BREAKER: BreakerSettings = {
  consecutiveFailures: 5,
  openForMs: 60_000,
  halfOpenRequests: 2,
};

export class CircuitBreaker {
  private current: BreakerState = 'closed';
  private failures = 0;
  private openUntil = 0;
  private trialsInFlight = 0;
  private trialSuccesses = 0;

  constructor(
    private readonly settings: BreakerSettings = DEFAULT_BREAKER,
    private readonly onChange: (state: BreakerState) => void = () => undefined,
  ) {}

  state(nowMs: number): BreakerState {
    if (this.current === 'open' && nowMs >= this.openUntil) this.moveTo('half-open');
    return this.current;
  }

  /** Whether a request may go to this endpoint now, without taking a trial slot. */
  allows(nowMs: number): boolean {
    const state = this.state(nowMs);
    return (
      state === 'closed' || (state === 'half-open' && this.trialsInFlight < this.settings.halfOpenRequests)
    );
  }

  /** Call when a request is sent: takes a trial slot in half-open. False when not allowed. */
  acquire(nowMs: number): boolean {
    if (!this.allows(nowMs)) return false;
    if (this.current === 'half-open') this.trialsInFlight++;
    return true;
  }

  record(ok: boolean, nowMs: number): void {
    const state = this.state(nowMs);
    if (state === 'half-open') {
      this.trialsInFlight = Math.max(0, this.trialsInFlight - 1);
      if (!ok) return this.open(nowMs);
      if (++this.trialSuccesses >= this.settings.halfOpenRequests) this.moveTo('closed');
      return;
    }
    if (state === 'open') return;
    if (ok) {
      this.failures = 0;
      return;
    }
    if (++this.failures >= this.settings.consecutiveFailures) this.open(nowMs);
  }

  private open(nowMs: number): void {
    this.openUntil = nowMs + this.settings.openForMs;
    this.moveTo('open');
  }

  private moveTo(state: BreakerState): void {
    if (state === this.current) return;
    this.current = state;
    this.failures = 0;
    this.trialsInFlight = 0;
    this.trialSuccesses = 0;
    this.onChange(state);
  }
}
