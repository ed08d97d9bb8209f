/**
 * Retry decisions: which failures are retried (Envoy/Istio retryOn meanings), exponential
 * backoff with full jitter, and a retry budget as in linkerd (retries may add at most a
 * percentage of recent requests, plus a small floor per second), so retries cannot
 * multiply an outage. Pure: time and randomness are passed in.
 */
export type RetryCondition =
  | '5xx'
  | 'gateway-error'
  | 'reset'
  | 'connect-failure'
  | 'refused-stream'
  | 'retriable-4xx'
  | 'retriable-status-codes'
  | 'unavailable'
  | 'cancelled'
  | 'deadline-exceeded'
  | 'resource-exhausted';

export interface RetrySettings {
  attempts: number;
  retryOn: readonly RetryCondition[];
  retriableStatusCodes: readonly number[];
  backoffInitialMs: number;
  backoffMaxMs: number;
  retryNonIdempotent: boolean;
}

export type Failure =
  { status: number } | { error: 'connect-failure' | 'reset' | 'timeout' | 'refused-stream' };

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * Whether a failed try should be retried; `attempt` counts retries already made + 1. A
 * request with an Idempotency-Key header is safe to repeat whatever its method: the
 * upstream applies a key once (the IETF Idempotency-Key draft; saga steps send one).
 */
export function retryable(
  settings: RetrySettings,
  attempt: number,
  method: string,
  failure: Failure,
  hasIdempotencyKey = false,
): boolean {
  if (attempt > settings.attempts) return false;
  const on = new Set(settings.retryOn);
  const repeatable = IDEMPOTENT.has(method.toUpperCase()) || hasIdempotencyKey || settings.retryNonIdempotent;
  if ('error' in failure) {
    // A refused connection never reached the app: safe to retry whatever the method.
    if (failure.error === 'connect-failure') return on.has('connect-failure');
    if (failure.error === 'refused-stream') return on.has('refused-stream');
    if (!repeatable) return false;
    if (failure.error === 'reset') return on.has('reset') || on.has('5xx');
    return on.has('5xx') || on.has('deadline-exceeded');
  }
  if (!repeatable) return false;
  const { status } = failure;
  if (status >= 500 && on.has('5xx')) return true;
  if ([502, 503, 504].includes(status) && on.has('gateway-error')) return true;
  if (status === 503 && on.has('unavailable')) return true;
  if (status === 409 && on.has('retriable-4xx')) return true;
  if (status === 429 && on.has('resource-exhausted')) return true;
  return on.has('retriable-status-codes') && settings.retriableStatusCodes.includes(status);
}

/** Full jitter: a random wait in [0, min(max, initial × 2^(retry-1))]. */
export function backoffDelay(
  retry: number,
  settings: Pick<RetrySettings, 'backoffInitialMs' | 'backoffMaxMs'>,
  random: () => number,
): number {
  const ceiling = Math.min(settings.backoffMaxMs, settings.backoffInitialMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(random() * ceiling);
}

export interface BudgetSettings {
  percent: number;
  minPerSecond: number;
  /** Window over which requests and retries are counted (linkerd: 10 s). */
  windowMs?: number;
}

/**
 * Counts requests and retries in one-second buckets over a sliding window. A retry is
 * allowed while retries < minPerSecond × window + percent% × requests.
 */
export class RetryBudget {
  private readonly windowSeconds: number;
  private readonly requests: number[];
  private readonly retries: number[];
  private bucketSecond = -1;

  constructor(private readonly settings: BudgetSettings) {
    this.windowSeconds = Math.max(1, Math.round((settings.windowMs ?? 10_000) / 1000));
    this.requests = new Array<number>(this.windowSeconds).fill(0);
    this.retries = new Array<number>(this.windowSeconds).fill(0);
  }

  deposit(nowMs: number): void {
    this.requests[this.advance(nowMs)]! += 1;
  }

  tryWithdraw(nowMs: number): boolean {
    const bucket = this.advance(nowMs);
    const requests = this.requests.reduce((a, b) => a + b, 0);
    const retries = this.retries.reduce((a, b) => a + b, 0);
    const allowed =
      this.settings.minPerSecond * this.windowSeconds + (requests * this.settings.percent) / 100;
    if (retries + 1 > allowed) return false;
    this.retries[bucket]! += 1;
    return true;
  }

  private advance(nowMs: number): number {
    const second = Math.floor(nowMs / 1000);
    if (this.bucketSecond < 0) this.bucketSecond = second;
    const steps = Math.min(second - this.bucketSecond, this.windowSeconds);
    for (let i = 1; i <= steps; i++) {
      const index = (this.bucketSecond + i) % this.windowSeconds;
      this.requests[index] = 0;
      this.retries[index] = 0;
    }
    if (second > this.bucketSecond) this.bucketSecond = second;
    return this.bucketSecond % this.windowSeconds;
  }
}
