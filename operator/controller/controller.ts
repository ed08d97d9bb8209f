/**
 * A controller as controller-runtime shapes one: a work queue of keys, workers that hand
 * each key to one reconciler, and what happens after: success forgets the key's failures
 * (and may ask to look again later), an ordinary error requeues it with per-key backoff,
 * and a terminal error (one that retrying cannot fix) is logged and not retried until
 * the object changes again. Level-triggered: a key says what to look at, never what
 * changed.
 */
import { AimeshError, describe } from '../../lib/errors/index.js';
import type { Logger } from '../../lib/log/index.js';
import type { OperatorMetrics } from '../metrics.js';
import { WorkQueue } from './queue.js';

/** What a reconcile asks for besides success: to be looked at again after a while. */
export interface ReconcileResult {
  requeueAfterMs?: number;
}

export interface Reconciler {
  /** Names the controller in logs and metrics: `aiservice`, `saga`. */
  readonly name: string;
  /** Makes the world match the object named by `key` (namespace/name). Idempotent. */
  reconcile(key: string): Promise<ReconcileResult | void>;
}

export interface ControllerOptions {
  log: Logger;
  metrics: OperatorMetrics;
  workers?: number;
}

export class Controller {
  private readonly queue = new WorkQueue();
  private readonly workers: Promise<void>[] = [];
  private readonly log: Logger;

  constructor(
    private readonly reconciler: Reconciler,
    private readonly options: ControllerOptions,
  ) {
    this.log = options.log.child({ controller: reconciler.name });
  }

  enqueue(key: string): void {
    this.queue.add(key);
    this.reportDepth();
  }

  start(): void {
    // Every result's series exists from the start at 0: Prometheus sees the first error as an
    // increase (a series born at 1 has no increase), and alerts on errors have a series to read.
    for (const result of ['success', 'error', 'terminal'])
      this.options.metrics.reconciles.inc({ controller: this.reconciler.name, result }, 0);
    for (let i = 0; i < (this.options.workers ?? 2); i++) this.workers.push(this.work());
  }

  /** Takes no more keys and waits for in-flight reconciles to finish. */
  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.workers);
  }

  get depth(): number {
    return this.queue.length;
  }

  private async work(): Promise<void> {
    const { metrics } = this.options;
    const controller = this.reconciler.name;
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const timer = metrics.reconcileDuration.startTimer({ controller });
      try {
        const result = await this.reconciler.reconcile(key);
        this.queue.forget(key);
        if (result?.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
        metrics.reconciles.inc({ controller, result: 'success' });
      } catch (error) {
        if (error instanceof AimeshError && error.terminal) {
          this.queue.forget(key);
          metrics.reconciles.inc({ controller, result: 'terminal' });
          this.log.warn('reconcile failed; not retrying until the object changes', { key, error });
        } else {
          const delay = this.queue.addRateLimited(key);
          metrics.reconciles.inc({ controller, result: 'error' });
          this.log.error('reconcile failed; will retry', {
            key,
            retryInMs: Math.round(delay),
            error: error instanceof Error ? error : describe(error),
          });
        }
      } finally {
        timer();
        this.queue.done(key);
        this.reportDepth();
      }
    }
  }

  private reportDepth(): void {
    this.options.metrics.queueDepth.set({ controller: this.reconciler.name }, this.queue.length);
  }
}
